"""Dashboard aggregates, computed in DuckDB over ``inspection_view`` (effective labels) in one query.

A :class:`DashboardFilter` says what the manager looks at: a period in local calendar days of a time zone,
models, stations, and cross-filters picked on the charts (defect type, severity, location, action). The
model/station/period conditions come from the store's one query builder, :func:`visionqc.store.build_where`.

Cross-filtering follows the usual dashboard rule: each chart is filtered by every cross-filter *except its
own dimension* (so the chart you clicked keeps showing all its bars, with the picked one highlighted), and the
KPIs and the daily trend by all of them. All of that is one scan with ``GROUPING SETS`` and ``FILTER``
clauses; the frames that come back have tens of rows.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import pandas as pd

from visionqc import palette
from visionqc.store import HistoryFilter, Store, build_where

# Period choices: key -> (label, number of local calendar days including today; None = no limit).
PERIODS: dict[str, tuple[str, int | None]] = {
    "7d": ("Last 7 days", 7),
    "30d": ("Last 30 days", 30),
    "90d": ("Last 90 days", 90),
    "all": ("All time", None),
    "custom": ("Custom range", None),
}
CROSS_DIMENSIONS = ("defect", "severity", "location", "action")
DIMENSION_TITLES = {"defect": "Defect type", "severity": "Severity", "location": "Location", "action": "Action"}
# Where a label does not apply or is missing (severity/location of a defect-free image): shown as "—".
MISSING = palette.NO_SEVERITY
COMPARE_DAYS = 7
TIMEZONE_ENV = "VISIONQC_TIMEZONE"
# The History page reads a HistoryFilter from this session-state key (see hand_off_to_history).
HISTORY_FILTER_KEY = "history_handoff"  # read (once) by ui_filters.history_filters on History


# --- time zone ----------------------------------------------------------------------------------
def server_timezone() -> str:
    """The server's IANA time zone name as DuckDB's ICU sees it (e.g. "Europe/Berlin"), else "UTC"."""
    try:
        name = duckdb.connect().execute("SELECT current_setting('TimeZone')").fetchone()[0]
    except duckdb.Error:
        return "UTC"
    return name if is_timezone(name) else "UTC"


def is_timezone(name: str | None) -> bool:
    if not name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def configured_timezone() -> str:
    """``VISIONQC_TIMEZONE`` when it names a time zone, else the server's."""
    name = os.environ.get(TIMEZONE_ENV, "").strip()
    return name if is_timezone(name) else server_timezone()


def local_today(time_zone: str) -> date:
    return datetime.now(ZoneInfo(time_zone)).date()


# --- what the manager looks at ------------------------------------------------------------------
@dataclass(frozen=True)
class DashboardFilter:
    """Period (local days in ``time_zone``), models, stations and chart cross-filters. Empty = no filter."""

    period: str = "30d"
    start: date | None = None  # custom range, inclusive local days
    end: date | None = None
    time_zone: str = "UTC"
    models: tuple[str, ...] = ()
    stations: tuple[str, ...] = ()
    cross: tuple[tuple[str, tuple[str, ...]], ...] = ()
    include_no_defect: bool = False

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {self.period!r}")
        if not is_timezone(self.time_zone):
            raise ValueError(f"unknown time zone {self.time_zone!r}")
        for dimension, _ in self.cross:
            if dimension not in CROSS_DIMENSIONS:
                raise ValueError(f"cannot cross-filter by {dimension!r}")

    @property
    def cross_filters(self) -> dict[str, tuple[str, ...]]:
        return {d: v for d, v in self.cross if v}

    def with_cross(self, dimension: str, values: Sequence[str]) -> DashboardFilter:
        """This filter with the cross-filter on ``dimension`` replaced (empty ``values`` removes it)."""
        cross = dict(self.cross_filters)
        cross[dimension] = tuple(dict.fromkeys(str(v) for v in values))
        return replace(self, cross=tuple((d, cross[d]) for d in CROSS_DIMENSIONS if cross.get(d)))

    def without_cross(self) -> DashboardFilter:
        return replace(self, cross=())

    def days(self, today: date | None = None) -> tuple[date | None, date | None]:
        """(first, last) local calendar day of the period, inclusive; ``None`` where it is open."""
        today = today or local_today(self.time_zone)
        if self.period == "custom":
            start, end = self.start or today, self.end or today
            return (min(start, end), max(start, end))
        length = PERIODS[self.period][1]
        if length is None:
            return (None, None)
        return (today - timedelta(days=length - 1), today)


@dataclass(frozen=True)
class Kpis:
    inspected: int = 0
    defects: int = 0
    last7: int = 0  # inspections in the 7 days ending on the period's last day
    prev7: int = 0  # ... and in the 7 days before those
    last7_defects: int = 0
    prev7_defects: int = 0
    top_defect: str | None = None
    top_defect_count: int = 0
    serious: int = 0  # defective inspections at medium severity or above
    backlog: int = 0  # flagged "needs review" and not reviewed yet

    @property
    def defect_rate(self) -> float | None:
        return self.defects / self.inspected if self.inspected else None

    @property
    def last7_rate(self) -> float | None:
        return self.last7_defects / self.last7 if self.last7 else None

    @property
    def prev7_rate(self) -> float | None:
        return self.prev7_defects / self.prev7 if self.prev7 else None

    @property
    def serious_share(self) -> float | None:
        """Share of defective inspections at medium severity or above."""
        return self.serious / self.defects if self.defects else None

    @property
    def top_defect_share(self) -> float | None:
        return self.top_defect_count / self.defects if self.defects else None


@dataclass
class DashboardData:
    """Everything the Dashboard shows for one filter state. Frames are small aggregates."""

    filter: DashboardFilter
    first_day: date | None  # None only when nothing was inspected in an open ("all") period
    last_day: date
    kpis: Kpis
    defect_severity: pd.DataFrame  # defect, severity, is_defect, count, share
    by_defect: pd.DataFrame  # defect, is_defect, count, share
    by_severity: pd.DataFrame  # severity, count, share (defective only)
    by_location: pd.DataFrame  # location, count, share (defective only)
    by_action: pd.DataFrame  # action, count, share
    daily: pd.DataFrame  # day, inspected, defects, defect_rate
    no_defect_labels: tuple[str, ...] = field(default_factory=tuple)

    @property
    def empty(self) -> bool:
        return self.kpis.inspected == 0

    def period_text(self) -> str:
        label = PERIODS[self.filter.period][0]
        if self.first_day is None:
            return f"{label} (no inspections), days in {self.filter.time_zone}"
        span = f"{_day(self.first_day)} – {_day(self.last_day)}"
        return f"{label}: {span} (days in {self.filter.time_zone})"

    def describe(self) -> list[str]:
        """The filters in words, one line each, for captions, exported charts and reports."""
        f = self.filter
        lines = [
            f"Period: {self.period_text()}",
            f"Models: {', '.join(f.models) if f.models else 'all'}",
            f"Stations: {', '.join(f.stations) if f.stations else 'all'}",
        ]
        for dimension, values in f.cross_filters.items():
            lines.append(f"{DIMENSION_TITLES[dimension]}: {', '.join(values)}")
        return lines

    def subtitle(self) -> str:
        """One line for exported charts: period, then any narrowing filters."""
        parts = [self.period_text()]
        f = self.filter
        if f.models:
            parts.append("model " + ", ".join(f.models))
        if f.stations:
            parts.append("station " + ", ".join(f.stations))
        parts += [f"{d} = {', '.join(v)}" for d, v in f.cross_filters.items()]
        return " · ".join(parts)


def _day(value: date) -> str:
    return value.strftime("%d %b %Y")


# --- the query ----------------------------------------------------------------------------------
def _condition(history_filter: HistoryFilter) -> tuple[str, list[Any]]:
    """A condition from the store's query builder, without its soft-delete clause (the view already has it)."""
    return build_where(replace(history_filter, deleted="all"))


def _cross_condition(dimension: str, values: Sequence[str]) -> tuple[str, list[Any]]:
    # "—" on a chart stands for "no value"; the store's builder matches None with IS NULL.
    wanted = tuple(None if v == MISSING else v for v in values)
    return _condition(HistoryFilter(**{_HISTORY_FIELDS[dimension]: wanted}))


_HISTORY_FIELDS = {"defect": "defects", "severity": "severities", "location": "locations", "action": "actions"}


def base_history_filter(f: DashboardFilter, first_day: date | None, last_day: date | None) -> HistoryFilter:
    """The model/station/period part of ``f`` as the store's HistoryFilter (no cross-filters)."""
    return HistoryFilter(
        date_from=first_day,
        date_to=last_day,
        timezone=f.time_zone,
        model_names=tuple(f.models),
        stations=tuple(f.stations),
    )


def _sql(f: DashboardFilter, first_day: date | None, last_day: date | None, scan_from: date | None):
    params: list[Any] = []

    def add(condition: tuple[str, list[Any]]) -> str:
        params.extend(condition[1])
        return condition[0]

    tz = f.time_zone
    compare_last = last_day
    in_period = add(_condition(HistoryFilter(date_from=first_day, timezone=tz))) if first_day else "TRUE"
    last7 = add(
        _condition(HistoryFilter(date_from=compare_last - timedelta(days=6), date_to=compare_last, timezone=tz))
    )
    prev7 = add(
        _condition(
            HistoryFilter(
                date_from=compare_last - timedelta(days=13), date_to=compare_last - timedelta(days=7), timezone=tz
            )
        )
    )
    cross = f.cross_filters
    ok = {d: add(_cross_condition(d, cross[d])) if d in cross else "TRUE" for d in CROSS_DIMENSIONS}
    params.append(tz)
    params.append([s for s, rank in palette.SEVERITY_RANK.items() if rank >= palette.MEDIUM_RANK])
    scan = base_history_filter(f, scan_from, last_day if f.period != "all" else None)
    where = add(_condition(scan))

    def all_but(dimension: str | None) -> str:
        return " AND ".join(f"ok_{d}" for d in CROSS_DIMENSIONS if d != dimension)

    sql = f"""
    WITH scanned AS (
        SELECT
            defect,
            is_defect,
            CASE WHEN is_defect THEN coalesce(severity, '{MISSING}') END AS sev,
            CASE WHEN is_defect THEN coalesce(location, '{MISSING}') END AS loc,
            coalesce(action, '{MISSING}') AS act,
            {in_period} AS in_period,
            {last7} AS in_last7,
            {prev7} AS in_prev7,
            {ok["defect"]} AS ok_defect,
            {ok["severity"]} AS ok_severity,
            {ok["location"]} AS ok_location,
            {ok["action"]} AS ok_action,
            CAST(timezone(?, timezone('UTC', created_at)) AS DATE) AS day,
            is_defect AND list_contains(?, lower(severity)) AS serious,
            coalesce(needs_review, FALSE) AND NOT reviewed AS open_review,
            no_defect_label
        FROM inspection_view
        WHERE {where}
    ), flagged AS (
        SELECT *, in_period AND {all_but(None)} AS counted FROM scanned
    )
    SELECT
        GROUPING(defect, is_defect, sev, loc, act, day) AS grouping_id,
        defect, is_defect, sev, loc, act, day,
        count(*) FILTER (WHERE counted) AS n,
        count(*) FILTER (WHERE counted AND is_defect) AS defects,
        count(*) FILTER (WHERE in_period AND {all_but("defect")}) AS n_but_defect,
        count(*) FILTER (WHERE in_period AND {all_but("severity")}) AS n_but_severity,
        count(*) FILTER (WHERE in_period AND {all_but("location")}) AS n_but_location,
        count(*) FILTER (WHERE in_period AND {all_but("action")}) AS n_but_action,
        count(*) FILTER (WHERE counted AND serious) AS serious,
        count(*) FILTER (WHERE counted AND open_review) AS backlog,
        count(*) FILTER (WHERE in_last7 AND {all_but(None)}) AS last7,
        count(*) FILTER (WHERE in_last7 AND {all_but(None)} AND is_defect) AS last7_defects,
        count(*) FILTER (WHERE in_prev7 AND {all_but(None)}) AS prev7,
        count(*) FILTER (WHERE in_prev7 AND {all_but(None)} AND is_defect) AS prev7_defects,
        min(day) FILTER (WHERE in_period) AS first_day,
        max(day) FILTER (WHERE in_period) AS last_day,
        list(DISTINCT no_defect_label) FILTER (WHERE no_defect_label IS NOT NULL) AS no_defect_labels
    FROM flagged
    GROUP BY GROUPING SETS ((defect, is_defect, sev), (sev), (loc), (act), (day), ())
    """
    return sql, params


# GROUPING() bit masks (1 = column not grouped), columns in the order defect, is_defect, sev, loc, act, day.
_SETS = {"defect_severity": 0b000111, "severity": 0b110111, "location": 0b111011, "action": 0b111101}
_SETS |= {"day": 0b111110, "total": 0b111111}


def dashboard_data(store: Store, f: DashboardFilter, *, today: date | None = None) -> DashboardData:
    """All numbers of the Dashboard for ``f``, from one DuckDB query."""
    today = today or local_today(f.time_zone)
    first_day, last_day = f.days(today)
    anchor = last_day or today
    scan_from = None if first_day is None else min(first_day, anchor - timedelta(days=2 * COMPARE_DAYS - 1))
    sql, params = _sql(f, first_day, anchor, scan_from)
    with store.connect() as con:
        rows = con.execute(sql, params).df()
    return _shape(f, rows, first_day, anchor)


def _rows(rows: pd.DataFrame, name: str) -> pd.DataFrame:
    return rows[rows["grouping_id"] == _SETS[name]]


def _with_share(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    total = frame["count"].sum()
    frame["share"] = frame["count"] / total if total else 0.0
    return frame


def _shape(f: DashboardFilter, rows: pd.DataFrame, first_day: date | None, last_day: date) -> DashboardData:
    total = _rows(rows, "total")
    t = total.iloc[0] if len(total) else None

    def number(column: str) -> int:
        return int(t[column]) if t is not None and pd.notna(t[column]) else 0

    raw_labels = t["no_defect_labels"] if t is not None else None
    # list(...) FILTER over no rows is NULL, which pandas hands back as pd.NA (not None)
    labels = tuple(sorted(raw_labels)) if pd.api.types.is_list_like(raw_labels) else ()

    ds = _rows(rows, "defect_severity")
    ds = ds[ds["n_but_defect"] > 0]
    ds_all = ds[ds["is_defect"].fillna(False).astype(bool)]
    if f.include_no_defect:
        ds_all = ds
    defect_severity = pd.DataFrame(
        {
            "defect": ds_all["defect"].astype(str),
            "severity": ds_all["sev"].fillna(MISSING).astype(str),
            "is_defect": ds_all["is_defect"].fillna(False).astype(bool),
            "count": ds_all["n_but_defect"].astype(int),
        }
    )
    defect_severity = defect_severity.sort_values(["defect", "severity"])
    chart_total = int(ds["n_but_defect"].sum())
    defect_severity = defect_severity.reset_index(drop=True)
    defect_severity["share"] = defect_severity["count"] / chart_total if chart_total else 0.0

    by_defect = (
        defect_severity.groupby(["defect", "is_defect"], as_index=False)["count"]
        .sum()
        .sort_values(["count", "defect"], ascending=[False, True])
    )
    by_defect = _with_share(by_defect)

    per_type = ds_all[ds_all["is_defect"].fillna(False).astype(bool)].groupby("defect")["n"].sum()
    per_type = per_type[per_type > 0]
    top = sorted(per_type.items(), key=lambda kv: (-kv[1], kv[0]))[:1]

    def one_dimension(name: str, column: str, out: str, count: str, keep_null: bool) -> pd.DataFrame:
        part = _rows(rows, name)
        if not keep_null:
            part = part[part[column].notna()]
        part = part[part[count] > 0]
        frame = pd.DataFrame({out: part[column].fillna(MISSING).astype(str), "count": part[count].astype(int)})
        return frame

    by_severity = one_dimension("severity", "sev", "severity", "n_but_severity", keep_null=False)
    order = palette.order_severities(by_severity["severity"])
    by_severity = _with_share(by_severity.set_index("severity").loc[order].reset_index())
    by_location = one_dimension("location", "loc", "location", "n_but_location", keep_null=False)
    by_location = _with_share(by_location.sort_values(["count", "location"], ascending=[False, True]))
    by_action = one_dimension("action", "act", "action", "n_but_action", keep_null=True)
    order = palette.order_actions(by_action["action"])
    by_action = _with_share(by_action.set_index("action").loc[order].reset_index())

    if first_day is None and t is not None and pd.notna(t["first_day"]):
        first_day = pd.Timestamp(t["first_day"]).date()
        last_day = max(last_day, pd.Timestamp(t["last_day"]).date())
    daily = _daily(_rows(rows, "day"), first_day, last_day)

    kpis = Kpis(
        inspected=number("n"),
        defects=number("defects"),
        last7=number("last7"),
        prev7=number("prev7"),
        last7_defects=number("last7_defects"),
        prev7_defects=number("prev7_defects"),
        top_defect=top[0][0] if top else None,
        top_defect_count=int(top[0][1]) if top else 0,
        serious=number("serious"),
        backlog=number("backlog"),
    )
    return DashboardData(
        filter=f,
        first_day=first_day,
        last_day=last_day,
        kpis=kpis,
        defect_severity=defect_severity,
        by_defect=by_defect,
        by_severity=by_severity,
        by_location=by_location,
        by_action=by_action,
        daily=daily,
        no_defect_labels=labels,
    )


def _daily(part: pd.DataFrame, first_day: date | None, last_day: date) -> pd.DataFrame:
    """One row per local day of the period (zeros where nothing was inspected; the rate is then NaN)."""
    columns = ["day", "inspected", "defects", "defect_rate"]
    if first_day is None:
        return pd.DataFrame(columns=columns)
    days = pd.date_range(first_day, last_day, freq="D")
    counts = part[part["day"].notna()].assign(day=lambda d: pd.to_datetime(d["day"]))
    counts = counts.set_index("day")[["n", "defects"]].reindex(days, fill_value=0)
    frame = pd.DataFrame(
        {
            "day": days.date,
            "inspected": counts["n"].astype(int).to_numpy(),
            "defects": counts["defects"].astype(int).to_numpy(),
        }
    )
    frame["defect_rate"] = frame["defects"] / frame["inspected"].where(frame["inspected"] > 0)
    return frame


# --- filter options and the hand-off to History -------------------------------------------------
def kpi_cards(k: Kpis) -> list[dict[str, Any]]:
    """The six KPI cards as keyword arguments for ``st.metric`` (label, value, delta, colours, help)."""

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value:.1%}"

    rate_change = None
    if k.last7_rate is not None and k.prev7_rate is not None:
        rate_change = f"{(k.last7_rate - k.prev7_rate) * 100:+.1f} pp"
    volume_change = None
    if k.last7 or k.prev7:
        volume_change = f"{k.last7 - k.prev7:+,}" + (f" ({k.last7 / k.prev7 - 1:+.0%})" if k.prev7 else "")
    return [
        {"label": "Inspected", "value": f"{k.inspected:,}", "help": "Inspections in the period, after all filters."},
        {
            "label": "Defect rate",
            "value": pct(k.defect_rate),
            "delta": rate_change,
            "delta_color": "inverse",  # a rising defect rate is bad news
            "delta_description": "7 d vs prior 7" if rate_change else None,
            "help": f"Defective share of the inspections in the period ({k.defects:,} defective). "
            "The change compares the defect rate of the last 7 days of the period with the 7 days before.",
        },
        {
            "label": "Last 7 days",
            "value": f"{k.last7:,}",
            "delta": volume_change,
            "delta_color": "off",
            "delta_description": "vs prior 7" if volume_change else None,
            "help": "Inspections in the 7 days ending on the period's last day, compared with the 7 days before.",
        },
        {
            "label": "Top defect",
            "value": k.top_defect or "—",
            "delta": f"{pct(k.top_defect_share)} of defects" if k.top_defect else None,
            "delta_color": "off",
            "delta_arrow": "off",
            "help": "The most frequent defect type in the period (defect-free images not counted).",
        },
        {
            "label": "≥ Medium severity",
            "value": pct(k.serious_share),
            "delta": f"{k.serious:,} inspections" if k.defects else None,
            "delta_color": "off",
            "delta_arrow": "off",
            "help": "Share of the defective inspections whose severity is medium or higher.",
        },
        {
            "label": "Review backlog",
            "value": f"{k.backlog:,}",
            "help": "Inspections flagged “needs review” that nobody has reviewed yet.",
        },
    ]


def filter_options(store: Store) -> dict[str, list[str]]:
    """Values for the model and station pickers."""
    return {"models": store.distinct_values("model_name"), "stations": store.distinct_values("station")}


def history_filter(data: DashboardData) -> HistoryFilter:
    """The Dashboard's current filters (period, models, stations, cross-filters) as a History filter."""
    f = data.filter
    cross = f.cross_filters

    def values(dimension: str) -> tuple[str | None, ...]:
        return tuple(None if v == MISSING else v for v in cross.get(dimension, ()))

    first_day, last_day = (data.first_day, data.last_day) if f.period != "all" else (None, None)
    return replace(
        base_history_filter(f, first_day, last_day),
        defects=values("defect"),
        severities=values("severity"),
        locations=values("location"),
        actions=values("action"),
    )


def hand_off_to_history(state: MutableMapping[str, Any], data: DashboardData) -> HistoryFilter:
    """Write the Dashboard's filters where the History page reads them (``state[HISTORY_FILTER_KEY]``)."""
    handed = history_filter(data)
    state[HISTORY_FILTER_KEY] = handed
    return handed
