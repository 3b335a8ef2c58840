"""Dashboard speed on a 1,000,000-inspection database, in one process.

    python3 benchmarks/dashboard.py [--rows 1000000] [--postgres]

``--postgres``: the same rows copied into a throwaway PostgreSQL server (benchmarks/postgres.py), timed there.

Baseline: a plain `SELECT count(*)` over the inspection view through the store (connection open and close
included), measured in the same run. Measured: every dashboard aggregate for one filter state
(analytics.dashboard_data: KPIs and all six charts' numbers), with and without a cross-filter, and the
page's full server-side render (AppTest run of the Dashboard page, charts and all). Targets: aggregates
under 500 ms in total; full render under 1.5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from seed import seed_inspections  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from visionqc.filters import InspectionFilter, Period  # noqa: E402
from visionqc.store import analytics  # noqa: E402


def best_ms(fn, repeat: int = 5) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", action="store_true", help="time a copy in a throwaway PostgreSQL server")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} (2 shared cores: read the ratios)")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        home = Path(tmp) / "home"
        start = time.perf_counter()
        store = seed_inspections(home, args.rows, days=120)
        print(f"seeded {args.rows:,} inspections in {time.perf_counter() - start:.1f} s")
        if args.postgres:
            from postgres import copy_to_postgres, throwaway_server

            server = stack.enter_context(throwaway_server())
            url = server.new_schema_url()
            store = copy_to_postgres(store, url)
            os.environ["VISIONQC_DATABASE_URL"] = url  # the page's own Store too
        print(f"engine: {store.engine}")

        def count() -> int:
            with store.connect() as con:
                return con.execute("SELECT count(*) FROM inspection_view").fetchone()[0]

        plain = InspectionFilter(timezone="Europe/Berlin")
        crossed = plain.with_labels("defect", ["crack"])
        month = Period("30d")
        base, _ = best_ms(count)
        aggregates, aggregates_median = best_ms(lambda: analytics.dashboard_data(store, plain, month))
        cross, _ = best_ms(lambda: analytics.dashboard_data(store, crossed, month))
        everything, _ = best_ms(lambda: analytics.dashboard_data(store, plain, Period("all")))

        os.environ["VISIONQC_HOME"] = str(home)
        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
        if args.postgres:  # a shared store always asks for sign-in: a viewer signs in first
            from visionqc.accounts import hash_password

            store.add_user("bench", "operator", hash_password("bench-password-1"))
        at.run()
        if args.postgres:
            at.text_input(key="sign_in_username").set_value("bench")
            at.text_input(key="sign_in_password").set_value("bench-password-1")
            [button] = [b for b in at.button if b.label == "Sign in"]
            button.click().run()
        at.switch_page("pages/3_Dashboard.py").run()  # first render: imports and caches, not timed
        assert not at.exception, at.exception
        render, render_median = best_ms(lambda: at.run(), repeat=3)
        assert not at.exception, at.exception

    print(f"baseline count(*)                   : {base:7.1f} ms")
    print(
        f"all aggregates, last 30 days        : {aggregates:7.1f} ms (median {aggregates_median:.1f})  "
        f"= {aggregates / base:.1f}x baseline  (target < 500 ms)"
    )
    print(f"all aggregates, + cross-filter      : {cross:7.1f} ms  = {cross / base:.1f}x baseline")
    print(f"all aggregates, whole history       : {everything:7.1f} ms  = {everything / base:.1f}x baseline")
    print(
        f"page full server-side render        : {render:7.1f} ms (median {render_median:.1f})  "
        f"= {render / base:.1f}x baseline  (target < 1500 ms)"
    )


if __name__ == "__main__":
    main()
