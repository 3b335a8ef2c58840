"""PostgreSQL, the shared backend: a psycopg 3 connection that speaks the part of DuckDB's Python API the store
uses, so every query of the store is written once.

The store's SQL is written in the dialect both engines run (``generate_series``, ``array_agg``, ``strpos``,
``unnest(?::BIGINT[])``, ``INSERT ... ON CONFLICT``, ``FILTER (WHERE ...)``); what differs is translated here, in
one place, and is small:

- parameters: DuckDB's ``?`` become psycopg's ``%s`` (a literal ``%`` is doubled);
- column types in migrations: DuckDB's ``DOUBLE`` is ``DOUBLE PRECISION``, ``FLOAT[]`` is ``REAL[]``;
- ``con.register(name, arrow_table)`` (DuckDB reads an Arrow table in place) becomes a temporary table filled by
  ``COPY``; a field whose Arrow metadata says ``sql_type: JSON`` is a ``json`` column there;
- results: ``.df()``, ``.fetchone()``/``.fetchall()`` (a statement without rows answers its row count, as DuckDB
  does), ``.sql(...).to_arrow_table()`` / ``.to_arrow_reader(n)``; ``json`` comes back as text and ``numeric``
  as float, as DuckDB returns them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import psycopg
import pyarrow as pa
from psycopg import errors as pg_errors
from psycopg.types.json import set_json_loads
from psycopg.types.numeric import FloatLoader

# Errors after which the whole transaction is run again (another transaction won a race; it decides anew). A key
# another transaction committed after this one read that it was free is one too, as on DuckDB: the next version
# number of a dataset two stations store at once (the retry reads the other's row and takes the next).
RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected, pg_errors.UniqueViolation)
Error = psycopg.Error

_ARROW_TYPES = {
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.string(): "TEXT",
    pa.float64(): "DOUBLE PRECISION",
    pa.float32(): "REAL",
    pa.bool_(): "BOOLEAN",
    pa.timestamp("us"): "TIMESTAMP",
    pa.list_(pa.float32()): "REAL[]",
}
# Type names of result columns that pandas should see as datetimes (oid -> name is looked up per cursor).
_TIMESTAMP_OIDS = {1114, 1184}
_STRING_OR_QUOTE = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|%")


def lost_connection(exc: BaseException) -> bool:
    """The server went away or refused us mid-call (a user can fix it: start the server, fix the network)."""
    return isinstance(exc, psycopg.OperationalError) and not isinstance(exc, RETRYABLE)


def to_postgres(sql: str) -> str:
    """DuckDB's ``?`` placeholders as psycopg's ``%s``, outside string literals and quoted names."""

    def swap(match: re.Match) -> str:
        token = match.group(0)
        return "%s" if token == "?" else "%%" if token == "%" else token

    return _STRING_OR_QUOTE.sub(swap, sql)


def ddl(sql: str) -> str:
    """A migration statement's DuckDB type names as PostgreSQL's."""
    sql = re.sub(r"\bDOUBLE\b(?!\s+PRECISION)", "DOUBLE PRECISION", sql)
    return re.sub(r"\bFLOAT\[\]", "REAL[]", sql)


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


# Session settings of every store connection (one round trip): the Dashboard's aggregates hash their few thousand
# groups in memory (the default 4 MB made PostgreSQL sort them on disk instead, 2-3x slower), and no query is
# JIT-compiled (the store's queries run for milliseconds to a second; compiling one took ~130 ms).
SESSION = "SELECT set_config('work_mem', '64MB', false), set_config('jit', 'off', false)"


def connect(url: str) -> PgConnection:
    con = psycopg.connect(url, autocommit=True, connect_timeout=10)
    con.execute(SESSION)
    set_json_loads(lambda data: bytes(data).decode(), con)  # JSON as text, as DuckDB returns it
    con.adapters.register_loader("numeric", FloatLoader)
    return PgConnection(con)


class PgConnection:
    """The subset of ``duckdb.DuckDBPyConnection`` the store uses, over one psycopg connection in autocommit
    mode (the store's ``BEGIN TRANSACTION`` / ``COMMIT`` are sent as statements, as to DuckDB)."""

    engine = "postgresql"  # for the few statements only one engine has (row locks: visionqc.store.counts.lock)

    def __init__(self, con: psycopg.Connection):
        self._con = con
        self._cur: psycopg.Cursor | None = None

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> PgConnection:
        self._cur = self._con.execute(to_postgres(sql), list(params) if params else None)
        return self

    def fetchone(self) -> tuple | None:
        if self._cur.description is None:  # INSERT/UPDATE/DELETE: DuckDB answers one row with the count
            return (self._cur.rowcount,)
        return self._cur.fetchone()

    def fetchall(self) -> list[tuple]:
        if self._cur.description is None:
            return [(self._cur.rowcount,)]
        return self._cur.fetchall()

    def df(self) -> pd.DataFrame:
        return _frame(self._cur.description, self._cur.fetchall())

    def sql(self, sql: str, params: Sequence[Any] | None = None) -> _Relation:
        return _Relation(self._con, to_postgres(sql), list(params) if params else None)

    def register(self, name: str, table: pa.Table) -> None:
        """A temporary table ``name`` holding ``table`` (gone when the connection closes)."""
        columns = [f'"{f.name}" {_sql_type(f)}' for f in table.schema]
        self._con.execute(f'DROP TABLE IF EXISTS pg_temp."{name}"')
        self._con.execute(f'CREATE TEMPORARY TABLE "{name}" ({", ".join(columns)})')
        names = ", ".join(f'"{f.name}"' for f in table.schema)
        with self._con.cursor().copy(f'COPY "{name}" ({names}) FROM STDIN') as copy:
            for row in zip(*(table.column(i).to_pylist() for i in range(table.num_columns)), strict=True):
                copy.write_row(row)

    def close(self) -> None:
        self._con.close()


def _sql_type(field: pa.Field) -> str:
    if field.metadata and field.metadata.get(b"sql_type"):
        return field.metadata[b"sql_type"].decode()
    try:
        return _ARROW_TYPES[field.type]
    except KeyError:
        raise TypeError(f"no PostgreSQL type for the Arrow type {field.type} of {field.name!r}") from None


def _frame(description, rows: list[tuple]) -> pd.DataFrame:
    names = [d.name for d in description]
    frame = pd.DataFrame.from_records(rows, columns=names) if rows else pd.DataFrame(columns=names)
    for d in description:
        if d.type_code in _TIMESTAMP_OIDS:
            frame[d.name] = pd.to_datetime(frame[d.name])
    return frame


class _Relation:
    """``con.sql(query, params=...)``: the result as Arrow, whole or in batches (a server-side cursor)."""

    def __init__(self, con: psycopg.Connection, sql: str, params: list | None):
        self._con, self._sql, self._params = con, sql, params

    def to_arrow_table(self) -> pa.Table:
        cur = self._con.execute(self._sql, self._params)
        return pa.Table.from_pandas(_frame(cur.description, cur.fetchall()), preserve_index=False)

    def to_arrow_reader(self, rows: int) -> Iterator[pa.RecordBatch]:
        with self._con.transaction(), self._con.cursor(name="export") as cur:
            cur.execute(self._sql, self._params)
            while batch := cur.fetchmany(rows):
                yield from pa.Table.from_pandas(_frame(cur.description, batch), preserve_index=False).to_batches()
