"""A training job on a 1,500-image labelled archive, and the app's responsiveness while it runs, in one process.

    python3 benchmarks/training_job.py [--per-class 250] [--rows 20000]

1. Builds a labelled zip of 1,500 real NEU-DET images (250 per class, ``images/`` + VOC ``boxes/``, the layout the
   dataset ships in) and imports it as a dataset (every image checked), timed.
2. Starts the training job the Models page starts, with the page's default options (3 views, phase 2 tried, no
   stability check), and follows its progress file: total time from submit to the registered version, and the
   longest wait between two moves of the progress bar. Target: <= 10 minutes, moves at least every 10 s.
3. Baseline: a full server-side render of the History page (AppTest, 20,000 seeded inspections) while nothing
   runs; measured: the same render while the job runs (the worker runs at nice 10). Target: <= 2x the idle time.

Absolute times depend on what else the machine does: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from seed import seed_inspections  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from visionqc import config  # noqa: E402
from visionqc.datasets.archive import import_dataset  # noqa: E402
from visionqc.jobs import queue  # noqa: E402
from visionqc.jobs.progress import read_progress  # noqa: E402
from visionqc.jobs.training_job import KIND, TrainingOptions  # noqa: E402
from visionqc.registry import ModelRegistry  # noqa: E402

NEU_DET = config.SHARED_DATA / "neu-det"


def build_archive(path: Path, per_class: int) -> int:
    count = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for class_dir in sorted((NEU_DET / "images").iterdir()):
            for image in sorted(class_dir.glob("*.jpg"))[:per_class]:
                archive.write(image, f"neu-det-{per_class}/images/{class_dir.name}/{image.name}")
                box = NEU_DET / "boxes" / class_dir.name / f"{image.stem}.xml"
                if box.is_file():
                    archive.write(box, f"neu-det-{per_class}/boxes/{class_dir.name}/{box.name}")
                count += 1
    return count


def render_ms(at: AppTest, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        at.run()
        times.append((time.perf_counter() - start) * 1000)
        assert not at.exception, at.exception
    return times


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=250)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    if not NEU_DET.is_dir():
        print(f"{NEU_DET} is absent", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="vq-train-bench-") as tmp:
        home = Path(tmp) / "home"
        os.environ["VISIONQC_HOME"] = str(home)
        os.environ.pop("VISIONQC_MODEL", None)
        store = seed_inspections(home, args.rows)
        registry = ModelRegistry(home)
        registry.ensure_initialised()

        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
        at.run()
        at.switch_page("pages/2_History.py").run()  # first render: imports and caches, not timed
        idle = render_ms(at, 5)

        archive = Path(tmp) / "neu-det-1500.zip"
        images = build_archive(archive, args.per_class)
        start = time.perf_counter()
        dataset, _ = import_dataset(store, "neu-det-1500", archive, by="benchmark")
        import_s = time.perf_counter() - start

        options = TrainingOptions()  # the Models page's defaults
        params = {"name": "neu-det-bench", "dataset": dataset["dataset_id"], "options": options.to_json()}
        load_start = os.getloadavg()
        submitted = time.perf_counter()
        job_id = queue.submit(store, KIND, params, by="benchmark", dataset_id=dataset["dataset_id"])
        moves, busy = [], []
        last_fraction, last_move, last_stage = -1.0, time.perf_counter(), None
        next_render = time.perf_counter() + 15
        while True:
            job = store.job(job_id)
            progress = read_progress(home, job_id) or {}
            now = time.perf_counter()
            if job["status"] == "running" and progress.get("fraction", -1) > last_fraction:
                if last_fraction >= 0:
                    moves.append((now - last_move, last_stage, progress.get("stage_label")))
                last_fraction, last_move, last_stage = progress["fraction"], now, progress.get("stage_label")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            if job["status"] == "running" and now >= next_render:
                busy.extend(render_ms(at, 2))
                next_render = time.perf_counter() + 15
            time.sleep(0.5)
        total_s = time.perf_counter() - submitted
        load_end = os.getloadavg()
        if job["status"] != "succeeded":
            print(f"job {job['status']}: {job['error']}", file=sys.stderr)
            return 1
        version = registry.find("neu-det-bench")

    idle_ms, busy_ms = statistics.median(idle), statistics.median(busy)
    print(f"archive                         : {images} images, import (every image checked) {import_s:.1f} s")
    cpu = job["result"].get("cpu_seconds")
    print(f"training job, submit -> registered: {total_s / 60:.1f} min  (target <= 10 min)")
    if cpu:
        print(f"CPU time of the job             : {cpu:.0f} core-seconds = {cpu / 2 / 60:.1f} min on 2 idle cores")
    longest = sorted(moves, reverse=True)[:3]
    print(f"longest wait between progress moves: {longest[0][0]:.1f} s over {len(moves)} moves  (target <= 10 s)")
    for gap, before, after in longest:
        print(f"    {gap:5.1f} s  from '{before}' to '{after}'")
    print(f"test balanced accuracy          : {version.metrics.get('balanced_accuracy')}")
    print(f"History render idle (baseline)  : {idle_ms:.0f} ms median of {len(idle)}")
    print(
        f"History render during the job   : {busy_ms:.0f} ms median of {len(busy)} = {busy_ms / idle_ms:.2f}x idle "
        "(target <= 2x)"
    )
    print(f"load average at submit / at end : {[round(v, 2) for v in load_start]} / {[round(v, 2) for v in load_end]}")
    print(f"cpu count                       : {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
