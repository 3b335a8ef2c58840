"""What keeping the Dashboard's roll-up in step costs a bulk review, on 1,000,000 inspections, in one process.

    python3 benchmarks/rollup_writes.py [--rows 1000000] [--home DIR] [--rounds 6] [--postgres]

Seeds the Dashboard's store (benchmarks/seed.py: 120 days; ``--home``: seeded once, reused), then corrects 100
inspections spread over the 120 days (``Store.review``), the roll-up kept three ways, alternated so each meets
the same load: one upsert of the difference (``counts.recounting``, what the store does), the rows' groups taken
out before and put back after in two upserts (what it did before), and not at all (the floor: a review without a
roll-up, which leaves it wrong; never run outside this script). Prints each way's median and best in ms and its
ratio to the floor measured in the same run. Target: back toward a review without the roll-up (~150 ms at load 5).

``--postgres``: the same rows copied into a throwaway PostgreSQL server (benchmarks/postgres.py), timed there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from seed import seed_inspections  # noqa: E402

from visionqc.store import Store, counts  # noqa: E402


@contextlib.contextmanager
def two_upserts(con, ids) -> Iterator[None]:
    """The roll-up as it was kept before: the rows' groups out (one upsert), the write, the groups in (another)."""
    ids = sorted({int(i) for i in ids})
    con.execute(counts.upsert_sql(counts._BY_IDS, -1), [ids])
    yield
    con.execute(counts.upsert_sql(counts._BY_IDS, 1), [ids])


@contextlib.contextmanager
def not_kept(con, ids) -> Iterator[None]:
    yield


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--home", type=Path, help="data directory (default: a temporary one); seeded once, reused")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--postgres", action="store_true", help="time a copy in a throwaway PostgreSQL server")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} (2 shared cores: read the ratios)")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        home = args.home or Path(tmp) / "home"
        if (home / "visionqc.duckdb").exists():
            store = Store(home)
            print(f"reusing the store in {home}")
        else:
            store = seed_inspections(home, args.rows, days=120)
        if args.postgres:
            from postgres import copy_to_postgres, throwaway_server

            store = copy_to_postgres(store, stack.enter_context(throwaway_server()).new_schema_url())
        print(f"engine: {store.engine}")
        with store.connect() as con:
            first, last = con.execute("SELECT min(inspection_id), max(inspection_id) FROM inspections").fetchone()
        step = max(1, (last - first) // 100)
        ways = {"one upsert (the store)": counts.recounting, "two upserts (before)": two_upserts, "floor": not_kept}
        times: dict[str, list[float]] = {name: [] for name in ways}
        kept = counts.recounting
        try:
            for round_ in range(args.rounds):
                for k, (name, way) in enumerate(ways.items()):
                    counts.recounting = way
                    offset = (round_ * len(ways) + k) * 7  # other rows every time: each review changes its rows
                    ids = list(range(first + offset, last + 1, step))[:100]
                    start = time.perf_counter()
                    store.review(ids, "bench", "correct", defect="crack" if round_ % 2 else "blowhole")
                    times[name].append((time.perf_counter() - start) * 1000)
        finally:
            counts.recounting = kept
    floor = statistics.median(times["floor"])
    print(f"{'100-row review, roll-up kept by':32s} {'median ms':>10s} {'best ms':>8s} {'x floor':>8s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:32s} {median:10.0f} {min(values):8.0f} {median / floor:8.2f}")
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
