"""The database file: short-lived connections, one-transaction writes with retry, and migrations.

DuckDB lets one process at a time open a file for writing, and an open connection blocks every other
process. The app and ``python -m visionqc inspect`` share the file, so :class:`Database` never keeps a
connection open: each operation opens a short-lived connection, retrying with back-off while another
process holds the lock, and every write is one transaction (a crash leaves no half-written rows).
Timestamps are naive ``TIMESTAMP`` values in UTC.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

import duckdb

from visionqc import config
from visionqc.store.records import utc_now
from visionqc.store.schema import DB_FILE, MIGRATIONS, SCHEMA_VERSION, VIEWS

T = TypeVar("T")
# duckdb.connect() and close() share one database instance per file inside a process; opening while
# another thread closes the last connection races in DuckDB, so both happen under this lock.
_INSTANCE_LOCK = threading.Lock()


class StoreError(RuntimeError):
    """A problem with the database the user can act on; ``str(err)`` says what to do."""


class StoreBusyError(StoreError):
    """Another process kept the database locked for longer than the store is willing to wait."""


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


class Database:
    """The DuckDB file under ``home`` (default: :func:`visionqc.config.data_dir`).

    Opening migrates the schema to :data:`~visionqc.store.schema.SCHEMA_VERSION`. No connection outlives a
    method call.
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
                    rollback(con)
                    if attempt == attempts - 1:
                        raise
                except BaseException:
                    rollback(con)
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


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back if a transaction is still open (a failed COMMIT has already ended it)."""
    with suppress(duckdb.Error):
        con.execute("ROLLBACK")


def sql_path(path: Path) -> str:
    """A file path as a SQL string literal body (COPY takes no parameter for its target)."""
    return str(path).replace("'", "''")
