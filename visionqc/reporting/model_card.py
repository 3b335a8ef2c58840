"""The model card (``model.json``) as tables and charts a model owner reads: the Model page's logic.

Every function takes the card's raw dict and tolerates missing sections (an older or hand-written card
simply shows less).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

METRIC_NAMES = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro F1"}


def summary_rows(raw: dict[str, Any]) -> pd.DataFrame:
    """Architecture and input: one (Field, Value) row each."""
    arch = raw.get("architecture") or {}
    inp = raw.get("input") or {}
    norm = inp.get("normalization") or {}
    rows = [
        ("Backbone", arch.get("backbone")),
        ("Pretrained on", arch.get("pretrained")),
        ("Heads", arch.get("heads")),
        ("Embedding size", arch.get("embedding_dim")),
        ("Input", f"{inp.get('size')}×{inp.get('size')} px, {inp.get('color', 'RGB')}, resize: {inp.get('resize')}"),
        ("Normalisation", f"(x − {norm.get('mean')}) / {norm.get('std')} on 0–255"),
        ("Created", raw.get("created")),
    ]
    return pd.DataFrame([(k, "—" if v is None else str(v)) for k, v in rows], columns=["Field", "Value"])


def tasks_table(raw: dict[str, Any]) -> pd.DataFrame:
    no_defect = raw.get("no_defect_class")
    rows = []
    for task in raw.get("tasks") or []:
        classes = [f"{c} (no defect)" if c == no_defect else c for c in task.get("classes", [])]
        definition = (raw.get(task.get("name")) or {}).get("definition") if task.get("name") != "defect" else None
        rows.append((task.get("name"), len(classes), ", ".join(classes), definition or ""))
    return pd.DataFrame(rows, columns=["Task", "Classes", "Names", "Definition"])


def class_counts(raw: dict[str, Any]) -> pd.DataFrame:
    counts = ((raw.get("training_data") or {}).get("class_counts")) or {}
    return pd.DataFrame({"Class": list(counts), "Images": [int(v) for v in counts.values()]})


def test_metrics(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{task: {"n", "accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix"}}``."""
    return (((raw.get("metrics") or {}).get("test")) or {}).get("tasks") or {}


def per_class_table(task_metrics: dict[str, Any]) -> pd.DataFrame:
    rows = [
        (cls, m.get("precision"), m.get("recall"), m.get("f1"), m.get("support"))
        for cls, m in (task_metrics.get("per_class") or {}).items()
    ]
    frame = pd.DataFrame(rows, columns=["Class", "Precision", "Recall", "F1", "Images"])
    for column in ("Precision", "Recall", "F1"):
        frame[column] = (frame[column].astype(float) * 100).round(1)
    return frame


def repeated_splits_table(raw: dict[str, Any]) -> pd.DataFrame:
    """Mean ± std over the repeated random splits, per task and metric."""
    splits = ((raw.get("metrics") or {}).get("repeated_splits")) or {}
    rows = []
    for task, metrics in splits.items():
        if not isinstance(metrics, dict) or task in ("splits", "seeds", "phase"):
            continue
        for name, label in METRIC_NAMES.items():
            m = metrics.get(name)
            if isinstance(m, dict) and "mean" in m:
                rows.append((task, label, round(100 * m["mean"], 1), round(100 * m.get("std", 0.0), 1)))
    return pd.DataFrame(rows, columns=["Task", "Metric", "Mean %", "Std %"])


def confusion_frame(confusion: dict[str, Any]) -> pd.DataFrame:
    """Long form of ``{"labels", "rows_true_columns_predicted"}``: one row per (true, predicted) cell,
    with the share of the true class in percent."""
    labels = confusion.get("labels") or []
    matrix = confusion.get("rows_true_columns_predicted") or []
    rows = []
    for true, counts in zip(labels, matrix, strict=False):
        total = sum(counts) or 1
        for predicted, count in zip(labels, counts, strict=False):
            rows.append((true, predicted, int(count), round(100 * count / total, 1)))
    return pd.DataFrame(rows, columns=["True", "Predicted", "Images", "Share of true %"])


def confusion_chart(confusion: dict[str, Any], title: str = ""):
    """An Altair heatmap of the confusion matrix: rows = true class, columns = predicted, colour = share of
    the true class (so small classes read as clearly as large ones), counts written in the cells."""
    import altair as alt

    frame = confusion_frame(confusion)
    labels = confusion.get("labels") or []
    base = alt.Chart(frame).encode(
        x=alt.X("Predicted:N", sort=labels, title="Predicted", axis=alt.Axis(labelAngle=-30)),
        y=alt.Y("True:N", sort=labels, title="True"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("Share of true %:Q", scale=alt.Scale(scheme="blues", domain=[0, 100]), title="% of true"),
        tooltip=["True", "Predicted", "Images", "Share of true %"],
    )
    text = base.mark_text(fontSize=13).encode(
        text="Images:Q",
        color=alt.condition(alt.datum["Share of true %"] > 60, alt.value("white"), alt.value("#1b1f24")),
    )
    size = max(220, 46 * len(labels))
    return (cells + text).properties(width=size, height=size, title=title)


def thresholds_table(raw: dict[str, Any]) -> pd.DataFrame:
    review = raw.get("needs_review") or {}
    calibration = ((raw.get("training") or {}).get("calibration")) or {}
    rows = []
    for task, value in (review.get("confidence_thresholds") or {}).items():
        note = calibration.get(task) or {}
        how = (
            f"flags {100 * note['val_flagged_share']:.0f}% of validation images; accuracy of the rest "
            f"{100 * note['val_accuracy_accepted']:.0f}%"
            if "val_flagged_share" in note and "val_accuracy_accepted" in note
            else ""
        )
        rows.append((f"{task} confidence below", f"{100 * value:.1f}%", how))
    if review.get("ood_threshold") is not None:
        rule = (calibration.get("ood") or {}).get("rule", "")
        rows.append(
            (f"out-of-distribution score above (k={review.get('ood_k', 5)})", f"{review['ood_threshold']:.4f}", rule)
        )
    if review.get("miss_threshold") is not None:
        miss = calibration.get("miss_averse") or {}
        how = (
            f"validation defects caught or flagged {100 * miss['val_defect_recall']:.1f}% (target "
            f"{100 * miss['target_recall']:.0f}%); good images flagged by any rule "
            f"{100 * miss['val_free_flagged_share']:.1f}%"
            if "val_defect_recall" in miss
            else ""
        )
        rows.append(("“no defect” but defect probability above", f"{100 * review['miss_threshold']:.1f}%", how))
    return pd.DataFrame(rows, columns=["Needs review when", "Threshold", "Calibration"])


def localisation_entries(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{evaluation set: summary}`` from the card's ``localisation`` field (empty if not measured)."""
    loc = raw.get("localisation")
    if not isinstance(loc, dict):
        return {}
    if "pointing_game" in loc:  # a single, unkeyed entry
        return {loc.get("dataset", "evaluation"): loc}
    return {k: v for k, v in loc.items() if isinstance(v, dict) and "pointing_game" in v}


def localisation_table(entry: dict[str, Any]) -> pd.DataFrame:
    rows = [("all", entry), *(entry.get("per_class") or {}).items()]
    return pd.DataFrame(
        [
            (
                name,
                int(m.get("images", 0)),
                round(100 * m.get("pointing_game", 0.0), 1),
                round(100 * m.get("pointing_game_tolerant", 0.0), 1),
                round(m.get("box_iou_mean", 0.0), 3),
                round(100 * m.get("box_iou_at_0_5", 0.0), 1),
            )
            for name, m in rows
        ],
        columns=["Class", "Images", "Pointing game %", "Within 15 px %", "Box IoU", "IoU ≥ 0.5 %"],
    )


# --- the card in plain words, for a QC lead -----------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def _listing(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _anomaly(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The card's anomaly section when the model was trained on good photos only."""
    return raw.get("anomaly") if raw.get("kind") == "anomaly" else None


def what_it_finds(raw: dict[str, Any]) -> str:
    if _anomaly(raw) is not None:
        good = (raw.get("training_data") or {}).get("good_images", 0)
        return (
            f"It learned what a good part (“{raw.get('no_defect_class')}”) looks like from **{good} photos of good "
            "parts** and flags every photo unlike all of them as **anomaly**, with a heatmap of where. It names no "
            "defect type: reviewers do, and their reviews become the labelled photos a classifier learns from. "
            "From its verdict it proposes what to do with the part."
        )
    tasks = {t.get("name"): t.get("classes", []) for t in raw.get("tasks") or []}
    no_defect = raw.get("no_defect_class")
    data = (raw.get("training_data") or {}).get("name") or "the training photos"
    defects = [c for c in tasks.get("defect", []) if c != no_defect]
    text = f"It looks at each photo like those of **{data}** and says whether the part has a defect: " + (
        f"{_listing(defects)} — or none (“{no_defect}”)." if defects else "."
    )
    if "severity" in tasks:
        text += f" For a defect it also says how large it is ({' / '.join(tasks['severity'])})"
        text += " and where it is on the photo." if "location" in tasks else "."
    return text + " From these it proposes what to do with the part: Pass, Hold, Rework or Reject."


def how_often_right(raw: dict[str, Any]) -> list[str]:
    """Sentences about the held-out test photos (photos it never saw while learning)."""
    section = _anomaly(raw)
    if section is not None:
        val = (raw.get("metrics") or {}).get("validation") or {}
        lines = [
            f"Its threshold is {section.get('threshold_rule', 'stated in the card')}.",
            f"On those {val.get('good_images', 0)} held-out good photos it flagged "
            f"**{_pct(val.get('good_flagged_share'))}**.",
        ]
        if val.get("defect_images"):
            caught = _pct(val.get("defects_caught_share"))
            lines.append(
                f"Of {val['defect_images']} labelled defect photos it flagged **{caught}** "
                f"(image AUROC {val.get('image_auroc', 0):.2f})."
            )
        return lines
    test = (raw.get("metrics") or {}).get("test") or {}
    defect = (test.get("tasks") or {}).get("defect") or {}
    if not defect:
        return ["The card has no test results: nobody measured this model on photos it did not learn from."]
    lines = [f"Tested on **{test.get('n', defect.get('n', 0)):,} photos it never saw while learning**."]
    lines.append(f"It names the right defect type (or “no defect”) for **{_pct(defect.get('accuracy'))}** of them.")
    binary = (test.get("defect_vs_no_defect") or {}).get("per_class") or {}
    bad, good = binary.get("defect") or {}, binary.get("no defect") or {}
    if bad and good:
        found = round(bad.get("recall", 0) * bad.get("support", 0))
        alarms = round((1 - good.get("recall", 0)) * good.get("support", 0))
        lines.append(
            f"Of {bad.get('support', 0)} defective parts it called **{found} defective** "
            f"({_pct(bad.get('recall'))}); of {good.get('support', 0)} good parts it wrongly called "
            f"{alarms} defective ({_pct(1 - good.get('recall', 0))} false alarms)."
        )
    per_class = defect.get("per_class") or {}
    weakest = min(per_class.items(), key=lambda kv: kv[1].get("recall", 1), default=None)
    if weakest and weakest[1].get("recall", 1) < 1:
        lines.append(
            f"It is weakest on **{weakest[0]}**: it finds {_pct(weakest[1].get('recall'))} of those "
            f"({weakest[1].get('support', 0)} test photos)."
        )
    return lines


def when_it_asks(raw: dict[str, Any]) -> list[str]:
    """When the model asks a person to look, in words, with what it did on the test photos."""
    review = raw.get("needs_review") or {}
    lines = ["It marks a photo **needs review** (action Review) when:"]
    section = _anomaly(raw)
    if section is not None:
        rule = section.get("decision") or {}
        lines.append(
            f"- its anomaly score is close to the threshold {rule.get('threshold', 0):.2f} (between "
            f"{rule.get('review_low', 0):.2f} and {rule.get('review_high', 0):.2f}): "
            f"{section.get('review_rule', '')}."
        )
    defect_cut = (review.get("confidence_thresholds") or {}).get("defect")
    if defect_cut is not None:
        lines.append(f"- it is unsure of the defect type (less than {_pct(defect_cut)} sure);")
    if review.get("ood_threshold") is not None:
        lines.append("- the photo looks unlike every photo it learned from (another part, a bad or odd photo);")
    miss = review.get("miss_threshold")
    if miss is not None:
        lines.append(
            f"- it says “no defect” but still gives a defect more than a **{_pct(miss)}** chance: a missed defect "
            "costs far more than a second look."
        )
    calibration = ((raw.get("training") or {}).get("calibration") or {}).get("miss_averse") or {}
    measured = ((raw.get("metrics") or {}).get("test") or {}).get("miss_averse") or {}
    lines.append("")  # the list ends here (markdown): what follows is a paragraph
    if calibration:
        lines.append(
            f"On the photos used to set these limits, {_pct(calibration.get('val_defect_recall'))} of the defective "
            f"parts were called defective or sent for review (without the last rule: "
            f"{_pct(calibration.get('val_defect_recall_without'))})."
        )
    if measured:
        lines.append(
            f"On the test photos, {_pct(measured.get('test_defect_recall_caught_or_flagged'))} of the defective "
            f"parts were called defective or sent for review, and {_pct(measured.get('test_free_flagged_share'))} of "
            "the good parts were sent for a second look."
        )
    return lines


def where_it_looks(raw: dict[str, Any]) -> str | None:
    entries = localisation_entries(raw)
    if not entries:
        return None
    entry = next(iter(entries.values()))
    return (
        f"Its heatmap (where it looked) lands on the real defect in **{_pct(entry.get('pointing_game'))}** of "
        f"{entry.get('images', 0)} test defects, and within 15 pixels of it in "
        f"{_pct(entry.get('pointing_game_tolerant'))}."
    )
