"""The one query builder: an :class:`~visionqc.filters.InspectionFilter` -> a parameterised WHERE clause.

History, Explore, the Dashboard, the review queue and every export select inspections through
:func:`build_where`; user input reaches SQL only as parameters or through the whitelists below.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from visionqc.filters import InspectionFilter

# A model version as the registry names it ("door-panels v2"): History filters and lists versions by it.
MODEL_VERSION_LABEL = "(model_name || ' v' || model_version)"


def _utc_bound(value: date | datetime, tz: str, *, end: bool) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    day = value + timedelta(days=1) if end else value
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}; use an IANA name such as 'Europe/Berlin'") from None
    local = datetime(day.year, day.month, day.day, tzinfo=zone)
    return local.astimezone(UTC).replace(tzinfo=None)


def _in_list(column: str, values: Sequence[Any], params: list[Any]) -> str:
    """``column IN (...)`` with ``None`` in ``values`` meaning ``column IS NULL``."""
    present = [v for v in values if v is not None]
    parts = []
    if present:
        parts.append(f"{column} IN ({', '.join('?' for _ in present)})")
        params.extend(present)
    if len(present) < len(values):
        parts.append(f"{column} IS NULL")
    return "(" + " OR ".join(parts) + ")"


def _carrying(tags: list[str], params: list[Any]) -> str:
    """``inspection_id IN`` the ids of inspections carrying any of ``tags``."""
    params.append(tags)
    # ``= ANY(array)``, not ``IN (SELECT unnest(...))``: PostgreSQL then estimates from the tags' statistics how
    # many rows carry them, and walks the newest-first index for a common tag but starts from the tags for a rare one.
    return "inspection_id IN (SELECT inspection_id FROM tags WHERE tag = ANY(?::VARCHAR[]))"


def build_where(f: InspectionFilter, *, batch_columns: bool = False) -> tuple[str, list[Any]]:
    """A parameterised WHERE clause (without the keyword) over ``inspection_view`` columns, and its params.

    Use as ``f"SELECT ... FROM inspection_view_all WHERE {sql}"`` (or ``inspection_view``, which already
    hides soft-deleted rows); column names are unqualified. ``batch_columns``: the rows carry their batch's
    ``station`` and ``operator`` themselves (the Dashboard's roll-up), so those conditions are on the row.
    """
    where: list[str] = []
    params: list[Any] = []
    if f.deleted == "hide":
        where.append("deleted_at IS NULL")
    elif f.deleted == "only":
        where.append("deleted_at IS NOT NULL")
    elif f.deleted != "all":
        raise ValueError(f"deleted must be 'hide', 'only' or 'all', not {f.deleted!r}")
    if f.date_from is not None:
        where.append("created_at >= ?")
        params.append(_utc_bound(f.date_from, f.timezone, end=False))
    if f.date_to is not None:
        where.append("created_at < ?")
        params.append(_utc_bound(f.date_to, f.timezone, end=True))
    for column, values in (
        ("defect", f.defects),
        ("severity", f.severities),
        ("location", f.locations),
        ("action", f.actions),
        ("model_name", f.model_names),
        ("batch_id", f.batches),
    ):
        if values:
            where.append(_in_list(column, list(values), params))
    if f.model_versions:
        where.append(_in_list(MODEL_VERSION_LABEL, list(f.model_versions), params))
    if f.confidence_min is not None:
        where.append("confidence >= ?")
        params.append(float(f.confidence_min))
    if f.confidence_max is not None:
        where.append("confidence <= ?")
        params.append(float(f.confidence_max))
    if f.needs_review is not None:
        where.append("needs_review = ?")
        params.append(bool(f.needs_review))
    if f.reviewed is not None:
        where.append("reviewed = ?")
        params.append(bool(f.reviewed))
    if f.file_name.strip():
        # A LIKE pattern (the text's own %, _ and \ escaped), which a trigram index serves on PostgreSQL (migration 13).
        where.append("lower(file_name) LIKE lower(?) ESCAPE '\\'")
        params.append(f"%{like_escaped(f.file_name.strip())}%")
    if f.unusable is not None:
        where.append("unusable = ?")
        params.append(bool(f.unusable))
    for column, values in (("station", f.stations), ("operator", f.operators)):
        if values:
            batch_params: list[Any] = []
            cond = _in_list(column, list(values), batch_params)
            where.append(cond if batch_columns else f"batch_id IN (SELECT batch_id FROM batches WHERE {cond})")
            params.extend(batch_params)
    # Tags are compared as stored: trimmed, case-sensitive. "All of" is one condition per tag (each one estimated
    # and joined like "any of"), "none of" the negation of "any of".
    for tag in clean_tags(f.tags_all):
        where.append(_carrying([tag], params))
    if tags := clean_tags(f.tags_any):
        where.append(_carrying(tags, params))
    if tags := clean_tags(f.tags_none):
        where.append(f"NOT {_carrying(tags, params)}")
    if f.ids is not None:
        where.append("inspection_id IN (SELECT unnest(?::BIGINT[]))")
        params.append([int(i) for i in f.ids])
    return (" AND ".join(where) or "TRUE"), params


# Sortable columns of the History table (user input never reaches SQL except through this whitelist).
SORT_COLUMNS = (
    "created_at",
    "inspection_id",
    "file_name",
    "batch_id",
    "defect",
    "severity",
    "location",
    "action",
    "confidence",
    "pred_severity_conf",
    "pred_location_conf",
    "needs_review",
    "reviewed",
    "reviewed_at",
    "ood_score",
    "anomaly_score",
    "outlier_score",
    "near_duplicate_similarity",
    "model_name",
)
DISTINCT_COLUMNS = {
    "model_version": (MODEL_VERSION_LABEL, "inspection_view"),
    "defect": ("defect", "inspection_view"),
    "severity": ("severity", "inspection_view"),
    "location": ("location", "inspection_view"),
    "action": ("action", "inspection_view"),
    "model_name": ("model_name", "inspection_view"),
    "batch_id": ("batch_id", "batches"),
    "station": ("station", "batches"),
    "operator": ("operator", "batches"),
    "part_number": ("part_number", "batches"),
    "lot": ("lot", "batches"),
    "reviewed_by": ("reviewer", "reviews"),
    "tag": ("tag", "tags"),
}
# Columns of the CSV export, in order, as (table alias, column): v = inspection_view_all, b = batches. The
# effective labels first, then what a person set (rev_*), then the model's prediction.
EXPORT_COLUMNS = (
    ("v", "inspection_id"),
    ("v", "created_at"),
    ("v", "batch_id"),
    ("b", "station"),
    ("b", "operator"),
    ("b", "part_number"),
    ("b", "lot"),
    ("b", "note"),
    ("v", "file_name"),
    ("v", "defect"),
    ("v", "severity"),
    ("v", "location"),
    ("v", "action"),
    ("v", "confidence"),
    ("v", "needs_review"),
    ("v", "review_reason"),
    ("v", "unusable"),
    ("v", "unusable_reason"),
    ("v", "reviewed"),
    ("v", "reviewed_by"),
    ("v", "reviewed_at"),
    ("v", "rev_defect"),
    ("v", "rev_severity"),
    ("v", "rev_location"),
    ("v", "rev_action"),
    ("v", "pred_defect"),
    ("v", "pred_defect_conf"),
    ("v", "pred_severity"),
    ("v", "pred_severity_conf"),
    ("v", "pred_location"),
    ("v", "pred_location_conf"),
    ("v", "pred_action"),
    ("v", "ood_score"),
    ("v", "anomaly_score"),
    ("v", "model_name"),
    ("v", "model_version"),
    ("v", "sha256"),
)


def rows_sql(where: str, tag_where: str, order: str) -> str:
    """Full History rows (view columns, batch station/operator, image paths, sorted tag list)."""
    return f"""SELECT v.*, b.station, b.operator, im.path AS image_file, im.thumb_path AS thumb_file,
            coalesce(tg.tags, ARRAY[]::VARCHAR[]) AS tags
        FROM (SELECT * FROM inspection_view_all WHERE {where}) v
        LEFT JOIN batches b ON b.batch_id = v.batch_id
        LEFT JOIN images im ON im.sha256 = v.sha256
        LEFT JOIN (SELECT inspection_id, array_agg(tag ORDER BY tag) AS tags FROM tags WHERE {tag_where}
                   GROUP BY inspection_id) tg ON tg.inspection_id = v.inspection_id
        ORDER BY {order}"""


def like_escaped(text: str) -> str:
    """``text`` matched literally inside a LIKE pattern with ``ESCAPE '\\'``."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def clean_tags(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        tags = [tags]
    return sorted({t.strip() for t in tags if t and t.strip()})


def order_by(sort: str, descending: bool, prefix: str = "") -> str:
    """``ORDER BY`` terms for a whitelisted sort column, ties broken by inspection id in the same direction."""
    if sort not in SORT_COLUMNS:
        raise ValueError(f"cannot sort by {sort!r}; choose one of {', '.join(SORT_COLUMNS)}")
    direction = "DESC" if descending else "ASC"
    tie = "" if sort == "inspection_id" else f", {prefix}inspection_id {direction}"
    return f"{prefix}{sort} {direction} NULLS LAST{tie}"
