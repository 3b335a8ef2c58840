"""The inspections table every page shows (Inspect results, History, Explore selections and outliers): thumbnail,
file, each task's effective label with the model's confidence, action and review state; and the batch summary."""

from __future__ import annotations

import base64
from pathlib import Path

import pandas as pd
import streamlit as st

from visionqc.actions import ACTIONS
from visionqc.labels import NO_VALUE, order_actions, order_severities, stored
from visionqc.model.card import ModelCard, card_classes
from visionqc.reporting import palette
from visionqc.ui.selection import rows_key

TASK_COLUMNS = (("defect", "Defect"), ("severity", "Severity"), ("location", "Location"))


def data_url(jpeg: bytes | None) -> str | None:
    """A ``data:`` URL for an ImageColumn cell (thumbnails are small JPEGs)."""
    if not jpeg:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


@st.cache_data(max_entries=20_000, show_spinner=False)
def thumbnail_url(path: str | None) -> str | None:
    # Thumbnails are content-addressed (named by SHA-256), so a cached URL never goes stale.
    if not path:
        return None
    try:
        return data_url(Path(path).read_bytes())
    except OSError:
        return None


def _confidence(label, predicted, confidence) -> float | None:
    """The model's confidence, in percent, when the label shown is the model's own; ``None`` once a person
    changed it (a percentage beside a person's label would read as the person's certainty)."""
    if label is None or label != predicted or confidence is None or confidence != confidence:
        return None
    return round(100 * float(confidence), 1)


STATUS_NEEDS_REVIEW, STATUS_CORRECTED, STATUS_CONFIRMED = "Needs review", "Corrected", "Confirmed"
STATUS_UNUSABLE = "Unusable"


STATUS_COLORS = {
    STATUS_NEEDS_REVIEW: palette.action_color("Review"),
    STATUS_CORRECTED: "#8e44ad",
    STATUS_CONFIRMED: "#7f8c8d",
    STATUS_UNUSABLE: "#5d4037",
}


def _status(needs_review, reviewed, changed: bool, unusable: bool = False) -> list[str]:
    if unusable:
        return [STATUS_UNUSABLE]
    if reviewed:
        return [STATUS_CORRECTED if changed else STATUS_CONFIRMED]
    return [STATUS_NEEDS_REVIEW] if needs_review else []


def _why(rows: pd.DataFrame) -> list:
    """Why a person should look (the model's reason), or why the photo is unusable."""
    reasons = rows["review_reason"] if "review_reason" in rows else pd.Series(None, index=rows.index)
    unusable = rows["unusable_reason"] if "unusable_reason" in rows else pd.Series(None, index=rows.index)
    return [
        f"unusable: {u}" if isinstance(u, str) and u else (r if isinstance(r, str) else None)
        for r, u in zip(reasons, unusable, strict=True)
    ]


FIRST_COLUMNS = ("Image", "File", "Action", "Status", "Why review", "Defect", "Defect %", "Severity", "Location")


def inspections_table(rows, *, timezone: str = "UTC", history: bool = False):
    """Store rows (``Store.search`` / ``batch_rows``) -> the table a QC lead reads: thumbnail, file, action, review
    state, each task's effective label with the model's confidence in percent, why to look, who reviewed."""
    out = pd.DataFrame(index=rows.index)
    out["Image"] = [thumbnail_url(p) for p in rows["thumb_file"]] if "thumb_file" in rows else None
    out["File"] = rows["file_name"]
    out["Action"] = [[a] if isinstance(a, str) else [] for a in rows["action"]]
    out["Status"] = None  # filled below, once we know which labels a person changed
    changed = pd.Series(False, index=rows.index)
    for task, title in TASK_COLUMNS:
        if task not in rows:
            continue
        labels = [stored(v) for v in rows[task]]
        predicted = [stored(v) for v in rows[f"pred_{task}"]]
        changed |= pd.Series([a != b for a, b in zip(labels, predicted, strict=True)], index=rows.index)
        # Severity is a coloured pill (a one-item list); a missing label stays empty and shows the placeholder "—".
        out[title] = [[v] if v else None for v in labels] if task == "severity" else labels
        out[f"{title} %"] = [
            _confidence(label, pred, conf)
            for label, pred, conf in zip(labels, predicted, rows[f"pred_{task}_conf"], strict=True)
        ]
    unusable = rows["unusable"].fillna(False) if "unusable" in rows else pd.Series(False, index=rows.index)
    out["Status"] = [
        _status(bool(n), bool(r), bool(c), bool(u))
        for n, r, c, u in zip(
            rows["needs_review"].fillna(False), rows["reviewed"].fillna(False), changed, unusable, strict=True
        )
    ]
    out["Why review"] = _why(rows)
    out["Reviewed by"] = rows.get("reviewed_by", None)
    if history:  # Inspect shows one batch: the time, batch, station and operator are in its heading
        out["Tags"] = [list(t) if t is not None and len(t) else [] for t in rows["tags"]]
        out["Station"] = rows.get("station")
        out["Operator"] = rows.get("operator")
        out["Inspected at"] = _local_times(rows["created_at"], timezone)
        out["Batch"] = rows["batch_id"]
        out["Outlier score"] = rows.get("outlier_score")
        out["Near-duplicate similarity"] = rows.get("near_duplicate_similarity")
    # What a QC lead reads first stays in view; the other labels' confidences go to the far right.
    first = [c for c in FIRST_COLUMNS if c in out]
    last = [c for c in ("Severity %", "Location %") if c in out]
    return out[first + [c for c in out if c not in first and c not in last] + last]


def _local_times(values, timezone: str):
    stamps = pd.to_datetime(values)
    return stamps.dt.tz_localize("UTC").dt.tz_convert(timezone).dt.tz_localize(None)


def table_column_config(card: ModelCard | None = None, *, timezone: str = "UTC") -> dict:
    """Column settings for :func:`inspections_table`: thumbnails, percent confidences, coloured actions."""
    cc = st.column_config
    severities = order_severities(card_classes(card, "severity"))
    actions = list(ACTIONS)
    percent = "%.0f%%"
    help_conf = "How sure the model is of its label. “—” where a person changed the label or none applies."
    statuses = list(STATUS_COLORS)
    return {
        "Image": cc.ImageColumn("Image", width=48, help="Click any cell of a row to see the photo large."),
        "File": cc.TextColumn("File", width=210),
        "Defect": cc.TextColumn("Defect", width=90),
        "Defect %": cc.NumberColumn("Conf.", format=percent, help=help_conf, width=58),
        "Severity": cc.MultiselectColumn(
            "Severity",
            options=severities,
            color=[palette.severity_color(s) for s in severities],
            width=82,
        ),
        "Severity %": cc.NumberColumn("Sev. conf.", format=percent, help=help_conf, width=70),
        "Location": cc.TextColumn("Location", width=95),
        "Location %": cc.NumberColumn("Loc. conf.", format=percent, help=help_conf, width=70),
        "Action": cc.MultiselectColumn(
            "Action", options=actions, color=[palette.action_color(a) for a in actions], width=82
        ),
        "Status": cc.MultiselectColumn(
            "Review",
            options=statuses,
            color=[STATUS_COLORS[s] for s in statuses],
            width=105,
            help="Needs review: the model is unsure, a person should look. Corrected / Confirmed: a person did. "
            "Unusable: a person marked the photo “not a part / unusable image”.",
        ),
        "Why review": cc.TextColumn("Why look", width=210),
        "Reviewed by": cc.TextColumn("Reviewed by", width=100),
        "Tags": cc.ListColumn("Tags", width=120),
        "Batch": cc.TextColumn("Batch", width=150),
        "Station": cc.TextColumn("Station", width=100),
        "Operator": cc.TextColumn("Operator", width=100),
        "Inspected at": cc.DatetimeColumn(
            "Inspected at", format="YYYY-MM-DD HH:mm", help=f"Time zone: {timezone}", width=130
        ),
        "Outlier score": cc.NumberColumn(
            "Outlier score",
            format="%.3f",
            width=90,
            help="How unlike the training images of its class (0 = typical). Computed on the Explore page.",
        ),
    }


ROW_HEIGHT = 35
VISIBLE_ROWS = 22


def show_inspections(
    rows: pd.DataFrame,
    card: ModelCard | None,
    *,
    key: str,
    timezone: str = "UTC",
    history: bool = False,
    selection: str | list[str] | None = None,
    first_columns: tuple[str, ...] = (),
):
    """Render ``rows`` (from ``Store.search`` / ``batch_rows``) as the compact inspections table (22 rows in view).

    ``selection`` (e.g. ``"multi-row"``, ``["multi-row", "single-cell"]``) lets the user pick rows or click a
    cell; the event is returned. The widget key then carries the ids shown (:func:`visionqc.ui.selection.rows_key`),
    so a selection never moves to other images when the rows change; the key in use is kept in
    ``st.session_state[f"{key}_key"]``. ``first_columns`` moves columns to the front (e.g. a sort score)."""
    table = inspections_table(rows, timezone=timezone, history=history)
    for position, column in enumerate(first_columns, start=2):
        table.insert(position, column, table.pop(column))
    options = {"on_select": "rerun", "selection_mode": selection} if selection else {}
    if selection:
        st.session_state[f"{key}_key"] = key = rows_key(key, rows)
    height = ROW_HEIGHT * (min(len(table), VISIBLE_ROWS) + 1) + 3
    return st.dataframe(
        table,
        column_config=table_column_config(card, timezone=timezone),
        hide_index=True,
        row_height=ROW_HEIGHT,
        height=height,
        placeholder=NO_VALUE,
        key=key,
        **options,
    )


_ACTION_MARKDOWN_COLOR = {"Pass": "green", "Hold": "yellow", "Rework": "orange", "Reject": "red", "Review": "blue"}


def render_batch_summary(summary: dict) -> None:
    """Two rows of metrics: the batch's counts, then how many images got each action."""
    cells = [
        (
            "Inspected",
            summary.get("inspected", 0),
            "New images classified in this batch (unusable photos not counted).",
        ),
        ("Needs review", summary.get("needs_review", 0), "The model was unsure about these; a person should look."),
        ("Unusable photos", summary.get("unusable", 0), "Marked “not a part / unusable image”: in no other count."),
        ("Duplicates", summary.get("duplicates", 0), "Same bytes as an earlier inspection: reported, not re-counted."),
        ("Failed", summary.get("failures", 0), "Files that could not be read; listed below with the reason."),
    ]
    for column, (label, value, help_text) in zip(st.columns(len(cells)), cells, strict=True):
        column.metric(label, f"{value:,}", help=help_text, border=True)
    by_action = summary.get("by_action", {})
    actions = order_actions([*ACTIONS, *by_action])
    for column, action in zip(st.columns(len(actions)), actions, strict=True):
        color = _ACTION_MARKDOWN_COLOR.get(action, "gray")
        column.metric(f":{color}[■] {action}", f"{by_action.get(action, 0):,}", border=True)


def render_failures_and_duplicates(failures: pd.DataFrame, duplicates: pd.DataFrame) -> None:
    """What a batch could not classify (with the reason) and what it had seen before, under the summary."""
    if len(failures):
        st.error(f"{len(failures)} file(s) could not be inspected; the rest of the batch was saved.")
        st.dataframe(
            failures.rename(columns={"file_name": "File", "reason": "Reason", "created_at": "When (UTC)"}),
            hide_index=True,
            key="inspect_failures",
        )
    if len(duplicates):
        st.warning(f"{len(duplicates)} file(s) were inspected before (same image bytes); they are not counted again.")
        st.dataframe(
            duplicates[["file_name", "earlier_file_name", "earlier_batch_id", "earlier_at"]].rename(
                columns={
                    "file_name": "File",
                    "earlier_file_name": "Inspected earlier as",
                    "earlier_batch_id": "In batch",
                    "earlier_at": "At (UTC)",
                }
            ),
            hide_index=True,
            key="inspect_duplicates",
        )
