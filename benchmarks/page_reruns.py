"""How long do History and the review queue take to answer a click, at 1,000 and 100,000 stored inspections?

For each store size it seeds a fresh data folder (``benchmarks/seed.py``: SQL only), opens the app the way
it runs (``streamlit_app.py`` with its navigation, through ``streamlit.testing.v1.AppTest``, which runs the
script in this process: the time of ``run()`` is the server's time for the rerun, no browser) and times the
reruns a QC lead causes:

- a filter change (another defect type each round), then clearing it again at the end of the round;
- ticking rows in the table (and unticking them);
- going to another page of results;
- another sort column.

and, on the review queue, "Confirm" (a review is written, so every cached read is read afresh) and "Skip";
and on Inspect's results of a batch of 48 real magnetic-tile photos (classified by the shipped model first, in
a store of their own):
ticking rows, and opening another photo each round in the side panel (with its heatmap; the first heatmap of the
process, which loads the PyTorch network, is paid before the rounds).

Baseline, measured in the same run between the page reruns: the rerun of a page that only writes a title
(the cost of a Streamlit rerun itself under AppTest). Prints medians in ms, their ratio to the baseline, and
the load average; the target is a History rerun of at most 300 ms at 100,000 inspections.

    python benchmarks/page_reruns.py [--sizes 1000 100000] [--repeat 7] [--profile] [--uncached]

``--uncached`` measures the same reruns again with the page's read cache switched off (every read opens the
database, as before :mod:`visionqc.ui.cached`), for a before/after ratio in one run.

``--profile`` prints the 25 most expensive functions of the filter-change reruns at the largest size.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from seed import seed_inspections  # noqa: E402
from streamlit.runtime.scriptrunner.script_runner import ScriptRunner  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from visionqc.ui import cached, history  # noqa: E402

READS = cached.READS

TABLE_KEY = f"{history.HISTORY_TABLE}_key"  # the results table's key: it carries the ids shown


def _open_page(home: Path, page: str) -> AppTest:
    os.environ["VISIONQC_HOME"] = str(home)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300)
    at.run()
    at.switch_page(page).run()
    if at.exception:
        raise SystemExit(f"{page} crashed: {at.exception}")
    at.text_input(key="sidebar_reviewer").set_value("Ana").run()  # caches warm: what a second click costs
    HOMES[id(at)] = home
    return at


HOMES: dict[int, Path] = {}  # the data folder of each open page (VISIONQC_HOME is read at every rerun)


def _timed(at: AppTest) -> float:
    if id(at) in HOMES:
        os.environ["VISIONQC_HOME"] = str(HOMES[id(at)])
    start = time.perf_counter()
    at.run()
    elapsed = (time.perf_counter() - start) * 1000
    if at.exception:
        raise SystemExit(f"the page crashed: {at.exception}")
    return elapsed


def _interactions(at: AppTest, repeat: int) -> dict[str, callable]:
    """Each interaction: a function of the round that sets a widget (or the table's selection) and returns the
    rerun's ms. Every round asks for something not asked before (another defect type, page, sort column), so
    the filtered rows are never served from the cache of an earlier round; only what did not change is."""
    defects = at.multiselect(key="history_f_defects").options
    sorts = [name for name in history.SORT_CHOICES if name != "Inspected at"]

    def tick(rows):
        def run(_round):
            at.session_state[at.session_state[TABLE_KEY]] = {"selection": {"rows": rows, "columns": [], "cells": []}}
            return _timed(at)

        return run

    def widget(setter):
        def run(round_):
            setter(round_)
            return _timed(at)

        return run

    return {
        "filter change": widget(
            lambda r: at.multiselect(key="history_f_defects").set_value([defects[r % len(defects)]])
        ),
        "tick 3 rows": tick([0, 1, 2]),
        "untick": tick([]),
        "next page": widget(lambda r: at.number_input(key="history_page").set_value(2 + r)),
        "sort change": widget(lambda r: at.selectbox(key="history_sort").set_value(sorts[r % len(sorts)])),
        "filter cleared": widget(lambda r: at.multiselect(key="history_f_defects").set_value([])),
    }


@contextlib.contextmanager
def _profiling(profiler: cProfile.Profile | None):
    """Profile the script runs inside the block: AppTest runs the script in a thread of its own."""
    if profiler is None:
        yield
        return
    original = ScriptRunner._run_script

    def profiled(self, *args, **kwargs):
        profiler.enable()
        try:
            return original(self, *args, **kwargs)
        finally:
            profiler.disable()

    ScriptRunner._run_script = profiled
    try:
        yield
    finally:
        ScriptRunner._run_script = original


def _baseline(folder: Path) -> AppTest:
    script = folder / "empty_page.py"
    script.write_text("import streamlit as st\n\nst.title('Baseline')\n")
    at = AppTest.from_file(str(script), default_timeout=60)
    at.run()
    return at


def _queue_interactions(at: AppTest) -> dict[str, callable]:
    def click(label):
        def run(_round):
            [button] = [b for b in at.button if b.label == label]
            button.click()
            return _timed(at)

        return run

    return {"queue: Confirm": click("Confirm"), "queue: Skip": click("Skip")}


def _inspect_results(home: Path) -> tuple[AppTest, dict[str, callable]]:
    """Inspect showing a batch of 48 real photos, and its interactions (skipped without the shared data)."""
    from visionqc import config
    from visionqc.intake.uploads import UploadFile
    from visionqc.model.predict import Predictor
    from visionqc.store import Store
    from visionqc.store.ingest import run_batch
    from visionqc.ui import upload

    photos = sorted((config.SHARED_DATA / "magnetic-tile" / "images").glob("*/*.jpg"))[::20][:48]
    if not photos:
        return None, {}
    batch = run_batch(Store(home), Predictor(config.model_dir()), [UploadFile(p.name, p.read_bytes()) for p in photos])
    at = _open_page(home, "pages/1_Inspect.py")
    at.session_state[upload.CURRENT_BATCH] = batch.batch_id
    at.run()
    table_key = f"{upload.RESULTS_TABLE}_key"

    def select(rows, cells):
        at.session_state[at.session_state[table_key]] = {"selection": {"rows": rows, "columns": [], "cells": cells}}
        return _timed(at)

    select([], [[0, "File"]])  # the process's first heatmap loads the network: not what a click costs later
    return at, {
        "inspect: open a photo": lambda r: select([], [[1 + r, "File"]]),
        "inspect: tick 3 rows": lambda r: select([r, r + 1, r + 2], []),
    }


def measure(rows: int, repeat: int, workdir: Path, profile: bool) -> dict[str, float]:
    workdir.mkdir(exist_ok=True)
    home = workdir / f"home-{rows}"
    seed_inspections(home, rows)
    at, base = _open_page(home, "pages/2_History.py"), _baseline(workdir)
    runs = _interactions(at, repeat)
    queue = _open_page(home, "pages/5_Review_queue.py")
    runs |= _queue_interactions(queue)
    runs |= _inspect_results(workdir / f"inspect-{rows}")[1]  # its own store: the seed does not advance ids
    timings: dict[str, list[float]] = {name: [] for name in runs}
    timings["baseline"] = []
    profiler = cProfile.Profile() if profile else None
    for round_ in range(repeat):
        for name, run in runs.items():
            timings["baseline"].append(_timed(base))
            with _profiling(profiler if name == "filter change" else None):
                timings[name].append(run(round_))
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    return {name: statistics.median(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--uncached", action="store_true", help="also measure with the read cache switched off")
    args = parser.parse_args()
    print(f"load average before: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="vq-history-rerun-") as tmp:
        for rows, uncached in [(n, off) for n in args.sizes for off in ([False, True] if args.uncached else [False])]:
            cached.READS = frozenset() if uncached else READS
            result = measure(rows, args.repeat, Path(tmp) / str(uncached), args.profile and rows == max(args.sizes))
            base = result.pop("baseline")
            label = ", read cache OFF" if uncached else ""
            print(f"\n{rows:,} inspections{label} (median of {args.repeat}; baseline rerun {base:.0f} ms)")
            print(f"  {'interaction':<16}{'ms':>8}{'x baseline':>12}")
            for name, ms in result.items():
                print(f"  {name:<16}{ms:>8.0f}{ms / base:>12.1f}")
            worst = max(result.values())
            print(f"  slowest: {worst:.0f} ms (target at 100,000: <= 300 ms)")
    print(f"\nload average after: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
