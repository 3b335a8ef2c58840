"""The benchmarks on PostgreSQL: a throwaway server (tests/pgserver.py) and a copy of a seeded DuckDB store in it.

The seeds are DuckDB SQL (a million rows in seconds); rather than write them twice, a benchmark seeds a DuckDB
store as always and :func:`copy_to_postgres` moves every table into a new schema on the server with ``COPY``
(CSV), then ``ANALYZE``s it, so both engines answer the same rows.

    python benchmarks/history_queries.py --postgres
    python benchmarks/dashboard.py --postgres
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def copy_to_postgres(source: Store, url: str) -> Store:
    """Every row of the DuckDB store ``source`` in a new store at ``url`` (tests/pgserver.py), timed."""
    start = time.perf_counter()
    target = pgserver.copy_to_postgres(source, url)
    print(f"copied the store to PostgreSQL in {time.perf_counter() - start:.1f} s")
    return target
