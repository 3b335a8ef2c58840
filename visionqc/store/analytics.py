"""Dashboard aggregates in one query over ``inspection_view`` (effective labels), the same SQL on DuckDB and
PostgreSQL.

The Dashboard looks at the inspections of an :class:`~visionqc.filters.InspectionFilter` (models, stations,
labels picked on the charts, ...) over a :class:`~visionqc.filters.Period` of local calendar days in the
filter's time zone. Every condition comes from the store's one query builder, :func:`build_where`.

Cross-filtering follows the usual dashboard rule: each chart is filtered by every label condition *except its
own dimension* (so the chart you clicked keeps showing all its bars, with the picked one highlighted), and the
KPIs and the daily trend by all of them. All of that is one scan with ``GROUPING SETS`` and ``FILTER``
clauses; the frames that come back have tens of rows.

The query reads the roll-up :mod:`visionqc.store.counts` (counts per UTC hour and label combination) whenever
that gives the same numbers (:func:`source_for`), else the inspections themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any

import duckdb
import pandas as pd

from visionqc.filters import LABEL_FIELDS, InspectionFilter, Period, is_timezone, local_today
from visionqc.labels import MEDIUM_RANK, NO_VALUE, SEVERITY_RANK, order_actions, order_severities, shown_all
from visionqc.store import counts
from visionqc.store.counts import RAW, Source
from visionqc.store.store import Store

CROSS_DIMENSIONS = tuple(LABEL_FIELDS)  # defect, severity, location, action
DIMENSION_TITLES = {"defect": "Defect type", "severity": "Severity", "location": "Location", "action": "Action"}
COMPARE_DAYS = 7
TIMEZONE_ENV = "VISIONQC_TIMEZONE"


# --- time zone ----------------------------------------------------------------------------------
def server_timezone() -> str:
    """The server's IANA time zone name as DuckDB's ICU sees it (e.g. "Europe/Berlin"), else "UTC"."""
    try:
        with duckdb.connect() as con:
            name = con.execute("SELECT current_setting('TimeZone')").fetchone()[0]
    except duckdb.Error:
        return "UTC"
    return name if is_timezone(name) else "UTC"


def configured_timezone() -> str:
    """``VISIONQC_TIMEZONE`` when it names a time zone, else the server's."""
    name = os.environ.get(TIMEZONE_ENV, "").strip()
    return name if is_timezone(name) else server_timezone()


# --- what comes back ----------------------------------------------------------------------------
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
    unusable: int = 0  # photos marked "not a part / unusable image" in the period: in no other figure

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
    """Everything the Dashboard shows for one filter and period. Frames are small aggregates."""

    filter: InspectionFilter
    period: Period
    first_day: date | None  # None only when nothing was inspected in an open ("all") period
    last_day: date
    kpis: Kpis
    defect_severity: pd.DataFrame  # defect, severity, is_defect, count, share
    by_defect: pd.DataFrame  # defect, is_defect, count, share
    by_severity: pd.DataFrame  # severity, count, share (defective only)
    by_location: pd.DataFrame  # location, count, share (defective only)
    by_action: pd.DataFrame  # action, count, share
    daily: pd.DataFrame  # day, inspected, defects, defect_rate
    by_station: pd.DataFrame = field(default_factory=pd.DataFrame)  # group, action, count, inspected, defect_rate
    by_operator: pd.DataFrame = field(default_factory=pd.DataFrame)  # the same, by who ran the batch
    no_defect_labels: tuple[str, ...] = field(default_factory=tuple)
    include_no_defect: bool = False

    @property
    def empty(self) -> bool:
        return self.kpis.inspected == 0

    @property
    def time_zone(self) -> str:
        return self.filter.timezone

    @property
    def picks(self) -> dict[str, list[str]]:
        """The label conditions picked on the charts, as the charts show them ("—" for no value)."""
        return {d: shown_all(self.filter.labels(d)) for d in CROSS_DIMENSIONS if self.filter.labels(d)}

    def period_text(self) -> str:
        label = self.period.label
        if self.first_day is None:
            return f"{label} (no inspections), days in {self.time_zone}"
        span = f"{_day(self.first_day)} – {_day(self.last_day)}"
        return f"{label}: {span} (days in {self.time_zone})"

    def describe(self) -> list[str]:
        """The filters in words, one line each, for captions, exported charts and reports."""
        f = self.filter
        lines = [
            f"Period: {self.period_text()}",
            f"Models: {', '.join(map(str, f.model_names)) if f.model_names else 'all'}",
            f"Stations: {', '.join(map(str, f.stations)) if f.stations else 'all'}",
            f"Operators: {', '.join(map(str, f.operators)) if f.operators else 'all'}",
            "Unusable photos (not a part, blurred, …) are in no figure but their own count",
        ]
        for dimension, values in self.picks.items():
            lines.append(f"{DIMENSION_TITLES[dimension]}: {', '.join(values)}")
        return lines

    def subtitle(self) -> str:
        """One line for exported charts: period, then any narrowing filters."""
        parts = [self.period_text()]
        f = self.filter
        if f.model_names:
            parts.append("model " + ", ".join(map(str, f.model_names)))
        if f.stations:
            parts.append("station " + ", ".join(map(str, f.stations)))
        if f.operators:
            parts.append("operator " + ", ".join(map(str, f.operators)))
        parts += [f"{d} = {', '.join(v)}" for d, v in self.picks.items()]
        return " · ".join(parts)

    def history_filter(self) -> InspectionFilter:
        """What the Dashboard shows, as the filter History opens with ("Open in History")."""
        if self.period.key == "all":
            return replace(self.filter, date_from=None, date_to=None)
        return replace(self.filter, date_from=self.first_day, date_to=self.last_day)


def _day(value: date) -> str:
    return value.strftime("%d %b %Y")


# --- the query ----------------------------------------------------------------------------------
def source_for(f: InspectionFilter) -> Source:
    """The roll-up when it answers every condition of ``f`` exactly (whole-hour time zone, conditions on the
    values it counts by), else the inspections: the same numbers either way, the roll-up much faster."""
    return Source(counts.source_for(f))


def _scope(f: InspectionFilter, scan_from: date | None, scan_to: date | None) -> InspectionFilter:
    """``f`` without its label conditions (each chart applies those itself) over the days scanned, without
    the photos marked unusable: they are in no quality figure."""
    labels = {name: () for name in LABEL_FIELDS.values()}
    return replace(f, date_from=scan_from, date_to=scan_to, unusable=False, **labels)


def _unusable_count(store: Store, f: InspectionFilter, first_day: date | None, last_day: date, source: Source) -> int:
    """Photos marked unusable in the period (models, stations and operators of ``f``; they have no labels)."""
    where, params = source.condition(replace(_scope(f, first_day, last_day), unusable=True))
    with store.connect() as con:
        return int(con.execute(f"SELECT {source.tally()} FROM {source.relation} WHERE {where}", params).fetchone()[0])


def _sql(
    f: InspectionFilter,
    period: Period,
    first_day: date | None,
    last_day: date,
    scan_from: date | None,
    source: Source = RAW,
):
    params: list[Any] = []

    def add(condition: tuple[str, list[Any]]) -> str:
        params.extend(condition[1])
        return condition[0]

    tz = f.timezone
    in_period = add(source.condition(InspectionFilter(date_from=first_day, timezone=tz))) if first_day else "TRUE"
    last7 = add(
        source.condition(InspectionFilter(date_from=last_day - timedelta(days=6), date_to=last_day, timezone=tz))
    )
    prev7 = add(
        source.condition(
            InspectionFilter(date_from=last_day - timedelta(days=13), date_to=last_day - timedelta(days=7), timezone=tz)
        )
    )
    ok = {
        d: add(source.condition(InspectionFilter().with_labels(d, f.labels(d)))) if f.labels(d) else "TRUE"
        for d in CROSS_DIMENSIONS
    }
    day = "CAST(timezone(?, timezone('UTC', created_at)) AS DATE)"
    if source.rollup:  # the offsets of the days scanned spelled out (rows of an "all" period older than 5 years:
        # converted by the database); the rows, the reference the tests compare with, keep the conversion
        start = datetime.combine(scan_from or last_day - timedelta(days=5 * 366), time()) - timedelta(days=1)
        day = counts.local_day_sql(tz, start, datetime.combine(last_day, time()) + timedelta(days=2))
    params.append(tz)
    where = add(source.condition(_scope(f, scan_from, last_day if period.key != "all" else None)))
    params.append([s for s, rank in SEVERITY_RANK.items() if rank >= MEDIUM_RANK])

    def all_but(dimension: str | None) -> str:
        return " AND ".join(f"ok_{d}" for d in CROSS_DIMENSIONS if d != dimension)

    tally = Source("counts").tally  # over the grouped rows, each with its count n
    sql = f"""
    WITH scanned AS (
        SELECT
            defect,
            is_defect,
            CASE WHEN is_defect THEN coalesce(severity, '{NO_VALUE}') END AS sev,
            CASE WHEN is_defect THEN coalesce(location, '{NO_VALUE}') END AS loc,
            coalesce(action, '{NO_VALUE}') AS act,
            {in_period} AS in_period,
            {last7} AS in_last7,
            {prev7} AS in_prev7,
            {ok["defect"]} AS ok_defect,
            {ok["severity"]} AS ok_severity,
            {ok["location"]} AS ok_location,
            {ok["action"]} AS ok_action,
            {day} AS day,
            coalesce(needs_review, FALSE) AND NOT reviewed AS open_review,
            no_defect_label{", n" if source.rollup else ""}
        FROM {source.relation}
        WHERE {where}
    ), grouped AS (
        SELECT {", ".join(_SCANNED)}, {source.tally()} AS n FROM scanned GROUP BY {", ".join(_SCANNED)}
    ), flagged AS (
        SELECT *, in_period AND {all_but(None)} AS counted,
            is_defect AND lower(sev) IN (SELECT unnest(?::VARCHAR[])) AS serious
        FROM grouped
    )
    SELECT
        GROUPING(defect, is_defect, sev, loc, act, day) AS grouping_id,
        defect, is_defect, sev, loc, act, day,
        {tally("counted")} AS n,
        {tally("counted AND is_defect")} AS defects,
        {tally(f"in_period AND {all_but('defect')}")} AS n_but_defect,
        {tally(f"in_period AND {all_but('severity')}")} AS n_but_severity,
        {tally(f"in_period AND {all_but('location')}")} AS n_but_location,
        {tally(f"in_period AND {all_but('action')}")} AS n_but_action,
        {tally("counted AND serious")} AS serious,
        {tally("counted AND open_review")} AS backlog,
        {tally(f"in_last7 AND {all_but(None)}")} AS last7,
        {tally(f"in_last7 AND {all_but(None)} AND is_defect")} AS last7_defects,
        {tally(f"in_prev7 AND {all_but(None)}")} AS prev7,
        {tally(f"in_prev7 AND {all_but(None)} AND is_defect")} AS prev7_defects,
        min(day) FILTER (WHERE in_period) AS first_day,
        max(day) FILTER (WHERE in_period) AS last_day,
        -- Once, over the grouped rows (an aggregate with DISTINCT in the grouping sets made PostgreSQL sort the
        -- rows for every set instead of hashing them: a third of the whole history's time).
        (SELECT array_agg(DISTINCT no_defect_label) FROM grouped WHERE no_defect_label IS NOT NULL) AS no_defect_labels
    FROM flagged
    GROUP BY GROUPING SETS ((defect, is_defect, sev), (sev), (loc), (act), (day), ())
    """
    return sql, params


# The columns of the scanned rows that the aggregates read: the rows are first counted by all of them together
# (a few thousand groups), so the grouping sets run over those rather than over every row scanned.
_SCANNED = (
    *("defect", "is_defect", "sev", "loc", "act", "in_period", "in_last7", "in_prev7"),
    *("ok_defect", "ok_severity", "ok_location", "ok_action", "day", "open_review", "no_defect_label"),
)
# Whether a group is serious (defective at medium severity or above) is decided per group, not per row scanned:
# ``sev`` is the severity of a defective group ('—' when it has none, which no rank lists).
# GROUPING() bit masks (1 = column not grouped), columns in the order defect, is_defect, sev, loc, act, day.
_SETS = {"defect_severity": 0b000111, "severity": 0b110111, "location": 0b111011, "action": 0b111101}
_SETS |= {"day": 0b111110, "total": 0b111111}


def dashboard_data(
    store: Store,
    f: InspectionFilter = InspectionFilter(),
    period: Period = Period(),
    *,
    include_no_defect: bool = False,
    today: date | None = None,
    source: Source | None = None,
) -> DashboardData:
    """All numbers of the Dashboard for the inspections of ``f`` over ``period`` (days in ``f.timezone``),
    from one query. ``f``'s own date range is replaced by the period's. ``source``: what to read (default: the
    roll-up when it answers ``f``, :func:`source_for`; tests compare both)."""
    source = source or source_for(replace(f, date_from=None, date_to=None))
    today = today or local_today(f.timezone)
    first_day, last_day = period.days(today)
    anchor = last_day or today
    scan_from = None if first_day is None else min(first_day, anchor - timedelta(days=2 * COMPARE_DAYS - 1))
    sql, params = _sql(f, period, first_day, anchor, scan_from, source)
    last = None if period.key == "all" else anchor
    with store.sharing_connection():  # one connection for the three queries
        with store.connect() as con:
            rows = con.execute(sql, params).df()
        unusable = _unusable_count(store, f, first_day, last, source)
        by_station, by_operator = comparisons(store, f, first_day, last, COMPARE_BY, source=source)
    data = _shape(f, period, include_no_defect, rows, first_day, anchor)
    return replace(data, kpis=replace(data.kpis, unusable=unusable), by_station=by_station, by_operator=by_operator)


COMPARE_BY = ("station", "operator")
_COMPARED = ["group", "action", "count", "share", "inspected", "defects", "defect_rate"]


def comparison(
    store: Store,
    f: InspectionFilter,
    first_day: date | None,
    last_day: date | None,
    by: str,
    *,
    source: Source | None = None,
) -> pd.DataFrame:
    """Stations (or operators) side by side over the period: per group and action the count, and per group the
    inspections, defects and defect rate. Every condition of ``f`` applies (unusable photos never count)."""
    return comparisons(store, f, first_day, last_day, (by,), source=source)[0]


def comparisons(
    store: Store,
    f: InspectionFilter,
    first_day: date | None,
    last_day: date | None,
    by: tuple[str, ...],
    *,
    source: Source | None = None,
) -> list[pd.DataFrame]:
    """:func:`comparison` by each of ``by`` (station, operator), from one query."""
    for name in by:
        if name not in COMPARE_BY:
            raise ValueError(f"compare by one of {', '.join(COMPARE_BY)}, not {name!r}")
    scope = replace(f, date_from=first_day, date_to=last_day, unusable=False)
    source = source or source_for(scope)
    where, params = source.condition(scope)
    rows = f"(SELECT * FROM {source.relation} WHERE {where}) v"
    prefix = "v." if source.rollup else "b."
    if not source.rollup:
        rows += " LEFT JOIN batches b ON b.batch_id = v.batch_id"
    picked = ", ".join(f"{prefix}{name} AS {name}" for name in by)
    columns = ", ".join(by)
    sets = ", ".join(f"({name}, action)" for name in by)
    # Counted by every group column and action first (one hash over the rows scanned), then the grouping sets
    # over those few dozen rows (grouping sets over the rows themselves hash every row once per set).
    sql = f"""SELECT GROUPING({columns}) AS grouping_id, {columns}, action,
            CAST(sum(count) AS BIGINT) AS count, CAST(sum(defects) AS BIGINT) AS defects
        FROM (
            SELECT {picked}, coalesce(v.action, '{NO_VALUE}') AS action, {source.tally()} AS count,
                {source.tally("v.is_defect")} AS defects
            FROM {rows}
            GROUP BY {", ".join(f"{prefix}{name}" for name in by)}, coalesce(v.action, '{NO_VALUE}')
        ) g
        GROUP BY GROUPING SETS ({sets})"""
    with store.connect() as con:
        frame = con.execute(sql, params).df()
    frames = []
    for k, name in enumerate(by):
        mask = (1 << len(by)) - 1 - (1 << (len(by) - 1 - k))  # every column of ``by`` but this one not grouped
        part = frame[frame["grouping_id"] == mask]
        part = pd.DataFrame(
            {
                "group": part[name].where(part[name].notna(), NO_VALUE).astype(str),
                "action": part["action"].astype(str),
                "count": part["count"].astype(int),
                "defects": part["defects"].astype(int),
            }
        )
        frames.append(_compared(part.sort_values(["group", "action"]).reset_index(drop=True)))
    return frames


def _compared(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame(columns=_COMPARED)
    totals = frame.groupby("group")[["count", "defects"]].transform("sum")
    frame["inspected"] = totals["count"].astype(int)
    frame["defects"] = totals["defects"].astype(int)
    frame["share"] = frame["count"] / frame["inspected"]
    frame["defect_rate"] = frame["defects"] / frame["inspected"]
    return frame[_COMPARED]


def _rows(rows: pd.DataFrame, name: str) -> pd.DataFrame:
    return rows[rows["grouping_id"] == _SETS[name]]


def _with_share(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    total = frame["count"].sum()
    frame["share"] = frame["count"] / total if total else 0.0
    return frame


def _shape(
    f: InspectionFilter,
    period: Period,
    include_no_defect: bool,
    rows: pd.DataFrame,
    first_day: date | None,
    last_day: date,
) -> DashboardData:
    """The query's grouping-set rows -> the frames and KPIs the Dashboard draws."""
    total = _rows(rows, "total")
    t = total.iloc[0] if len(total) else None
    raw_labels = t["no_defect_labels"] if t is not None else None
    # list(...) FILTER over no rows is NULL, which pandas hands back as pd.NA (not None)
    labels = tuple(sorted(raw_labels)) if pd.api.types.is_list_like(raw_labels) else ()
    defect_severity, by_defect, top = _defect_frames(rows, include_no_defect)
    by_severity = _one_dimension(rows, "severity", "sev", keep_null=False)
    by_severity = _with_share(
        by_severity.set_index("severity").loc[order_severities(by_severity["severity"])].reset_index()
    )
    by_location = _one_dimension(rows, "location", "loc", keep_null=False)
    by_location = _with_share(by_location.sort_values(["count", "location"], ascending=[False, True]))
    by_action = _one_dimension(rows, "action", "act", keep_null=True)
    by_action = _with_share(by_action.set_index("action").loc[order_actions(by_action["action"])].reset_index())
    if first_day is None and t is not None and pd.notna(t["first_day"]):
        first_day = pd.Timestamp(t["first_day"]).date()
        last_day = max(last_day, pd.Timestamp(t["last_day"]).date())
    return DashboardData(
        filter=f,
        period=period,
        include_no_defect=include_no_defect,
        first_day=first_day,
        last_day=last_day,
        kpis=_kpis(t, top),
        defect_severity=defect_severity,
        by_defect=by_defect,
        by_severity=by_severity,
        by_location=by_location,
        by_action=by_action,
        daily=_daily(_rows(rows, "day"), first_day, last_day),
        no_defect_labels=labels,
    )


def _defect_frames(rows: pd.DataFrame, include_no_defect: bool) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """(defect type x severity, defect types, [(top defect type, count)]), the no-defect class only if asked."""
    ds = _rows(rows, "defect_severity")
    ds = ds[ds["n_but_defect"] > 0]
    ds_all = ds if include_no_defect else ds[ds["is_defect"].fillna(False).astype(bool)]
    defect_severity = pd.DataFrame(
        {
            "defect": ds_all["defect"].astype(str),
            "severity": ds_all["sev"].fillna(NO_VALUE).astype(str),
            "is_defect": ds_all["is_defect"].fillna(False).astype(bool),
            "count": ds_all["n_but_defect"].astype(int),
        }
    )
    defect_severity = defect_severity.sort_values(["defect", "severity"]).reset_index(drop=True)
    chart_total = int(ds["n_but_defect"].sum())
    defect_severity["share"] = defect_severity["count"] / chart_total if chart_total else 0.0
    by_defect = (
        defect_severity.groupby(["defect", "is_defect"], as_index=False)["count"]
        .sum()
        .sort_values(["count", "defect"], ascending=[False, True])
    )
    per_type = ds_all[ds_all["is_defect"].fillna(False).astype(bool)].groupby("defect")["n"].sum()
    per_type = per_type[per_type > 0]
    top = sorted(per_type.items(), key=lambda kv: (-kv[1], kv[0]))[:1]
    return defect_severity, _with_share(by_defect), top


def _one_dimension(rows: pd.DataFrame, name: str, column: str, keep_null: bool) -> pd.DataFrame:
    """Counts by one label (each chart counted with every cross-filter but its own)."""
    part = _rows(rows, name)
    if not keep_null:
        part = part[part[column].notna()]
    count = f"n_but_{name}"
    part = part[part[count] > 0]
    return pd.DataFrame({name: part[column].fillna(NO_VALUE).astype(str), "count": part[count].astype(int)})


def _kpis(t: pd.Series | None, top: list) -> Kpis:
    def number(column: str) -> int:
        return int(t[column]) if t is not None and pd.notna(t[column]) else 0

    return Kpis(
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


def filter_options(store: Store) -> dict[str, list[str]]:
    """Values for the model, station and operator pickers."""
    values = store.filter_values(("model_name", "station", "operator"))
    return {"models": values["model_name"], "stations": values["station"], "operators": values["operator"]}
