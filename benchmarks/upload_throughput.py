"""Uploading a batch through the app vs the command line, on the same 1080p JPEGs, in one process.

    python3 benchmarks/upload_throughput.py [--images 200]

Baseline: what `python -m visionqc inspect` does once its files are read (ingest.run_batch into a fresh
store). App: the Inspect page driven by Streamlit's AppTest: the files set on the real uploader, the
"Inspect N files" button clicked, the results page drawn (thumbnails, table, summary), into another fresh
store. Target: the app reaches at least 80% of the command-line throughput.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from predict_throughput import make_1080p_jpegs  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from visionqc import config  # noqa: E402
from visionqc.intake.uploads import iter_named_bytes  # noqa: E402
from visionqc.model.predict import Predictor  # noqa: E402
from visionqc.store import Store  # noqa: E402
from visionqc.store.ingest import run_batch  # noqa: E402


def time_cli(predictor: Predictor, named: list[tuple[str, bytes]], home: Path) -> float:
    store = Store(home)
    start = time.perf_counter()
    result = run_batch(store, predictor, list(iter_named_bytes(named)), source="cli")
    elapsed = time.perf_counter() - start
    assert result.inspected == len(named), result
    return len(named) / elapsed


def time_app(named: list[tuple[str, bytes]], home: Path) -> float:
    os.environ["VISIONQC_HOME"] = str(home)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=900)
    at.run()  # loads the model into the page's cache: not timed, as the CLI's model load is not
    at.file_uploader(key="inspect_files_0").set_value([(name, data, "image/jpeg") for name, data in named])
    at.run()
    button = at.button(key="inspect_run")
    start = time.perf_counter()
    button.click().run()
    elapsed = time.perf_counter() - start
    assert not at.exception, at.exception
    inspected = Store(home).count()
    assert inspected == len(named), f"the app stored {inspected} of {len(named)}"
    return len(named) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    jpegs = make_1080p_jpegs(args.images)
    # Distinct bytes per file, so no upload is a duplicate of another (duplicates are not re-classified).
    named = [(f"photo_{i:04d}.jpg", data + i.to_bytes(4, "big")) for i, data in enumerate(jpegs)]
    predictor = Predictor(config.model_dir())
    with tempfile.TemporaryDirectory() as tmp:
        time_cli(predictor, named[:16], Path(tmp) / "warm-up")
        cli = time_cli(predictor, named, Path(tmp) / "cli")
        app = time_app(named, Path(tmp) / "app")
    print(f"{len(named)} JPEGs of 1920x1080")
    print(f"command line (ingest.run_batch): {cli:6.1f} images/s  (baseline)")
    print(f"app (Inspect page, AppTest)    : {app:6.1f} images/s")
    print(f"ratio app / command line: {app / cli:.2f}  (target >= 0.80)")


if __name__ == "__main__":
    main()
