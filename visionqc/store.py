"""The inspection store: one DuckDB file plus a content-addressed image folder under the data directory.

DuckDB lets one process at a time open a file for writing, and an open connection blocks every other
process. The app and ``python -m visionqc inspect`` share the file, so :class:`Store` never keeps a
connection open: each operation opens a short-lived connection, retrying with back-off while another
process holds the lock, and every write is one transaction (a crash leaves no half-written rows).

All SQL is parameterised. The one query builder, :func:`build_where`, turns a :class:`HistoryFilter`
into a WHERE clause over ``inspection_view`` that History, Explore and the dashboard all reuse.
Timestamps are naive ``TIMESTAMP`` values in UTC. This module does not import torch.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from visionqc import config

DB_FILE = "visionqc.duckdb"
UTF8_BOM = b"\xef\xbb\xbf"
REVIEW_KINDS = ("correct", "confirm", "delete", "restore")
T = TypeVar("T")
# duckdb.connect() and close() share one database instance per file inside a process; opening while
# another thread closes the last connection races in DuckDB, so both happen under this lock.
_INSTANCE_LOCK = threading.Lock()


class StoreError(RuntimeError):
    """A problem with the database the user can act on; ``str(err)`` says what to do."""


class StoreBusyError(StoreError):
    """Another process kept the database locked for longer than the store is willing to wait."""


def utc_now() -> datetime:
    """Now as a naive UTC datetime, the form every timestamp column holds."""
    return datetime.now(UTC).replace(tzinfo=None)


# --- schema -------------------------------------------------------------------------------------
# Each migration is a list of statements taking the database from version n-1 to n. Never edit a
# released migration: add a new one. Views are derived and recreated after every migration run.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL)",
            """CREATE TABLE batches (
                batch_id VARCHAR PRIMARY KEY, created_at TIMESTAMP NOT NULL, station VARCHAR, operator VARCHAR,
                note VARCHAR, source VARCHAR NOT NULL, model_name VARCHAR, model_version VARCHAR,
                status VARCHAR NOT NULL)""",
            """CREATE TABLE images (
                sha256 VARCHAR PRIMARY KEY, width INTEGER, height INTEGER, format VARCHAR, byte_size BIGINT,
                path VARCHAR, thumb_path VARCHAR, first_seen TIMESTAMP NOT NULL)""",
            """CREATE TABLE inspections (
                inspection_id BIGINT PRIMARY KEY, batch_id VARCHAR NOT NULL, sha256 VARCHAR NOT NULL,
                file_name VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, model_name VARCHAR,
                model_version VARCHAR, no_defect_label VARCHAR, pred_defect VARCHAR, pred_defect_conf DOUBLE,
                pred_severity VARCHAR, pred_severity_conf DOUBLE, pred_location VARCHAR,
                pred_location_conf DOUBLE, pred_action VARCHAR, probabilities JSON, ood_score DOUBLE,
                needs_review BOOLEAN, review_reason VARCHAR, duplicate_of BIGINT, rev_defect VARCHAR,
                rev_severity VARCHAR, rev_location VARCHAR, rev_action VARCHAR, reviewed_at TIMESTAMP,
                reviewed_by VARCHAR, outlier_score DOUBLE, deleted_at TIMESTAMP)""",
            "CREATE TABLE embeddings (inspection_id BIGINT PRIMARY KEY, vector FLOAT[])",
            """CREATE TABLE reviews (
                review_id BIGINT PRIMARY KEY, inspection_id BIGINT NOT NULL, created_at TIMESTAMP NOT NULL,
                reviewer VARCHAR NOT NULL, kind VARCHAR NOT NULL, defect VARCHAR, severity VARCHAR,
                location VARCHAR, action VARCHAR, note VARCHAR, previous JSON)""",
            """CREATE TABLE tags (
                inspection_id BIGINT NOT NULL, tag VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL,
                PRIMARY KEY (inspection_id, tag))""",
            """CREATE TABLE failures (
                failure_id BIGINT PRIMARY KEY, batch_id VARCHAR NOT NULL, file_name VARCHAR NOT NULL,
                reason VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL)""",
            "CREATE SEQUENCE inspection_seq START 1",
            "CREATE SEQUENCE review_seq START 1",
            "CREATE SEQUENCE failure_seq START 1",
        ],
    ),
    (
        2,
        [
            # Duplicates (same SHA-256 as an earlier inspection) are reported, not classified again.
            # inspections.duplicate_of (v1) stays for old files but is no longer written.
            """CREATE TABLE duplicates (
                duplicate_id BIGINT PRIMARY KEY, batch_id VARCHAR NOT NULL, file_name VARCHAR NOT NULL,
                sha256 VARCHAR NOT NULL, inspection_id BIGINT NOT NULL, created_at TIMESTAMP NOT NULL)""",
            "CREATE SEQUENCE duplicate_seq START 1",
            "ALTER TABLE batches ADD COLUMN finished_at TIMESTAMP",
            "UPDATE batches SET finished_at = created_at WHERE status = 'complete'",
        ],
    ),
    (
        3,
        [
            # Explore's near-duplicate search: the most similar earlier inspection and the cosine similarity,
            # so History can sort by it (the 'near-duplicate' tag alone made them searchable, not sortable).
            "ALTER TABLE inspections ADD COLUMN near_duplicate_of BIGINT",
            "ALTER TABLE inspections ADD COLUMN near_duplicate_similarity DOUBLE",
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

# Effective labels: the latest review when there is one (even if it cleared severity), else the prediction.
VIEWS = [
    """CREATE OR REPLACE VIEW inspection_view_all AS
    SELECT i.*,
        CASE WHEN i.reviewed_at IS NULL THEN i.pred_defect ELSE i.rev_defect END AS defect,
        CASE WHEN i.reviewed_at IS NULL THEN i.pred_severity ELSE i.rev_severity END AS severity,
        CASE WHEN i.reviewed_at IS NULL THEN i.pred_location ELSE i.rev_location END AS location,
        CASE WHEN i.reviewed_at IS NULL THEN i.pred_action ELSE i.rev_action END AS action,
        i.pred_defect_conf AS confidence,
        i.reviewed_at IS NOT NULL AS reviewed,
        (CASE WHEN i.reviewed_at IS NULL THEN i.pred_defect ELSE i.rev_defect END) <> i.no_defect_label
            AS is_defect,
        i.deleted_at IS NOT NULL AS deleted
    FROM inspections i""",
    "CREATE OR REPLACE VIEW inspection_view AS SELECT * FROM inspection_view_all WHERE deleted_at IS NULL",
]


# --- the one query builder ----------------------------------------------------------------------
@dataclass(frozen=True)
class HistoryFilter:
    """What History, Explore and the dashboard filter inspections by. Empty fields do not filter.

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
    - ``batches``: the row belongs to one of these batch ids. ``stations``: its batch was recorded at one
      of these stations.
    - ``file_name``: case-insensitive substring of the file name.
    - Tags: ``tags_all`` — the row carries **every** listed tag (AND); ``tags_any`` — it carries **at
      least one** of them (OR); ``tags_none`` — it carries **none** of them (NOT). The three combine
      with AND, e.g. all of {retrain}, any of {scratch, dent}, none of {ignore}. Tags match exactly
      (case-sensitive) after trimming spaces, as :meth:`Store.add_tags` stores them.
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
    stations: Sequence[str | None] = ()
    ids: Sequence[int] | None = None
    deleted: str = "hide"


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


def _tag_ids(tags: list[str], params: list[Any], *, every: bool) -> str:
    """Ids of inspections carrying any (``every=False``) or all (``every=True``) of ``tags``."""
    params.append(tags)
    sql = "SELECT inspection_id FROM tags WHERE tag IN (SELECT unnest(?::VARCHAR[]))"
    if every:
        sql += " GROUP BY inspection_id HAVING count(*) = ?"
        params.append(len(tags))
    return sql


def build_where(f: HistoryFilter) -> tuple[str, list[Any]]:
    """A parameterised WHERE clause (without the keyword) over ``inspection_view`` columns, and its params.

    Use as ``f"SELECT ... FROM inspection_view_all WHERE {sql}"`` (or ``inspection_view``, which already
    hides soft-deleted rows); column names are unqualified.
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
        where.append("contains(lower(file_name), lower(?))")
        params.append(f.file_name.strip())
    if f.stations:
        station_params: list[Any] = []
        cond = _in_list("station", list(f.stations), station_params)
        where.append(f"batch_id IN (SELECT batch_id FROM batches WHERE {cond})")
        params.extend(station_params)
    # Tags are compared as stored: trimmed, case-sensitive.
    for tags, membership, every in (
        (_clean_tags(f.tags_all), "IN", True),
        (_clean_tags(f.tags_any), "IN", False),
        (_clean_tags(f.tags_none), "NOT IN", False),
    ):
        if tags:
            where.append(f"inspection_id {membership} ({_tag_ids(tags, params, every=every)})")
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
    "outlier_score",
    "near_duplicate_similarity",
    "model_name",
)
DISTINCT_COLUMNS = {
    "defect": ("defect", "inspection_view"),
    "severity": ("severity", "inspection_view"),
    "location": ("location", "inspection_view"),
    "action": ("action", "inspection_view"),
    "model_name": ("model_name", "inspection_view"),
    "batch_id": ("batch_id", "batches"),
    "station": ("station", "batches"),
    "operator": ("operator", "batches"),
    "reviewed_by": ("reviewer", "reviews"),
    "tag": ("tag", "tags"),
}
# Columns of the CSV export, in order (effective labels first, then the original prediction).
EXPORT_COLUMNS = (
    "inspection_id",
    "created_at",
    "batch_id",
    "file_name",
    "defect",
    "severity",
    "location",
    "action",
    "confidence",
    "needs_review",
    "review_reason",
    "reviewed",
    "reviewed_by",
    "reviewed_at",
    "pred_defect",
    "pred_defect_conf",
    "pred_severity",
    "pred_severity_conf",
    "pred_location",
    "pred_location_conf",
    "pred_action",
    "ood_score",
    "model_name",
    "model_version",
    "sha256",
)


# --- records written by ingest ------------------------------------------------------------------
@dataclass
class InspectionRecord:
    """One classified image, ready to be written (built by :mod:`visionqc.ingest`)."""

    inspection_id: int
    sha256: str
    file_name: str
    created_at: datetime
    model_name: str
    model_version: str
    no_defect_label: str
    pred_defect: str
    pred_defect_conf: float
    pred_severity: str | None
    pred_severity_conf: float | None
    pred_location: str | None
    pred_location_conf: float | None
    pred_action: str
    probabilities: dict[str, dict[str, float]]
    ood_score: float | None
    needs_review: bool
    review_reason: str | None
    embedding: np.ndarray
    # the image row (inserted once per SHA-256)
    width: int
    height: int
    format: str
    byte_size: int
    path: str  # relative to the data directory, POSIX separators
    thumb_path: str


@dataclass
class DuplicateRecord:
    file_name: str
    sha256: str
    inspection_id: int  # the earlier inspection of the same bytes
    created_at: datetime = field(default_factory=utc_now)


@dataclass
class FailureRecord:
    file_name: str
    reason: str
    created_at: datetime = field(default_factory=utc_now)


# Arrow layouts of the chunk tables ingest hands to DuckDB (column names match the tables).
_IMAGE_SCHEMA = pa.schema(
    [
        ("sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("byte_size", pa.int64()),
        ("path", pa.string()),
        ("thumb_path", pa.string()),
        ("first_seen", pa.timestamp("us")),
    ]
)
_INSPECTION_SCHEMA = pa.schema(
    [
        ("inspection_id", pa.int64()),
        ("batch_id", pa.string()),
        ("sha256", pa.string()),
        ("file_name", pa.string()),
        ("created_at", pa.timestamp("us")),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("no_defect_label", pa.string()),
        ("pred_defect", pa.string()),
        ("pred_defect_conf", pa.float64()),
        ("pred_severity", pa.string()),
        ("pred_severity_conf", pa.float64()),
        ("pred_location", pa.string()),
        ("pred_location_conf", pa.float64()),
        ("pred_action", pa.string()),
        ("probabilities", pa.string()),
        ("ood_score", pa.float64()),
        ("needs_review", pa.bool_()),
        ("review_reason", pa.string()),
    ]
)
_EMBEDDING_SCHEMA = pa.schema([("inspection_id", pa.int64()), ("vector", pa.list_(pa.float32()))])
_DUPLICATE_SCHEMA = pa.schema(
    [
        ("file_name", pa.string()),
        ("sha256", pa.string()),
        ("inspection_id", pa.int64()),
        ("created_at", pa.timestamp("us")),
    ]
)
_FAILURE_SCHEMA = pa.schema([("file_name", pa.string()), ("reason", pa.string()), ("created_at", pa.timestamp("us"))])


def _arrow(schema: pa.Schema, records: Sequence[Any], **columns: list[Any]) -> pa.Table:
    """An Arrow table of ``schema`` from dataclass records; ``columns`` gives values not read from attributes."""
    return pa.table(
        {
            f.name: pa.array(columns[f.name] if f.name in columns else [getattr(r, f.name) for r in records], f.type)
            for f in schema
        },
        schema=schema,
    )


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


class Store:
    """The inspection database under ``home`` (default: :func:`visionqc.config.data_dir`).

    Opening migrates the schema to :data:`SCHEMA_VERSION`. No connection outlives a method call.
    """

    def __init__(self, home: str | Path | None = None, *, lock_timeout: float = 60.0):
        self.home = Path(home) if home is not None else config.data_dir()
        self.home.mkdir(parents=True, exist_ok=True)
        self.db_path = self.home / DB_FILE
        self.lock_timeout = lock_timeout
        self.migrate()

    # --- connections ----------------------------------------------------------------------------
    def _open(self) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.005
        while True:
            try:
                with _INSTANCE_LOCK:
                    return duckdb.connect(str(self.db_path))
            except duckdb.IOException as exc:
                if not _is_lock_error(exc):
                    raise StoreError(f"cannot open the database {self.db_path}: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise StoreBusyError(
                        f"the database {self.db_path} stayed locked by another VisionQC process for "
                        f"{self.lock_timeout:.0f} s; try again when the other import has finished"
                    ) from exc
                # Jittered exponential back-off: two waiting processes do not retry in lock-step.
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.25)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection (for reads). Close it quickly: it locks out other processes."""
        con = self._open()
        try:
            yield con
        finally:
            with _INSTANCE_LOCK:
                con.close()

    def _write(self, work: Callable[[duckdb.DuckDBPyConnection], T], attempts: int = 8) -> T:
        """Run ``work`` in one transaction, retrying when another thread's transaction conflicts."""
        for attempt in range(attempts):
            with self.connect() as con:
                con.execute("BEGIN TRANSACTION")
                try:
                    result = work(con)
                    con.execute("COMMIT")
                    return result
                except duckdb.TransactionException:
                    _rollback(con)
                    if attempt == attempts - 1:
                        raise
                except BaseException:
                    _rollback(con)
                    raise
            time.sleep(0.01 * 2**attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")

    # --- schema ---------------------------------------------------------------------------------
    @staticmethod
    def _version(con: duckdb.DuckDBPyConnection) -> int:
        has_table = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version' AND schema_name = 'main'"
        ).fetchone()[0]
        if not has_table:
            others = con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main'").fetchone()[0]
            if others:
                raise StoreError("this DuckDB file is not a VisionQC database (it has no schema_version table)")
            return 0
        return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0])

    def schema_version(self) -> int:
        with self.connect() as con:
            return self._version(con)

    def migrate(self) -> int:
        """Bring the file to :data:`SCHEMA_VERSION` in one transaction; returns the version it was at.

        An up-to-date file is only read, so opening a store does not write. The views are recreated
        whenever a migration runs: a change to :data:`VIEWS` needs a new (possibly empty) migration.
        """
        with self.connect() as con:
            current = self._version(con)
        if current == SCHEMA_VERSION:
            return current

        def work(con: duckdb.DuckDBPyConnection) -> int:
            current = self._version(con)  # again, inside the transaction: another process may have migrated
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the database is at schema version {current}, newer than this VisionQC "
                    f"({SCHEMA_VERSION}); update VisionQC"
                )
            for version, statements in MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    con.execute(statement)
                con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, utc_now()])
            if current < SCHEMA_VERSION:
                for statement in VIEWS:
                    con.execute(statement)
            return current

        return self._write(work)

    # --- paths ----------------------------------------------------------------------------------
    def absolute(self, relative: str | None) -> Path | None:
        """A stored relative path (``images/ab/<sha>.jpg``) as a path under the data directory."""
        return None if relative is None else self.home / relative

    # --- ingest writes --------------------------------------------------------------------------
    def create_batch(
        self,
        *,
        station: str | None,
        operator: str | None,
        note: str | None,
        source: str,
        model_name: str | None,
        model_version: str | None,
        batch_id: str | None = None,
    ) -> str:
        if source not in ("app", "cli"):
            raise ValueError(f"source must be 'app' or 'cli', not {source!r}")
        now = utc_now()
        batch_id = batch_id or f"{now:%Y%m%d-%H%M%S}-{os.urandom(3).hex()}"

        def work(con: duckdb.DuckDBPyConnection) -> str:
            con.execute(
                "INSERT INTO batches (batch_id, created_at, station, operator, note, source, model_name, "
                "model_version, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open')",
                [batch_id, now, station or None, operator or None, note or None, source, model_name, model_version],
            )
            return batch_id

        return self._write(work)

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        with self.connect() as con:
            df = con.execute("SELECT * FROM batches WHERE batch_id = ?", [batch_id]).df()
        return None if df.empty else df.iloc[0].to_dict()

    def recorded_names(self, batch_id: str) -> set[str]:
        """File names the batch already holds (inspected, duplicate or failed): skipped when resuming."""
        with self.connect() as con:
            rows = con.execute(
                "SELECT file_name FROM inspections WHERE batch_id = ? UNION "
                "SELECT file_name FROM duplicates WHERE batch_id = ? UNION "
                "SELECT file_name FROM failures WHERE batch_id = ?",
                [batch_id, batch_id, batch_id],
            ).fetchall()
        return {r[0] for r in rows}

    def earlier_inspections(self, shas: Sequence[str]) -> dict[str, int]:
        """For each SHA-256 already inspected (and not deleted), its earliest inspection id."""
        if not shas:
            return {}
        with self.connect() as con:
            rows = con.execute(
                "SELECT sha256, min(inspection_id) FROM inspections "
                "WHERE sha256 IN (SELECT unnest(?::VARCHAR[])) AND deleted_at IS NULL GROUP BY sha256",
                [sorted(set(shas))],
            ).fetchall()
        return {sha: int(i) for sha, i in rows}

    def reserve_inspection_ids(self, count: int) -> list[int]:
        """Take ``count`` ids from the sequence (ids of a crashed chunk are simply never used)."""
        if count <= 0:
            return []
        return self._write(
            lambda con: [
                int(r[0]) for r in con.execute("SELECT nextval('inspection_seq') FROM range(?)", [count]).fetchall()
            ]
        )

    def write_chunk(
        self,
        batch_id: str,
        inspections: Sequence[InspectionRecord] = (),
        duplicates: Sequence[DuplicateRecord] = (),
        failures: Sequence[FailureRecord] = (),
    ) -> None:
        """Write one chunk of a batch in a single transaction: all of it lands, or none of it."""
        if not (inspections or duplicates or failures):
            return
        images = list({r.sha256: r for r in reversed(inspections)}.values())  # first record of each SHA-256
        image_table = _arrow(_IMAGE_SCHEMA, images, first_seen=[r.created_at for r in images])
        inspection_table = _arrow(
            _INSPECTION_SCHEMA,
            inspections,
            batch_id=[batch_id] * len(inspections),
            probabilities=[json.dumps(r.probabilities) for r in inspections],
        )
        embedding_table = _arrow(
            _EMBEDDING_SCHEMA, inspections, vector=[np.asarray(r.embedding, dtype=np.float32) for r in inspections]
        )
        duplicate_table = _arrow(_DUPLICATE_SCHEMA, duplicates)
        failure_table = _arrow(_FAILURE_SCHEMA, failures)

        def work(con: duckdb.DuckDBPyConnection) -> None:
            con.register("chunk_images", image_table)
            con.register("chunk_inspections", inspection_table)
            con.register("chunk_embeddings", embedding_table)
            con.register("chunk_duplicates", duplicate_table)
            con.register("chunk_failures", failure_table)
            con.execute("INSERT INTO images SELECT * FROM chunk_images ON CONFLICT DO NOTHING")
            con.execute(
                "INSERT INTO inspections BY NAME SELECT * FROM chunk_inspections",
            )
            con.execute("INSERT INTO embeddings SELECT * FROM chunk_embeddings")
            con.execute(
                "INSERT INTO duplicates SELECT nextval('duplicate_seq'), ?, file_name, sha256, inspection_id, "
                "created_at FROM chunk_duplicates",
                [batch_id],
            )
            con.execute(
                "INSERT INTO failures SELECT nextval('failure_seq'), ?, file_name, reason, created_at "
                "FROM chunk_failures",
                [batch_id],
            )

        self._write(work)

    def finish_batch(self, batch_id: str) -> None:
        self._write(
            lambda con: con.execute(
                "UPDATE batches SET status = 'complete', finished_at = ? WHERE batch_id = ?", [utc_now(), batch_id]
            )
        )

    # --- batches --------------------------------------------------------------------------------
    def list_batches(self) -> pd.DataFrame:
        """Every batch, newest first, with its counts."""
        with self.connect() as con:
            return con.execute(
                """SELECT b.*,
                    (SELECT count(*) FROM inspection_view i WHERE i.batch_id = b.batch_id) AS inspected,
                    (SELECT count(*) FROM duplicates d WHERE d.batch_id = b.batch_id) AS duplicates,
                    (SELECT count(*) FROM failures f WHERE f.batch_id = b.batch_id) AS failures
                FROM batches b ORDER BY b.created_at DESC"""
            ).df()

    def batch_rows(self, batch_id: str) -> pd.DataFrame:
        """The batch's inspections (effective labels), in the order they were inspected."""
        rows, _ = self.search(HistoryFilter(batches=(batch_id,)), sort="inspection_id", descending=False, page_size=0)
        return rows

    def batch_failures(self, batch_id: str) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(
                "SELECT file_name, reason, created_at FROM failures WHERE batch_id = ? ORDER BY failure_id",
                [batch_id],
            ).df()

    def batch_duplicates(self, batch_id: str) -> pd.DataFrame:
        """Files of the batch whose bytes were inspected before, with the earlier inspection."""
        with self.connect() as con:
            return con.execute(
                """SELECT d.file_name, d.sha256, d.inspection_id AS earlier_inspection_id,
                    i.file_name AS earlier_file_name, i.batch_id AS earlier_batch_id, i.created_at AS earlier_at
                FROM duplicates d LEFT JOIN inspections i USING (inspection_id)
                WHERE d.batch_id = ? ORDER BY d.duplicate_id""",
                [batch_id],
            ).df()

    def batch_summary(self, batch_id: str) -> dict[str, Any]:
        """Counts for the batch summary: by action (effective), needs review, duplicates, failures."""
        with self.connect() as con:
            by_action = dict(
                con.execute(
                    "SELECT action, count(*) FROM inspection_view WHERE batch_id = ? GROUP BY action ORDER BY action",
                    [batch_id],
                ).fetchall()
            )
            needs_review, inspected = con.execute(
                "SELECT count(*) FILTER (WHERE needs_review), count(*) FROM inspection_view WHERE batch_id = ?",
                [batch_id],
            ).fetchone()
            duplicates = con.execute("SELECT count(*) FROM duplicates WHERE batch_id = ?", [batch_id]).fetchone()[0]
            failures = con.execute("SELECT count(*) FROM failures WHERE batch_id = ?", [batch_id]).fetchone()[0]
        return {
            "inspected": int(inspected),
            "by_action": {k: int(v) for k, v in by_action.items()},
            "needs_review": int(needs_review),
            "duplicates": int(duplicates),
            "failures": int(failures),
        }

    def batch_csv(self, batch_id: str, path: str | Path | None = None) -> bytes | Path:
        return self.export_csv(HistoryFilter(batches=(batch_id,)), path=path, sort="inspection_id", descending=False)

    # --- history queries ------------------------------------------------------------------------
    @staticmethod
    def _order_by(sort: str, descending: bool, prefix: str = "") -> str:
        if sort not in SORT_COLUMNS:
            raise ValueError(f"cannot sort by {sort!r}; choose one of {', '.join(SORT_COLUMNS)}")
        direction = "DESC" if descending else "ASC"
        tie = "" if sort == "inspection_id" else f", {prefix}inspection_id {direction}"
        return f"{prefix}{sort} {direction} NULLS LAST{tie}"

    def count(self, f: HistoryFilter = HistoryFilter()) -> int:
        where, params = build_where(f)
        with self.connect() as con:
            return int(con.execute(f"SELECT count(*) FROM inspection_view_all WHERE {where}", params).fetchone()[0])

    def search(
        self,
        f: HistoryFilter = HistoryFilter(),
        sort: str = "created_at",
        descending: bool = True,
        page: int = 0,
        page_size: int = 50,
    ) -> tuple[pd.DataFrame, int]:
        """One page of matching inspections and the total number of matches.

        ``page`` counts from 0; ``page_size=0`` returns every match. Only the page's rows leave DuckDB.
        Besides the ``inspection_view`` columns, each row has ``station``, ``operator``, ``tags`` (a sorted
        list), ``image_file`` and ``thumb_file`` (absolute paths as strings).
        """
        where, params = build_where(f)
        order = self._order_by(sort, descending)
        row_order = self._order_by(sort, descending, prefix="v.")
        with self.connect() as con:
            total = int(con.execute(f"SELECT count(*) FROM inspection_view_all WHERE {where}", params).fetchone()[0])
            if page_size > 0:
                # Sort only ids first, then fetch the page's full rows by id: only one page is materialised.
                ids = [
                    r[0]
                    for r in con.execute(
                        f"SELECT inspection_id FROM inspection_view_all WHERE {where} "
                        f"ORDER BY {order} LIMIT ? OFFSET ?",
                        [*params, int(page_size), int(page) * int(page_size)],
                    ).fetchall()
                ]
                by_id = "inspection_id IN (SELECT unnest(?::BIGINT[]))"
                rows = con.execute(_rows_sql(by_id, by_id, row_order), [ids, ids]).df()
            else:
                rows = con.execute(_rows_sql(where, "TRUE", row_order), params).df()
        for column in ("image_file", "thumb_file"):
            rows[column] = [None if v is None or pd.isna(v) else str(self.home / v) for v in rows[column]]
        return rows, total

    def inspection_detail(self, inspection_id: int) -> dict[str, Any] | None:
        """Everything about one inspection: effective and predicted labels, probabilities per task,
        image and thumbnail paths, batch, tags, review history (oldest first) and later duplicates."""
        with self.connect() as con:
            df = con.execute(
                """SELECT v.*, b.station, b.operator, b.note AS batch_note, im.path AS image_file,
                    im.thumb_path AS thumb_file, im.width, im.height, im.format, im.byte_size
                FROM inspection_view_all v LEFT JOIN batches b USING (batch_id) LEFT JOIN images im USING (sha256)
                WHERE v.inspection_id = ?""",
                [int(inspection_id)],
            ).df()
            if df.empty:
                return None
            reviews = con.execute(
                "SELECT review_id, created_at, reviewer, kind, defect, severity, location, action, note, previous "
                "FROM reviews WHERE inspection_id = ? ORDER BY review_id",
                [int(inspection_id)],
            ).df()
            tags = [
                r[0]
                for r in con.execute(
                    "SELECT tag FROM tags WHERE inspection_id = ? ORDER BY tag", [int(inspection_id)]
                ).fetchall()
            ]
            duplicates = con.execute(
                "SELECT batch_id, file_name, created_at FROM duplicates WHERE inspection_id = ? ORDER BY duplicate_id",
                [int(inspection_id)],
            ).df()
        detail = {k: (None if _is_missing(v) else v) for k, v in df.iloc[0].to_dict().items()}
        detail["probabilities"] = json.loads(detail["probabilities"]) if detail.get("probabilities") else {}
        detail["image_file"] = self.absolute(detail.get("image_file"))
        detail["thumb_file"] = self.absolute(detail.get("thumb_file"))
        reviews["previous"] = [json.loads(p) if isinstance(p, str) else None for p in reviews["previous"]]
        detail["reviews"] = reviews
        detail["tags"] = tags
        detail["duplicates"] = duplicates
        return detail

    def embeddings(self, f: HistoryFilter = HistoryFilter(), limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(inspection_ids, vectors float32 [n, d])`` of matching inspections, oldest first."""
        where, params = build_where(f)
        sql = (
            "SELECT e.inspection_id, e.vector FROM embeddings e JOIN inspection_view_all v USING (inspection_id) "
            f"WHERE {where} ORDER BY e.inspection_id"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params = [*params, int(limit)]
        with self.connect() as con:
            table = con.sql(sql, params=params).to_arrow_table()
        ids = table.column("inspection_id").to_numpy()
        if table.num_rows == 0:
            return ids, np.zeros((0, 0), dtype=np.float32)
        flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = flat.astype(np.float32, copy=False).reshape(table.num_rows, -1)
        return ids, vectors

    def distinct_values(self, column: str) -> list[Any]:
        """Sorted distinct non-null values of a filterable column (for filter options)."""
        if column not in DISTINCT_COLUMNS:
            raise ValueError(f"no filter options for {column!r}; choose one of {', '.join(DISTINCT_COLUMNS)}")
        name, table = DISTINCT_COLUMNS[column]
        with self.connect() as con:
            rows = con.execute(f"SELECT DISTINCT {name} FROM {table} WHERE {name} IS NOT NULL ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    def export_csv(
        self,
        f: HistoryFilter = HistoryFilter(),
        path: str | Path | None = None,
        sort: str = "created_at",
        descending: bool = True,
    ) -> bytes | Path:
        """Every matching row as CSV (UTF-8 with BOM, so spreadsheet tools read accents), written by
        DuckDB's COPY. Returns the bytes, or writes ``path`` and returns it. Tags are joined with ``;``;
        timestamps are UTC."""
        where, params = build_where(f)
        columns = ", ".join(f"v.{c}" for c in EXPORT_COLUMNS)
        order = self._order_by(sort, descending, prefix="v.")
        query = f"""SELECT {columns},
                coalesce(array_to_string(tg.tags, ';'), '') AS tags
            FROM (SELECT * FROM inspection_view_all WHERE {where}) v
            LEFT JOIN (SELECT inspection_id, list(tag ORDER BY tag) AS tags FROM tags GROUP BY inspection_id) tg
                ON tg.inspection_id = v.inspection_id
            ORDER BY {order}"""
        with tempfile.TemporaryDirectory(prefix="visionqc-export-") as tmp:
            raw = Path(tmp) / "export.csv"
            with self.connect() as con:
                con.execute(f"COPY ({query}) TO '{_sql_path(raw)}' (HEADER, DELIMITER ',')", params)
            if path is None:
                return UTF8_BOM + raw.read_bytes()
            # Stream into the target: a million-row export is a few hundred MB.
            target = Path(path)
            with raw.open("rb") as src, target.open("wb") as dst:
                dst.write(UTF8_BOM)
                shutil.copyfileobj(src, dst, 1024 * 1024)
            return target

    # --- corrections ----------------------------------------------------------------------------
    def review(
        self,
        ids: Iterable[int],
        reviewer: str,
        kind: str,
        *,
        defect: Any = ...,
        severity: Any = ...,
        location: Any = ...,
        action: str | None = None,
        note: str | None = None,
        policy: Any = None,
    ) -> int:
        """Record a review of each inspection in ``ids``; returns how many rows it changed.

        ``kind``: ``"correct"`` sets the labels given (a label left out keeps its effective value;
        ``None`` clears it; correcting to the no-defect class clears severity and location);
        ``"confirm"`` accepts the effective labels (this is "mark reviewed"); ``"delete"`` soft-deletes;
        ``"restore"`` undoes a soft delete. Every review is appended to ``reviews`` with the labels
        before it (``previous``); the prediction columns are never changed. When ``action`` is not
        given and the labels changed (or the row was waiting for review), the action is derived by
        ``policy`` (default :class:`visionqc.predict.ActionPolicy`).
        """
        if kind not in REVIEW_KINDS:
            raise ValueError(f"review kind must be one of {', '.join(REVIEW_KINDS)}, not {kind!r}")
        reviewer = (reviewer or "").strip()
        if not reviewer:
            raise ValueError("a review needs the reviewer's name")
        if action is not None:
            _check_action(action)
        id_list = sorted({int(i) for i in ids})
        if not id_list:
            return 0
        now = utc_now()

        def work(con: duckdb.DuckDBPyConnection) -> int:
            current = con.execute(
                "SELECT inspection_id, no_defect_label, defect, severity, location, action, reviewed_by, "
                "reviewed_at, deleted_at FROM inspection_view_all WHERE inspection_id IN "
                "(SELECT unnest(?::BIGINT[])) ORDER BY inspection_id",
                [id_list],
            ).fetchall()
            reviews = []
            for iid, no_defect, cur_defect, cur_sev, cur_loc, cur_action, by, at, deleted_at in current:
                previous = {
                    "defect": cur_defect,
                    "severity": cur_sev,
                    "location": cur_loc,
                    "action": cur_action,
                    "reviewed_by": by,
                    "reviewed_at": at.isoformat() if at else None,
                    "deleted_at": deleted_at.isoformat() if deleted_at else None,
                }
                if (kind == "delete" and deleted_at is not None) or (kind == "restore" and deleted_at is None):
                    continue
                new_defect, new_sev, new_loc, new_action = cur_defect, cur_sev, cur_loc, cur_action
                if kind == "correct":
                    new_defect = cur_defect if defect is ... else defect
                    new_sev = cur_sev if severity is ... else severity
                    new_loc = cur_loc if location is ... else location
                    if new_defect == no_defect:
                        new_sev = new_loc = None
                    changed = (new_defect, new_sev, new_loc) != (cur_defect, cur_sev, cur_loc)
                    if action is not None:
                        new_action = action
                    elif changed or cur_action == "Review":
                        new_action = _policy(policy).decide(new_defect, new_sev, False, new_defect != no_defect)
                elif kind == "confirm":
                    if action is not None:
                        new_action = action
                    elif cur_action == "Review":
                        new_action = _policy(policy).decide(cur_defect, cur_sev, False, cur_defect != no_defect)
                reviews.append((iid, kind, new_defect, new_sev, new_loc, new_action, json.dumps(previous)))
            if not reviews:
                return 0
            table = pa.table(
                {
                    "inspection_id": pa.array([r[0] for r in reviews], pa.int64()),
                    "kind": pa.array([r[1] for r in reviews], pa.string()),
                    "defect": pa.array([r[2] for r in reviews], pa.string()),
                    "severity": pa.array([r[3] for r in reviews], pa.string()),
                    "location": pa.array([r[4] for r in reviews], pa.string()),
                    "action": pa.array([r[5] for r in reviews], pa.string()),
                    "previous": pa.array([r[6] for r in reviews], pa.string()),
                }
            )
            con.register("review_rows", table)
            con.execute(
                "INSERT INTO reviews SELECT nextval('review_seq'), inspection_id, ?, ?, kind, defect, severity, "
                "location, action, ?, previous FROM review_rows ORDER BY inspection_id",
                [now, reviewer, note or None],
            )
            changed_ids = [r[0] for r in reviews]
            if kind in ("correct", "confirm"):
                con.execute(
                    """UPDATE inspections SET rev_defect = r.defect, rev_severity = r.severity,
                        rev_location = r.location, rev_action = r.action, reviewed_at = ?, reviewed_by = ?
                    FROM review_rows r WHERE inspections.inspection_id = r.inspection_id""",
                    [now, reviewer],
                )
            elif kind == "delete":
                con.execute(
                    "UPDATE inspections SET deleted_at = ? WHERE inspection_id IN (SELECT unnest(?::BIGINT[]))",
                    [now, changed_ids],
                )
            else:
                con.execute(
                    "UPDATE inspections SET deleted_at = NULL WHERE inspection_id IN (SELECT unnest(?::BIGINT[]))",
                    [changed_ids],
                )
            return len(reviews)

        return self._write(work)

    def mark_reviewed(self, ids: Iterable[int], reviewer: str, note: str | None = None) -> int:
        return self.review(ids, reviewer, "confirm", note=note)

    def soft_delete(self, ids: Iterable[int], reviewer: str, note: str | None = None) -> int:
        """Hide rows from every view; recorded in the audit trail and undone by :meth:`restore`."""
        return self.review(ids, reviewer, "delete", note=note)

    def restore(self, ids: Iterable[int], reviewer: str, note: str | None = None) -> int:
        return self.review(ids, reviewer, "restore", note=note)

    def review_history(self, inspection_id: int) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(
                "SELECT * FROM reviews WHERE inspection_id = ? ORDER BY review_id", [int(inspection_id)]
            ).df()

    # --- tags -----------------------------------------------------------------------------------
    def add_tags(self, ids: Iterable[int], tags: Iterable[str]) -> int:
        """Tag every inspection in ``ids`` with every tag; returns the number of new (row, tag) pairs."""
        id_list = sorted({int(i) for i in ids})
        tag_list = _clean_tags(tags)
        if not id_list or not tag_list:
            return 0

        def work(con: duckdb.DuckDBPyConnection) -> int:
            before = con.execute("SELECT count(*) FROM tags").fetchone()[0]
            con.execute(
                """INSERT INTO tags (inspection_id, tag, created_at)
                SELECT i.id, t.tag, ? FROM (SELECT unnest(?::BIGINT[]) AS id) i, (SELECT unnest(?::VARCHAR[]) AS tag) t
                WHERE i.id IN (SELECT inspection_id FROM inspections)
                ON CONFLICT DO NOTHING""",
                [utc_now(), id_list, tag_list],
            )
            return int(con.execute("SELECT count(*) FROM tags").fetchone()[0] - before)

        return self._write(work)

    def remove_tags(self, ids: Iterable[int], tags: Iterable[str]) -> int:
        """Remove the tags from every inspection in ``ids``; returns the number of (row, tag) pairs removed."""
        id_list = sorted({int(i) for i in ids})
        tag_list = _clean_tags(tags)
        if not id_list or not tag_list:
            return 0

        def work(con: duckdb.DuckDBPyConnection) -> int:
            result = con.execute(
                "DELETE FROM tags WHERE inspection_id IN (SELECT unnest(?::BIGINT[])) "
                "AND tag IN (SELECT unnest(?::VARCHAR[]))",
                [id_list, tag_list],
            ).fetchone()
            return int(result[0]) if result else 0

        return self._write(work)

    def set_outlier_scores(self, ids: Sequence[int], scores: Sequence[float]) -> None:
        """Store Explore's outlier score per inspection."""
        table = pa.table({"inspection_id": pa.array(ids, pa.int64()), "score": pa.array(scores, pa.float64())})

        def work(con: duckdb.DuckDBPyConnection) -> None:
            con.register("outlier_scores", table)
            con.execute(
                "UPDATE inspections SET outlier_score = s.score FROM outlier_scores s "
                "WHERE inspections.inspection_id = s.inspection_id"
            )

        self._write(work)

    def set_near_duplicates(
        self, scored_ids: Sequence[int], ids: Sequence[int], of: Sequence[int], similarity: Sequence[float]
    ) -> None:
        """Store Explore's near-duplicate pairs: ``ids[i]`` is most like the earlier ``of[i]``.

        Every inspection in ``scored_ids`` that is not in ``ids`` loses an earlier mark: one transaction.
        """
        scored = pa.table({"inspection_id": pa.array(scored_ids, pa.int64())})
        pairs = pa.table(
            {
                "inspection_id": pa.array(ids, pa.int64()),
                "of": pa.array(of, pa.int64()),
                "similarity": pa.array(similarity, pa.float64()),
            }
        )

        def work(con: duckdb.DuckDBPyConnection) -> None:
            con.register("scored_ids", scored)
            con.register("near_pairs", pairs)
            con.execute(
                "UPDATE inspections SET near_duplicate_of = NULL, near_duplicate_similarity = NULL "
                "WHERE inspection_id IN (SELECT inspection_id FROM scored_ids)"
            )
            con.execute(
                "UPDATE inspections SET near_duplicate_of = p.of, near_duplicate_similarity = p.similarity "
                "FROM near_pairs p WHERE inspections.inspection_id = p.inspection_id"
            )

        self._write(work)


def _rows_sql(where: str, tag_where: str, order: str) -> str:
    """Full History rows (view columns, batch station/operator, image paths, sorted tag list)."""
    return f"""SELECT v.*, b.station, b.operator, im.path AS image_file, im.thumb_path AS thumb_file,
            coalesce(tg.tags, []::VARCHAR[]) AS tags
        FROM (SELECT * FROM inspection_view_all WHERE {where}) v
        LEFT JOIN batches b ON b.batch_id = v.batch_id
        LEFT JOIN images im ON im.sha256 = v.sha256
        LEFT JOIN (SELECT inspection_id, list(tag ORDER BY tag) AS tags FROM tags WHERE {tag_where}
                   GROUP BY inspection_id) tg ON tg.inspection_id = v.inspection_id
        ORDER BY {order}"""


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back if a transaction is still open (a failed COMMIT has already ended it)."""
    with suppress(duckdb.Error):
        con.execute("ROLLBACK")


def _clean_tags(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        tags = [tags]
    return sorted({t.strip() for t in tags if t and t.strip()})


def _check_action(action: str) -> None:
    from visionqc.predict import ACTIONS

    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; choose from {', '.join(ACTIONS)}")


def _policy(policy: Any) -> Any:
    if policy is not None:
        return policy
    from visionqc.predict import ActionPolicy

    return ActionPolicy()


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value)) if not isinstance(value, list | dict | np.ndarray) else False
    except (TypeError, ValueError):
        return False


def _sql_path(path: Path) -> str:
    """A file path as a SQL string literal body (COPY takes no parameter for its target)."""
    return str(path).replace("'", "''")
