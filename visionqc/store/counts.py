"""The Dashboard's roll-up: how many visible inspections there are per UTC hour and per combination of the values
the Dashboard groups and filters by, kept in step with the inspections in the transaction of every write.

``inspection_counts`` holds one row per (UTC hour, station, operator, model name and version, no-defect class,
effective defect, severity, location, action, needs review, reviewed, unusable) with its number of inspections
``n``; soft-deleted inspections and the second opinions of a re-inspection (the view ``counted_inspections``) are
in no row, as they are in no figure. It answers the Dashboard's aggregates
without reading the inspections (on PostgreSQL a scan of a million rows takes seconds; the roll-up has a few
hundred thousand narrow rows at most and far fewer when a plant inspects many parts an hour).

The raw rows stay the truth: every write that changes one of those values (a chunk of new inspections, a review
or correction, "not a part", a delete or restore) takes the rows it touches out of the roll-up before it changes
them and puts them back after, as one upsert of the difference (:func:`recounting`; new rows: :func:`count`), in
its own transaction, so a crash or a conflict leaves both as they were. :func:`rebuild` recomputes the whole
table from the rows (the migration that created it did that; a seed written in SQL calls it). Rows whose count
fell to zero stay, and are read as nothing (``n > 0``).

A query can use the roll-up only if every condition it has is on those values and every local day it groups by
is a whole number of UTC hours (:func:`source_for`: a time zone whose offset is a whole hour); otherwise it
reads the inspections. Either way it gets the same numbers.

A group's row is found by ``bucket``, the MD5 of its values (NULLs included, which a primary key over the
columns themselves would not allow), so a write adds to it with ``INSERT ... ON CONFLICT DO UPDATE``; on
PostgreSQL two writers of one group wait for each other on that row (rows are upserted in ``bucket`` order).
Changing the dimensions or the bucket needs a new migration that recreates the table.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from visionqc.filters import InspectionFilter
from visionqc.store.query import build_where

TABLE = "inspection_counts"
# The values a row counts by besides the hour, as inspection_view (and batches) names them.
DIMENSIONS = (
    "station",
    "operator",
    "model_name",
    "model_version",
    "no_defect_label",
    "defect",
    "severity",
    "location",
    "action",
    "needs_review",
    "reviewed",
    "unusable",
)
CREATE_TABLE = f"""CREATE TABLE {TABLE} (
    bucket VARCHAR PRIMARY KEY, hour TIMESTAMP NOT NULL, station VARCHAR, operator VARCHAR, model_name VARCHAR,
    model_version VARCHAR, no_defect_label VARCHAR, defect VARCHAR, severity VARCHAR, location VARCHAR,
    action VARCHAR, needs_review BOOLEAN, reviewed BOOLEAN NOT NULL, unusable BOOLEAN NOT NULL, n BIGINT NOT NULL)"""
# The filter fields the roll-up can answer (dates as calendar days only: a datetime bound is any instant).
ROLLUP_FIELDS = frozenset(
    {
        "date_from",
        "date_to",
        "timezone",
        "defects",
        "severities",
        "locations",
        "actions",
        "model_names",
        "model_versions",
        "stations",
        "operators",
        "needs_review",
        "reviewed",
        "unusable",
    }
)
# The roll-up with the column names build_where uses (``created_at`` is the hour's start), rows counting nothing
# left out. Conditions on stations and operators are on its own columns (``build_where(..., batch_columns=True)``).
RELATION = f"""(SELECT hour AS created_at, {", ".join(DIMENSIONS)}, defect <> no_defect_label AS is_defect, n
    FROM {TABLE} WHERE n > 0) rollup"""


def _text(column: str) -> str:
    """A value as text that no other value of the column gives: its length, a colon, the value; '-' for NULL."""
    value = f"CAST({column} AS VARCHAR)"
    return f"coalesce(CAST(length({value}) AS VARCHAR) || ':' || {value}, '-')"


BUCKET = "md5(" + " || '|' || ".join(["CAST(hour AS VARCHAR)", *map(_text, DIMENSIONS)]) + ")"


_DIMS = ", ".join(DIMENSIONS)
_UPSERT = f"ON CONFLICT (bucket) DO UPDATE SET n = {TABLE}.n + excluded.n"


def groups_sql(rows: str, sign: int = 1) -> str:
    """``sign`` x the rows of ``rows`` (a relation with ``inspection_view``'s columns, visible rows only) counted by
    the roll-up's groups: ``bucket, hour, <DIMENSIONS>, n``."""
    if sign not in (1, -1):
        raise ValueError("sign must be 1 or -1")
    values = ", ".join(f"b.{d}" if d in ("station", "operator") else f"v.{d}" for d in DIMENSIONS)
    return f"""SELECT {BUCKET} AS bucket, hour, {_DIMS}, {sign} * count(*) AS n FROM (
            SELECT date_trunc('hour', v.created_at) AS hour, {values}
            FROM {rows} v LEFT JOIN batches b ON b.batch_id = v.batch_id
        ) c
        GROUP BY hour, {_DIMS}"""


def upsert_sql(rows: str, sign: int = 1, *, by_hour: bool = False) -> str:
    """Add ``sign`` x the rows of ``rows`` (see :func:`groups_sql`) to the roll-up, by group: in ``bucket`` order
    (concurrent writers lock groups in one order), or ``by_hour`` when filling the whole table (rows of an hour
    stored together: a period reads fewer pages, as later writes do naturally)."""
    return f"""INSERT INTO {TABLE} (bucket, hour, {_DIMS}, n)
        {groups_sql(rows, sign)}
        ORDER BY {"hour, 1" if by_hour else "1"}
        {_UPSERT}"""


# The visible inspections as inspection_view shows them, over the base table: the migration that creates the
# roll-up runs before the views are (re)created. Keep in step with schema.VIEWS (tests compare the two).
def _base_rows(condition: str = "") -> str:
    return (
        """(SELECT i.created_at, i.batch_id, i.model_name, i.model_version, i.no_defect_label,
        CASE WHEN i.reviewed_at IS NULL THEN i.pred_defect ELSE i.rev_defect END AS defect,
        CASE WHEN i.reviewed_at IS NULL THEN i.pred_severity ELSE i.rev_severity END AS severity,
        CASE WHEN i.reviewed_at IS NULL THEN i.pred_location ELSE i.rev_location END AS location,
        CASE WHEN i.reviewed_at IS NULL THEN i.pred_action ELSE i.rev_action END AS action,
        i.needs_review, i.reviewed_at IS NOT NULL AS reviewed, i.unusable_reason IS NOT NULL AS unusable
    FROM inspections i WHERE i.deleted_at IS NULL"""
        + condition
        + ")"
    )


BACKFILL = upsert_sql(_base_rows(), by_hour=True)  # migration 9, before second opinions were marked (11)
BACKFILL_FIRST_OPINIONS = upsert_sql(_base_rows(" AND NOT i.second_opinion"), by_hour=True)
COUNTED = "counted_inspections"  # the visible inspections, second opinions left out (schema.VIEWS)
_BY_IDS = f"(SELECT * FROM {COUNTED} WHERE inspection_id IN (SELECT unnest(?::BIGINT[])))"


def _lock_clause(con) -> str:
    """Row locks for a read that decides a write: PostgreSQL reads committed rows without waiting for a writer;
    DuckDB (one writing process, conflicting transactions abort) has no ``FOR UPDATE``."""
    return " FOR UPDATE" if getattr(con, "engine", "duckdb") == "postgresql" else ""


def lock(con, ids: Sequence[int]) -> None:
    """On PostgreSQL, lock the inspections ``ids`` until the transaction ends, in id order: what the transaction
    then reads of them (their labels, for the roll-up and the audit trail) no other writer changes meanwhile."""
    clause = _lock_clause(con)
    if clause and ids:
        con.execute(
            f"SELECT inspection_id FROM inspections WHERE inspection_id IN (SELECT unnest(?::BIGINT[])) "
            f"ORDER BY inspection_id{clause}",
            [sorted({int(i) for i in ids})],
        )


_BEFORE = "counts_before"  # a temporary table: the groups of a write's rows before it, negated


@contextmanager
def recounting(con, ids: Sequence[int]) -> Iterator[None]:
    """Keep the roll-up in step with a write (in the block) that changes the inspections ``ids``: their groups
    before it are noted (negated) in a temporary table, and after it the difference is added in one upsert,
    groups whose count did not change left alone. The same numbers as taking them out before and putting them in
    after (:func:`count`), with one upsert instead of two: on DuckDB each is a write to an indexed table that its
    commit has to save (a 100-row review scattered over months touches a hundred groups twice)."""
    ids = sorted({int(i) for i in ids})
    if not ids:
        yield
        return
    con.execute(f"CREATE TEMPORARY TABLE {_BEFORE} AS {groups_sql(_BY_IDS, -1)}", [ids])
    yield
    con.execute(
        f"""INSERT INTO {TABLE} (bucket, hour, {_DIMS}, n)
        SELECT bucket, hour, {_DIMS}, CAST(sum(n) AS BIGINT) AS n
        FROM (SELECT * FROM {_BEFORE} UNION ALL {groups_sql(_BY_IDS, 1)}) d
        GROUP BY bucket, hour, {_DIMS}
        HAVING sum(n) <> 0
        ORDER BY 1
        {_UPSERT}""",
        [ids],
    )
    con.execute(f"DROP TABLE {_BEFORE}")


def count(con, ids: Sequence[int]) -> None:
    """Put the inspections ``ids`` (those visible) into the roll-up: after a write added or changed them."""
    if ids:
        con.execute(upsert_sql(_BY_IDS, 1), [sorted({int(i) for i in ids})])


def rebuild(con) -> None:
    """Recompute the whole roll-up from the inspections (after rows were written without the store, e.g. a seed)."""
    con.execute(f"DELETE FROM {TABLE}")
    con.execute(upsert_sql(COUNTED, by_hour=True))


@dataclass(frozen=True)
class Source:
    """What a Dashboard query reads: the inspections (a row each) or the roll-up (:data:`RELATION`: a
    count ``n`` per row, with the batch's station and operator on the row). The same SQL over either."""

    name: str = "inspections"  # or "counts"

    def __post_init__(self) -> None:
        if self.name not in ("inspections", "counts"):
            raise ValueError(f"source must be 'inspections' or 'counts', not {self.name!r}")

    @property
    def rollup(self) -> bool:
        return self.name == "counts"

    @property
    def relation(self) -> str:
        return RELATION if self.rollup else COUNTED

    def condition(self, f: InspectionFilter) -> tuple[str, list[Any]]:
        """A condition from the store's query builder, without its soft-delete clause (both relations hide
        deleted inspections already)."""
        return build_where(replace(f, deleted="all"), batch_columns=self.rollup)

    def tally(self, condition: str | None = None) -> str:
        """The number of inspections (meeting ``condition``): rows, or the sum of the roll-up's counts."""
        if not self.rollup:
            return "count(*)" if condition is None else f"count(*) FILTER (WHERE {condition})"
        total = "sum(n)" if condition is None else f"sum(n) FILTER (WHERE {condition})"
        return f"CAST(coalesce({total}, 0) AS BIGINT)"


RAW = Source()  # the inspections themselves


# --- which source answers a query -----------------------------------------------------------------
def source_for(f: InspectionFilter) -> str:
    """``"counts"`` when the roll-up answers every condition of ``f`` exactly, else ``"inspections"``."""
    if f.deleted != "hide" or not set(f.changed_fields()) <= ROLLUP_FIELDS:
        return "inspections"
    if any(isinstance(bound, datetime) for bound in (f.date_from, f.date_to)):
        return "inspections"
    return "counts" if whole_hour_zone(f.timezone) else "inspections"


_FROM = int(datetime(1970, 1, 1, tzinfo=UTC).timestamp())
_TO = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())
_STEP = 86400  # no zone keeps an offset for less than a day


@lru_cache(maxsize=256)
def whole_hour_zone(name: str) -> bool:
    """Whether every local midnight of zone ``name`` is a whole UTC hour (1970-2100): its offset is a whole
    number of hours and changes only at a whole UTC hour. Then an hour's inspections all fall on one local day,
    and a local day is a set of whole hours. Zones such as Asia/Kolkata (+05:30) are not."""
    zone = ZoneInfo(name)

    def offset(ts: int) -> timedelta:
        return datetime.fromtimestamp(ts, zone).utcoffset() or timedelta(0)

    hour = timedelta(hours=1)
    before, ts = offset(_FROM), _FROM
    if before % hour:
        return False
    while ts < _TO:
        after = offset(ts + _STEP)
        if after % hour:
            return False
        if after != before:  # find the second it changed at
            low, high = ts, ts + _STEP
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == before else (low, middle)
            if high % 3600:
                return False
        before, ts = after, ts + _STEP
    return True


def utc_offsets(name: str, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """Zone ``name``'s UTC offset in seconds over ``[start, end)`` (naive UTC), as ``[(from, offset), ...]``: the
    first from ``start``, then one per change (found to the second; a zone keeps an offset for a day at least)."""
    zone = ZoneInfo(name)

    def offset(ts: int) -> int:
        return int((datetime.fromtimestamp(ts, zone).utcoffset() or timedelta(0)).total_seconds())

    ts, stop = int(start.replace(tzinfo=UTC).timestamp()), int(end.replace(tzinfo=UTC).timestamp())
    current = offset(ts)
    spans = [(start, current)]
    while ts < stop:
        step = min(ts + _STEP, stop)
        after = offset(step)
        if after != current:
            low, high = ts, step
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == current else (low, middle)
            spans.append((datetime.fromtimestamp(high, UTC).replace(tzinfo=None), after))
            current = after
        ts = step
    return spans


def local_day_sql(name: str, start: datetime, end: datetime) -> str:
    """SQL for the local calendar day (in zone ``name``) of ``created_at`` (naive UTC) and its one parameter, the
    zone's name. Inside ``[start, end)`` the offsets are spelled out (``created_at`` plus the offset of its span:
    a comparison or two per row, where converting through the zone looks the zone up for every row); outside it
    the database converts. The same day either way."""
    spans = utc_offsets(name, start, end)
    branches = " ".join(
        f"WHEN created_at < {_timestamp(until)} THEN INTERVAL '{offset} seconds'"
        for (_, offset), (until, _) in pairwise(spans)
    )
    last = f"INTERVAL '{spans[-1][1]} seconds'"
    shift = f"CASE {branches} ELSE {last} END" if branches else last
    return (
        f"CASE WHEN created_at >= {_timestamp(start)} AND created_at < {_timestamp(end)} "
        f"THEN CAST(created_at + {shift} AS DATE) "
        "ELSE CAST(timezone(?, timezone('UTC', created_at)) AS DATE) END"
    )


def _timestamp(value: datetime) -> str:
    return f"TIMESTAMP '{value:%Y-%m-%d %H:%M:%S}'"
