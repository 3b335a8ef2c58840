"""``python -m visionqc inspect`` as a user runs it: a real subprocess, the shipped model, real photos, and
the app's store writing to the same DuckDB file at the same time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from visionqc.config import PROJECT_ROOT
from visionqc.filters import InspectionFilter
from visionqc.intake.uploads import UploadFile
from visionqc.model.predict import Predictor
from visionqc.store import Store
from visionqc.store.ingest import run_batch


def photos(magnetic_tile: Path, folder: str, count: int, skip: int = 0) -> list[Path]:
    return sorted((magnetic_tile / "images" / folder).glob("*.jpg"))[skip : skip + count]


def inspect_command(model_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "visionqc", "inspect", "--model", str(model_dir), *args]


def run_inspect(home: Path, model_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VISIONQC_HOME": str(home)}
    return subprocess.run(
        inspect_command(model_dir, *args), cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_inspect_stores_a_batch_and_prints_the_summary(tmp_path, default_model_dir, magnetic_tile):
    folder = tmp_path / "incoming"
    folder.mkdir()
    for path in photos(magnetic_tile, "crack", 3) + photos(magnetic_tile, "free", 2):
        shutil.copy(path, folder / path.name)
    (folder / "empty.jpg").write_bytes(b"")
    archive = tmp_path / "Prüfung.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(photos(magnetic_tile, "blowhole", 1)[0], "tiles/blowhole.jpg")
        zf.write(photos(magnetic_tile, "crack", 1)[0], "tiles/same-as-a-crack.jpg")  # duplicate of a folder file
    home = tmp_path / "data"

    done = run_inspect(home, default_model_dir, str(folder), str(archive), "--station", "Line 3", "--operator", "Bo")
    assert done.returncode == 0, done.stderr
    assert "new inspections: 6" in done.stdout
    assert "needs review:" in done.stdout
    assert "duplicates (seen before, not counted again): 1" in done.stdout
    assert "failed: 1" in done.stdout
    assert "could not read" in done.stderr and "empty.jpg: empty file (0 bytes)" in done.stderr

    store = Store(home)
    (batch,) = store.list_batches().to_dict("records")
    assert (batch["source"], batch["station"], batch["operator"], batch["status"]) == (
        "cli",
        "Line 3",
        "Bo",
        "complete",
    )
    assert batch["batch_id"] in done.stdout
    summary = store.batch_summary(batch["batch_id"])
    for action, n in summary["by_action"].items():
        assert f"  {action}: {n}" in done.stdout
    assert store.count() == 6
    assert store.distinct_values("station") == ["Line 3"]

    again = run_inspect(home, default_model_dir, str(folder))
    assert again.returncode == 0, again.stderr
    assert "new inspections: 0" in again.stdout
    assert "duplicates (seen before, not counted again): 5" in again.stdout
    assert store.count() == 6


def test_inspect_with_nothing_readable_exits_non_zero(tmp_path, default_model_dir):
    (tmp_path / "notes.txt").write_text("hello")
    done = run_inspect(tmp_path / "data", default_model_dir, str(tmp_path / "notes.txt"), str(tmp_path / "missing"))
    assert done.returncode == 2
    assert "not found" in done.stderr and "new inspections: 0" in done.stdout


@pytest.mark.slow
def test_cli_and_app_write_the_same_database_at_once(tmp_path, default_model_dir, magnetic_tile):
    """The CLI ingests in one process while this process ingests and reviews: both succeed, nothing is lost."""
    home = tmp_path / "data"
    store = Store(home)
    predictor = Predictor(default_model_dir)
    first = run_batch(store, predictor, [UploadFile(p.name, p.read_bytes()) for p in photos(magnetic_tile, "free", 6)])
    cli_photos = photos(magnetic_tile, "blowhole", 80)
    folder = tmp_path / "cli-input"
    folder.mkdir()
    for path in cli_photos:
        shutil.copy(path, folder / path.name)
    app_photos = photos(magnetic_tile, "uneven", 24)

    env = {**os.environ, "VISIONQC_HOME": str(home)}
    cli = subprocess.Popen(
        inspect_command(default_model_dir, str(folder), "--station", "CLI", "--quiet"),
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reviews = tags = overlapping = 0
    app_batches = []
    try:
        # Wait until the CLI has opened its batch, then write from this process while it keeps writing.
        deadline = time.monotonic() + 300
        while cli.poll() is None and not (store.distinct_values("station")) and time.monotonic() < deadline:
            time.sleep(0.2)
        for start in range(0, len(app_photos), 6):
            # The quick writes first: the first of them lands while the CLI is still predicting its photos.
            target = first.inspection_ids[start // 6 % len(first.inspection_ids)]
            reviews += store.review([target], "Ana", "correct", defect="crack", severity="low", location="edge")
            tags += store.add_tags([target], [f"round-{start}"])
            overlapping += cli.poll() is None
            chunk = [UploadFile(p.name, p.read_bytes()) for p in app_photos[start : start + 6]]
            app_batches.append(run_batch(store, predictor, chunk, station="App", chunk_size=2))
            overlapping += cli.poll() is None
        stdout, stderr = cli.communicate(timeout=600)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, stderr
    assert overlapping > 0, "the CLI finished before the app wrote anything; the test did not overlap"
    assert f"new inspections: {len(cli_photos)}" in stdout

    assert store.count(InspectionFilter(stations=("CLI",))) == len(cli_photos)
    assert store.count(InspectionFilter(stations=("App",))) == len(app_photos)
    assert sum(b.inspected for b in app_batches) == len(app_photos)
    assert store.count() == 6 + len(cli_photos) + len(app_photos)
    with store.connect() as con:
        assert con.execute("SELECT count(*) FROM reviews").fetchone()[0] == reviews == len(app_batches)
        assert con.execute("SELECT count(*) FROM tags").fetchone()[0] == tags == len(app_batches)
        assert con.execute("SELECT count(*) FROM embeddings").fetchone()[0] == store.count()
    statuses = set(store.list_batches()["status"])
    assert statuses == {"complete"}


def test_inspect_help_documents_the_options():
    done = subprocess.run(
        [sys.executable, "-m", "visionqc", "inspect", "--help"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0
    for option in ("--station", "--operator", "--note", "--model", "--resume", "VISIONQC_HOME"):
        assert option in done.stdout


@pytest.mark.slow
def test_killed_inspect_leaves_a_consistent_database_and_resumes(tmp_path, default_model_dir, magnetic_tile):
    """SIGKILL mid-batch (a power cut): committed chunks stay whole, and --resume finishes the batch."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    sources = photos(magnetic_tile, "free", 100, skip=100)
    for path in sources:
        shutil.copy(path, folder / path.name)
    home = tmp_path / "data"
    store = Store(home)
    env = {**os.environ, "VISIONQC_HOME": str(home)}
    cli = subprocess.Popen(
        inspect_command(default_model_dir, str(folder), "--quiet"),
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while cli.poll() is None and store.count() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        cli.kill()
        cli.wait(timeout=60)
    written = store.count()
    if written == len(sources):
        pytest.skip("the CLI finished before it could be killed")
    assert written > 0
    (batch_id,) = store.list_batches()["batch_id"].tolist()
    assert store.batch(batch_id)["status"] == "open"
    with store.connect() as con:
        embeddings, images = con.execute(
            "SELECT (SELECT count(*) FROM embeddings), (SELECT count(*) FROM images)"
        ).fetchone()
    assert embeddings == images == written  # no half-written rows

    done = run_inspect(home, default_model_dir, str(folder), "--resume", batch_id)
    assert done.returncode == 0, done.stderr
    assert f"skipped {written} already in the batch" in done.stdout
    assert store.batch(batch_id)["status"] == "complete"
    rows = store.batch_rows(batch_id)
    assert sorted(Path(name).name for name in rows["file_name"]) == sorted(p.name for p in sources)
    assert store.batch_summary(batch_id)["duplicates"] == 0


def test_report_writes_the_lot_report_of_a_batch_inspected_by_the_command_line(
    tmp_path, default_model_dir, magnetic_tile
):
    from pypdf import PdfReader

    folder = tmp_path / "lot"
    folder.mkdir()
    for path in (
        photos(magnetic_tile, "break", 3) + photos(magnetic_tile, "uneven", 2) + photos(magnetic_tile, "free", 2)
    ):
        shutil.copy(path, folder / path.name)
    (folder / "drawing.pdf").write_bytes(b"%PDF-1.4 not a photo")
    home = tmp_path / "data"
    done = run_inspect(
        home, default_model_dir, str(folder), "--station", "Line 4", "--operator", "Zoë", "--lot", "L-0042", "--quiet"
    )
    assert done.returncode == 0, done.stderr
    assert "drawing.pdf: skipped: not an image file type (.pdf)" in done.stderr, "a PDF is never skipped silently"
    batch_id = done.stdout.split()[1]
    out = tmp_path / "lot.pdf"
    env = {**os.environ, "VISIONQC_HOME": str(home)}
    report = subprocess.run(
        [sys.executable, "-m", "visionqc", "report", batch_id, "--out", str(out), "--timezone", "Europe/Berlin"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    text = " ".join(page.extract_text() for page in PdfReader(out).pages)
    for expected in (batch_id, "Line 4", "Zoë", "L-0042", "magnetic-tile", "Europe/Berlin (UTC+0", "Sign-off"):
        assert expected in text, expected
    rows, _ = Store(home).search(InspectionFilter(batches=(batch_id,), actions=("Reject", "Hold")), page_size=0)
    assert len(rows), "the photos include defects the model rejects or holds"
    unwrapped = "".join(text.split())  # long names wrap inside their cell
    for name in rows["file_name"]:  # a long path keeps its end in the report: the file's own name
        assert Path(name).name in unwrapped, name
    missing = subprocess.run(
        [sys.executable, "-m", "visionqc", "report", "no-such-batch"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode != 0 and "no batch 'no-such-batch'" in missing.stderr
