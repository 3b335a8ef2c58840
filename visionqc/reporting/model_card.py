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
