"""The database file: short-lived connections, one-transaction writes with retry, and migrations.

DuckDB lets one process at a time open a file for writing, and an open connection blocks every other
process. The app and ``python -m visionqc inspect`` share the file, so :class:`Database` never keeps a
connection open: each operation opens a short-lived connection, retrying with back-off while another
process holds the lock, and every write is one transaction (a crash leaves no half-written rows).
Timestamps are naive ``TIMESTAMP`` values in UTC.

Opening checks the file before anything writes to it (:mod:`~visionqc.store.integrity`), and a folder
that cannot be written is opened read-only: everything can be read, and every write is refused with a
:class:`StoreReadOnlyError` before it starts. Driver and disk errors a user can act on (damaged file, full
disk, no permission) leave this module as the :class:`StoreError` that says so (:mod:`~visionqc.store.errors`).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import TypeVar

import duckdb

from visionqc import config
from visionqc.store import filelock
from visionqc.store.errors import (
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreReadOnlyError,
    is_lock_error,
    read_only_reason,
    translate,
)
from visionqc.store.images import LocalImageStore
from visionqc.store.integrity import read_every_table
from visionqc.store.records import utc_now
from visionqc.store.schema import DB_FILE, DROP_VIEWS, MIGRATIONS, POSTGRES_ONLY, SCHEMA_VERSION, VIEWS

__all__ = ["Database", "StoreBusyError", "StoreError", "rollback", "sql_path"]

T = TypeVar("T")
# duckdb.connect() and close() share one database instance per file inside a process; opening while
# another thread closes the last connection races in DuckDB, so both happen under this lock.
_INSTANCE_LOCK = threading.Lock()
# One writing transaction at a time per DuckDB file inside a process. DuckDB lets one process write the file, and
# two of its threads updating one row (a review and an ingest chunk both adding to a Dashboard roll-up group,
# visionqc.store.counts) would abort one of them; waiting here costs nothing DuckDB did not serialise anyway.
_WRITERS: dict[Path, threading.RLock] = {}


class Database:
    """The DuckDB file under ``home`` (default: :func:`visionqc.config.data_dir`).

    Opening migrates the schema to :data:`~visionqc.store.schema.SCHEMA_VERSION`. No connection outlives a
    method call.
    """

    def __init__(
        self,
        home: str | Path | None = None,
        *,
        lock_timeout: float = 60.0,
        read_only: bool = False,
        url: str | None = None,
    ):
        self.home = Path(home) if home is not None else config.data_dir()
        self.db_path = self.home / DB_FILE
        # The shared PostgreSQL server (``url``, else VISIONQC_DATABASE_URL), or None: the DuckDB file.
        self.url = url or config.database_url()
        self.images = LocalImageStore(self.home)  # the photos: by content hash, in the folder every station reaches
        self.lock_timeout = lock_timeout
        # Why every write is refused (None: writing is allowed).
        self.read_only_reason: str | None = "it was opened read-only" if read_only else None
        self.damage: StoreCorruptError | None = None  # set when a damaged block turns up: no write after it
        self._shared = threading.local()  # this thread's connection inside sharing_connection()
        self._prepare_folder()
        self.check()
        self.migrate()

    @property
    def read_only(self) -> bool:
        return self.read_only_reason is not None

    @property
    def engine(self) -> str:
        """``"duckdb"`` (the file under the data folder) or ``"postgresql"`` (the shared server)."""
        return "duckdb" if self.url is None else "postgresql"

    @property
    def location(self) -> str:
        """Where the inspections are, for messages: the DuckDB file, or the server's URL without password."""
        if self.url is None:
            return str(self.db_path)
        from visionqc.store.postgres import redacted

        return redacted(self.url)

    def _prepare_folder(self) -> None:
        """Create the data folder if needed and find out whether it can be written."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            error = translate(exc, self.home, self.db_path, doing="creating the data folder")
            raise error or StoreError(f"cannot create the data folder {self.home}: {exc.strerror}") from exc
        if self.url is not None:  # the database is on the server; the folder holds the images
            if self.read_only_reason is None and not os.access(self.home, os.W_OK):
                self.read_only_reason = read_only_reason(self.home)
            return
        if self.db_path.exists() and not os.access(self.db_path, os.R_OK):
            raise StoreError(
                f"cannot read the inspection database {self.db_path}: user has no read permission on it; "
                "give it read permission or set VISIONQC_HOME to another folder"
            )
        if self.read_only_reason is None and not (
            os.access(self.home, os.W_OK) and (not self.db_path.exists() or os.access(self.db_path, os.W_OK))
        ):
            self.read_only_reason = read_only_reason(self.home)
        if self.read_only and not self.db_path.exists():
            raise StoreReadOnlyError(
                self.home,
                f"{self.read_only_reason}, and there is no inspection database in it yet",
                "creating one",
                browsable=False,
            )

    def check(self) -> None:
        """Read every block of the file that holds data, on a read-only connection, before anything writes.

        Raises :class:`StoreCorruptError` (which file, what looks wrong, what to do) for a damaged file, and
        :class:`StoreError` for a DuckDB file that is not a VisionQC database. PostgreSQL checks its own pages."""
        if self.url is not None or not self.db_path.exists():
            return
        with self.connect(read_only=True) as con:
            self._version(con)
            read_every_table(con)

    def data_version(self) -> tuple:
        """A value that changes whenever the database changes (any process's commit): the size and time of
        the database file and of its write-ahead log. Costs two ``stat`` calls and no connection, so a reader
        can cache query results under it (the app does: :mod:`visionqc.ui.cached`).

        On PostgreSQL: the server's current snapshot (next transaction id and those in flight), which moves
        with every commit of a writing transaction by any client; one small query."""
        if self.url is not None:
            with self.connect(read_only=True) as con:
                return (self.url, con.execute("SELECT pg_current_snapshot()::text").fetchone()[0])
        version = []
        for path in (self.db_path, self.db_path.with_name(self.db_path.name + ".wal")):
            try:
                stat = path.stat()
            except OSError:
                version.append(None)
            else:
                version.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
        return tuple(version)

    # --- connections ----------------------------------------------------------------------------
    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if self.url is not None:
            return self._open_server()
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.005
        while True:
            busy: BaseException | None = None
            try:
                with _INSTANCE_LOCK:
                    # The lock file first, held until _close() has closed the connection (filelock says why).
                    if filelock.try_acquire(self.db_path, shared=read_only):
                        try:
                            return duckdb.connect(str(self.db_path), read_only=read_only)
                        except BaseException:
                            filelock.release(self.db_path)
                            raise
            except duckdb.Error as exc:
                if not is_lock_error(exc):
                    error = self._translated(exc)
                    if error is exc:  # whatever else stops DuckDB opening the file is about the file
                        error = StoreError(f"cannot open the database {self.db_path}: {exc}")
                    raise error from exc
                busy = exc
            if time.monotonic() >= deadline:
                with _INSTANCE_LOCK:
                    filelock.give_up_turn(self.db_path)
                raise StoreBusyError(
                    f"the database {self.db_path} stayed locked by another VisionQC process for "
                    f"{self.lock_timeout:.0f} s; try again when the other import has finished"
                ) from busy
            # Jittered exponential back-off: two waiting processes do not retry in lock-step. The process whose turn
            # it is (filelock) goes next and nobody else may take the lock meanwhile: it polls often; the others
            # at most every 20 ms (a connection is held for milliseconds; a longer sleep only idles the file).
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.004 if filelock.has_turn(self.db_path) else 0.02)

    def _open_server(self):
        """A connection to the PostgreSQL server (it has no file lock to wait for: writers run side by side)."""
        from visionqc.store import postgres

        try:
            return postgres.connect(self.url)
        except postgres.Error as exc:
            raise StoreError(
                f"cannot reach the inspection database {self.location}: {str(exc).strip()}; check that the "
                "PostgreSQL server is running and VISIONQC_DATABASE_URL is right"
            ) from exc

    def _translated(self, exc: BaseException, doing: str = "saving") -> BaseException:
        """``exc`` as the :class:`StoreError` it means (remembering damage), or ``exc`` itself."""
        error = translate(exc, self.home, self.db_path, doing)
        if isinstance(error, StoreCorruptError):
            self.damage = error
        return exc if error is None else error

    @contextmanager
    def sharing_connection(self) -> Iterator[None]:
        """Within the block, this thread's reads share one connection, opened at the first read and closed at
        the end: a run of small reads (a page's filter options) pays for opening the file once. Keep the block
        short, with no slow work in it: the open connection locks out other processes."""
        if getattr(self._shared, "active", False):
            yield
            return
        self._shared.active, self._shared.con = True, None
        try:
            yield
        finally:
            con, self._shared.active, self._shared.con = self._shared.con, False, None
            if con is not None:
                self._close(con)

    @contextmanager
    def connect(self, *, read_only: bool | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection (for reads). Close it quickly: it locks out other processes.

        Read-only when the folder is (``read_only=None``) or when asked. Errors a user can act on leave it as
        the :class:`StoreError` that says so. Inside :meth:`sharing_connection`, the block's connection."""
        shared = getattr(self._shared, "active", False)
        if shared and self._shared.con is None:
            self._shared.con = self._open(self.read_only)
        con = self._shared.con if shared else self._open(self.read_only if read_only is None else read_only)
        try:
            yield con
        except duckdb.Error as exc:
            error = self._translated(exc)
            if error is exc:
                raise
            raise error from exc
        except Exception as exc:
            if self.url is None or not _server_gone(exc):
                raise
            raise StoreError(
                f"lost the connection to the inspection database {self.location} ({str(exc).strip()}); nothing "
                "of the interrupted change was saved: check that the PostgreSQL server is running, then try again"
            ) from exc
        finally:
            if not shared:  # the block's connection is closed by sharing_connection() at the block's end
                self._close(con)

    def _close(self, con) -> None:
        if self.url is not None:
            con.close()  # closing a server connection writes nothing: no disk error to translate
            return
        try:
            with _INSTANCE_LOCK:
                try:
                    con.close()  # closing the last connection checkpoints: it can meet a full disk too
                finally:
                    filelock.release(self.db_path)
        except duckdb.Error as exc:
            error = self._translated(exc)
            if error is exc:
                raise
            raise error from exc

    def _write(self, work: Callable[[duckdb.DuckDBPyConnection], T], attempts: int = 8) -> T:
        """Run ``work`` in one transaction, retrying when another thread's transaction conflicts.

        Refused before it starts when the folder is read-only or the file turned out to be damaged. A key
        that another thread's transaction committed meanwhile is a conflict too (DuckDB reports it as a
        constraint error): the retry sees that row and ``work`` decides again."""
        if self.damage is not None:
            raise self.damage
        if self.read_only:
            raise StoreReadOnlyError(self.home, self.read_only_reason or "read-only")
        retryable = _retryable(self.url)
        for attempt in range(attempts):
            with self._writer(), self.connect() as con:
                con.execute("BEGIN TRANSACTION")
                try:
                    result = work(con)
                    con.execute("COMMIT")
                    return result
                except retryable as exc:
                    rollback(con)
                    if attempt == attempts - 1 or translate(exc, self.home, self.db_path) is not None:
                        raise  # a full disk or a damaged file is no conflict: connect() says what it is
                except BaseException:
                    rollback(con)
                    raise
            time.sleep(0.01 * 2**attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _writer(self) -> AbstractContextManager:
        """This process's lock for writing the DuckDB file (PostgreSQL's writers wait on row locks instead)."""
        if self.url is not None:
            return nullcontext()
        with _INSTANCE_LOCK:
            return _WRITERS.setdefault(self.db_path.resolve(), threading.RLock())

    # --- schema ---------------------------------------------------------------------------------
    @staticmethod
    def _version(con: duckdb.DuckDBPyConnection) -> int:
        tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
        has_table = con.execute(f"{tables} AND table_name = 'schema_version'").fetchone()[0]
        if not has_table:
            if con.execute(tables).fetchone()[0]:
                raise StoreError("this database is not a VisionQC database (it has no schema_version table)")
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
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the database is at schema version {current}, newer than this VisionQC ({SCHEMA_VERSION}); "
                "update VisionQC"
            )
        if self.read_only:
            raise StoreReadOnlyError(
                self.home,
                self.read_only_reason or "read-only",
                f"updating its database from schema version {current} to {SCHEMA_VERSION} (needed to show it)",
                browsable=False,
            )

        translate_ddl = _ddl(self.url)

        def work(con: duckdb.DuckDBPyConnection) -> int:
            if self.url is not None:  # one migrating process at a time; the others wait here, then see its work
                con.execute("SELECT pg_advisory_xact_lock(hashtext('visionqc migrate ' || current_schema()))")
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
                    if self.url is None and statement.startswith(POSTGRES_ONLY):
                        continue
                    con.execute(translate_ddl(statement))
                con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, utc_now()])
            if current < SCHEMA_VERSION:
                for statement in [*DROP_VIEWS, *VIEWS]:
                    con.execute(translate_ddl(statement))
            return current

        return self._write(work)

    # --- paths ----------------------------------------------------------------------------------
    def absolute(self, relative: str | None) -> Path | None:
        """A stored relative path (``images/ab/<sha>.jpg``) as a path under the data directory."""
        return None if relative is None else self.images.local_path(relative)


def _retryable(url: str | None) -> tuple[type[BaseException], ...]:
    """The errors after which a write transaction runs again: another transaction won a race.

    DuckDB reports a key that a concurrent transaction committed as a constraint error; PostgreSQL waits for
    the other transaction instead, and aborts one of two that wait for each other (a deadlock), or reports the key
    the other committed as a unique violation once it has."""
    if url is None:
        return (duckdb.TransactionException, duckdb.ConstraintException)
    from visionqc.store.postgres import RETRYABLE

    return RETRYABLE


def _server_gone(exc: BaseException) -> bool:
    from visionqc.store.postgres import lost_connection

    return lost_connection(exc)


def _ddl(url: str | None) -> Callable[[str], str]:
    if url is None:
        return lambda statement: statement
    from visionqc.store.postgres import ddl

    return ddl


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back if a transaction is still open (a failed COMMIT has already ended it)."""
    with suppress(Exception):  # duckdb.Error or psycopg.Error: the transaction is over either way
        con.execute("ROLLBACK")


def sql_path(path: Path) -> str:
    """A file path as a SQL string literal body (COPY takes no parameter for its target)."""
    return str(path).replace("'", "''")
