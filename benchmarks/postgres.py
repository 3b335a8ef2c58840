"""The benchmarks on PostgreSQL: a throwaway server (tests/pgserver.py) and a copy of a seeded DuckDB store in it.

The seeds are DuckDB SQL (a million rows in seconds); rather than write them twice, a benchmark seeds a DuckDB
store as always and :func:`copy_to_postgres` moves every table into a new schema on the server with ``COPY``
(CSV), then ``ANALYZE``s it, so both engines answer the same rows.

    python benchmarks/history_queries.py --postgres
    python benchmarks/dashboard.py --postgres
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import pgserver  # noqa: E402

from visionqc.store import Store  # noqa: E402


@contextmanager
def throwaway_server() -> Iterator[pgserver.Server]:
    server = pgserver.start()
    try:
        yield server
    finally:
        server.stop()


def _columns(con, table: str) -> list[tuple[str, str]]:
    return con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()


def copy_to_postgres(source: Store, url: str) -> Store:
    """Every row of the DuckDB store ``source`` in a new store at ``url`` (same data folder); returns it."""
    target = Store(source.home, url=url)  # creates the schema
    start = time.perf_counter()
    with source.connect() as con:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                "AND table_type = 'BASE TABLE' AND table_name <> 'schema_version'"
            ).fetchall()
        ]
        with psycopg.connect(url, autocommit=True) as pg, tempfile.TemporaryDirectory() as tmp:
            for table in tables:
                columns = _columns(con, table)
                # Lists as PostgreSQL array literals; everything else as DuckDB writes it in CSV.
                select = ", ".join(
                    f"'{{' || array_to_string({name}, ',') || '}}'" if kind.endswith("[]") else name
                    for name, kind in columns
                )
                csv = Path(tmp) / f"{table}.csv"
                con.execute(f"COPY (SELECT {select} FROM {table}) TO '{csv}' (FORMAT csv, HEADER false)")
                names = ", ".join(name for name, _ in columns)
                with pg.cursor().copy(f"COPY {table} ({names}) FROM STDIN (FORMAT csv)") as copy, csv.open("rb") as f:
                    while block := f.read(1 << 20):
                        copy.write(block)
            pg.execute("ANALYZE")
            for sequence, table, column in (
                ("inspection_seq", "inspections", "inspection_id"),
                ("review_seq", "reviews", "review_id"),
            ):
                pg.execute(f"SELECT setval('{sequence}', coalesce((SELECT max({column}) FROM {table}), 0) + 1)")
    print(f"copied {', '.join(tables)} to PostgreSQL in {time.perf_counter() - start:.1f} s")
    return target
