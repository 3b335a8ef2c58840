"""The one filter model: which inspections a page, an export or a chart is about.

History, the Dashboard, Explore, the review queue and the command line all describe their selection with an
:class:`InspectionFilter`; the store turns it into SQL (:func:`visionqc.store.query.build_where`). A
:class:`Period` is the Dashboard's way of choosing the filter's days ("last 7 days", "all time", ...).
Pure Python: no database, no Streamlit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# The label fields a chart click can narrow, keyed by the inspection column they filter.
LABEL_FIELDS: dict[str, str] = {
    "defect": "defects",
    "severity": "severities",
    "location": "locations",
    "action": "actions",
}


@dataclass(frozen=True)
class InspectionFilter:
    """Which inspections to show. Empty fields do not filter.

    Semantics (all conditions are combined with AND; every label is the *effective* one, i.e. the
    latest review if there is one, else the prediction):

    - ``date_from`` / ``date_to``: inclusive calendar days in ``timezone`` (an IANA name, default UTC);
      a ``datetime`` is taken as a naive UTC instant instead (``date_to`` then exclusive).
    - ``defects``, ``severities``, ``locations``, ``actions``, ``model_names``: the row's value is one of
      those listed (OR within a field). ``None`` in the list matches rows without a value (e.g. the
      severity of a defect-free image, shown as "—").
    - ``confidence_min`` / ``confidence_max``: inclusive bounds on the defect confidence.
    - ``needs_review``, ``reviewed``: ``True`` / ``False`` keep only flagged / unflagged rows,
      reviewed / not yet reviewed rows; ``None`` keeps both.
    - ``model_versions``: the row was classified by one of these model versions, written as the registry shows
      them: ``"<name> v<version>"`` (e.g. ``"door-panels v2"``).
    - ``batches``: the row belongs to one of these batch ids. ``stations`` / ``operators``: its batch was
      recorded at one of these stations / by one of these operators (``None`` = none recorded).
    - ``unusable``: ``True`` keeps only photos a person marked "not a part / unusable image", ``False``
      leaves them out (every quality figure does), ``None`` keeps both.
    - ``file_name``: case-insensitive substring of the file name.
    - Tags: ``tags_all`` — the row carries **every** listed tag (AND); ``tags_any`` — it carries **at
      least one** of them (OR); ``tags_none`` — it carries **none** of them (NOT). The three combine
      with AND, e.g. all of {retrain}, any of {scratch, dent}, none of {ignore}. Tags match exactly
      (case-sensitive) after trimming spaces, as the store keeps them.
    - ``ids``: only these inspection ids (e.g. an Explore selection); ``None`` does not filter, an empty
      list matches nothing.
    - ``deleted``: ``"hide"`` (default) leaves soft-deleted rows out, ``"only"`` shows only them,
      ``"all"`` shows both.
    """

    date_from: date | datetime | None = None
    date_to: date | datetime | None = None
    timezone: str = "UTC"
    defects: Sequence[str | None] = ()
    severities: Sequence[str | None] = ()
    locations: Sequence[str | None] = ()
    actions: Sequence[str | None] = ()
    confidence_min: float | None = None
    confidence_max: float | None = None
    needs_review: bool | None = None
    reviewed: bool | None = None
    batches: Sequence[str] = ()
    file_name: str = ""
    tags_all: Sequence[str] = ()
    tags_any: Sequence[str] = ()
    tags_none: Sequence[str] = ()
    model_names: Sequence[str | None] = ()
    model_versions: Sequence[str] = ()
    stations: Sequence[str | None] = ()
    operators: Sequence[str | None] = ()
    unusable: bool | None = None
    ids: Sequence[int] | None = None
    deleted: str = "hide"

    def __post_init__(self) -> None:
        if not is_timezone(self.timezone):
            raise ValueError(f"unknown time zone {self.timezone!r}; use an IANA name such as 'Europe/Berlin'")
        if self.deleted not in ("hide", "only", "all"):
            raise ValueError(f"deleted must be 'hide', 'only' or 'all', not {self.deleted!r}")

    def labels(self, column: str) -> tuple[str | None, ...]:
        """The values kept for a label column (``"defect"``, ``"severity"``, ``"location"``, ``"action"``)."""
        return tuple(getattr(self, LABEL_FIELDS[column]))

    def with_labels(self, column: str, values: Sequence[str | None]) -> InspectionFilter:
        """This filter with one label column's values replaced (empty ``values`` removes that condition)."""
        return replace(self, **{LABEL_FIELDS[column]: tuple(dict.fromkeys(values))})

    def changed_fields(self) -> list[str]:
        """Names of the fields that differ from an empty filter (what actually narrows the selection)."""
        empty = InspectionFilter()
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(empty, f.name)]


# --- periods (the Dashboard's choice of days) -----------------------------------------------------
# key -> (label, number of local calendar days including today; None = no limit).
PERIODS: dict[str, tuple[str, int | None]] = {
    "7d": ("Last 7 days", 7),
    "30d": ("Last 30 days", 30),
    "90d": ("Last 90 days", 90),
    "all": ("All time", None),
    "custom": ("Custom range", None),
}


def is_timezone(name: str | None) -> bool:
    if not name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def local_today(time_zone: str) -> date:
    return datetime.now(ZoneInfo(time_zone)).date()


@dataclass(frozen=True)
class Period:
    """A span of local calendar days: the last 7 / 30 / 90 days, all time, or a custom range (inclusive)."""

    key: str = "30d"
    start: date | None = None  # custom range only
    end: date | None = None

    def __post_init__(self) -> None:
        if self.key not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {self.key!r}")

    @property
    def label(self) -> str:
        return PERIODS[self.key][0]

    def days(self, today: date) -> tuple[date | None, date | None]:
        """(first, last) local calendar day of the period, inclusive; ``None`` where it is open."""
        if self.key == "custom":
            start, end = self.start or today, self.end or today
            return (min(start, end), max(start, end))
        length = PERIODS[self.key][1]
        if length is None:
            return (None, None)
        return (today - timedelta(days=length - 1), today)
