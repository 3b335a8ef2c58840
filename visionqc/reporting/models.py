"""The Models page's tables: registered versions, the audit trail of switches, datasets, a comparison of two
versions side by side, and what a re-inspection changed. Plain data in, DataFrames out (no Streamlit)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from visionqc.labels import NO_VALUE


def _pct(value) -> float | None:
    return None if value is None else round(100 * float(value), 1)


def versions_table(versions, active=None) -> pd.DataFrame:
    """One row per registered version, newest first; ``Active`` marks the one in use."""
    rows = []
    for v in versions:
        is_active = active is not None and (v.name, v.version) == (active.name, active.version)
        rows.append(
            {
                "Active": "✔" if is_active else "",
                "Model": v.name,
                "Version": v.version,
                "Kind": v.kind,
                "Source": v.source,
                "Dataset": (v.dataset or {}).get("id") or NO_VALUE,
                "Registered (UTC)": v.registered_at.replace("T", " ").rstrip("Z"),
                "By": v.registered_by or NO_VALUE,
                "Test images": v.metrics.get("test_images"),
                "Accuracy %": _pct(v.metrics.get("accuracy")),
                "Balanced accuracy %": _pct(v.metrics.get("balanced_accuracy")),
                "Needs review %": _pct(v.metrics.get("needs_review_share")),
            }
        )
    return pd.DataFrame(rows)


def audit_table(activations: list[dict[str, Any]]) -> pd.DataFrame:
    """The audit trail of switches, newest first."""
    rows = []
    for e in activations:
        previous = e.get("previous") or {}
        rows.append(
            {
                "When (UTC)": str(e.get("at", "")).replace("T", " ").rstrip("Z"),
                "What": e.get("action", ""),
                "From": f"{previous['name']} v{previous['version']}" if previous else NO_VALUE,
                "To": f"{e['name']} v{e['version']}",
                "Station": e.get("station") or "all stations",
                "By": e.get("by", ""),
                "Note": e.get("note") or "",
            }
        )
    return pd.DataFrame(rows, columns=["When (UTC)", "What", "From", "To", "Station", "By", "Note"])


def datasets_table(datasets: pd.DataFrame, warnings: list[list[str]]) -> pd.DataFrame:
    """Every dataset with its class counts in words and what is worth knowing before training on it."""
    return pd.DataFrame(
        {
            "Dataset": datasets["dataset_id"],
            "Images": datasets["images"],
            "Classes": [", ".join(f"{c} {n}" for c, n in counts.items()) for counts in datasets["class_counts"]],
            "Made from": datasets["description"].fillna(""),
            "Created (UTC)": datasets["created_at"],
            "By": datasets["created_by"].fillna(NO_VALUE),
            "Warnings": ["; ".join(w) for w in warnings],
        }
    )


def class_counts_table(class_counts: dict[str, int], small: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Class": list(class_counts),
            "Images": [int(n) for n in class_counts.values()],
            "Enough to learn": ["yes" if n >= small else f"no (fewer than {small})" for n in class_counts.values()],
        }
    )


COMPARED = (
    ("accuracy", "Accuracy %", 100),
    ("balanced_accuracy", "Balanced accuracy %", 100),
    ("macro_f1", "Macro F1 %", 100),
    ("needs_review_share", "Needs review %", 100),
    ("images_per_second", "Speed (images/s)", 1),
)


def comparison_table(result: dict[str, Any]) -> pd.DataFrame:
    """The headline numbers of both versions side by side, with the change (candidate − baseline)."""
    base, cand = result["baseline"], result["candidate"]
    rows = []
    for key, label, scale in COMPARED:
        b, c = base.get(key), cand.get(key)
        b = None if b is None else round(scale * b, 1)
        c = None if c is None else round(scale * c, 1)
        rows.append(
            {
                "Measure": label,
                base["label"]: b,
                cand["label"]: c,
                "Change": None if None in (b, c) else round(c - b, 1),
            }
        )
    return pd.DataFrame(rows)


def recall_table(result: dict[str, Any]) -> pd.DataFrame:
    """Recall per true class (%) for both versions, with the change."""
    base, cand = result["baseline"], result["candidate"]
    classes = list(dict.fromkeys([*base["recall"], *cand["recall"]]))
    rows = []
    for c in classes:
        b, k = _pct(base["recall"].get(c)), _pct(cand["recall"].get(c))
        rows.append(
            {"Class": c, base["label"]: b, cand["label"]: k, "Change": None if None in (b, k) else round(k - b, 1)}
        )
    return pd.DataFrame(rows)


def disagreements_table(result: dict[str, Any], thumbs: list[str | None]) -> pd.DataFrame:
    """The images where the two versions disagree: thumbnail, truth and both predictions with confidence."""
    base, cand = result["baseline"]["label"], result["candidate"]["label"]
    rows = result["disagreements"]
    return pd.DataFrame(
        {
            "Image": thumbs,
            "File": [r["file_name"] for r in rows],
            "Truth": [r["truth"] for r in rows],
            base: [_label_with_confidence(r["baseline"], r["baseline_confidence"]) for r in rows],
            cand: [_label_with_confidence(r["candidate"], r["candidate_confidence"]) for r in rows],
            "Right": [_who_is_right(r, base, cand) for r in rows],
        }
    )


def _label_with_confidence(label, confidence) -> str:
    if label is None:
        return "unreadable"
    return f"{label} ({100 * confidence:.0f}%)" if confidence is not None else label


def _who_is_right(row: dict[str, Any], base: str, cand: str) -> str:
    right = [name for name, key in ((base, "baseline"), (cand, "candidate")) if row[key] == row["truth"]]
    return right[0] if right else "neither"


def changes_table(changes: pd.DataFrame, thumbs: list[str | None]) -> pd.DataFrame:
    """What a re-inspection changed, one row per image whose action or defect changed."""
    return pd.DataFrame(
        {
            "Image": thumbs,
            "File": changes["file_name"],
            "Before (model)": changes["original_model"],
            "Defect before": changes["original_defect"],
            "Defect now": changes["new_defect"],
            "Action before": changes["original_action"],
            "Action now": changes["new_action"],
        }
    )
