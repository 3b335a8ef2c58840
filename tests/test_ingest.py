"""Batch ingest with the shipped model on real magnetic-tile photos: inspections, images and thumbnails on
disk, duplicates, per-file failures, progress, and a crash mid-batch that leaves the store consistent and
the batch resumable."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from visionqc.filters import InspectionFilter
from visionqc.intake.uploads import UploadFile, iter_named_bytes
from visionqc.model.predict import Predictor
from visionqc.store import Store
from visionqc.store.ingest import run_batch, sha256_hex

pytestmark = pytest.mark.usefixtures("backend")  # every test on DuckDB and on PostgreSQL


@pytest.fixture(scope="module")
def predictor(default_model_dir) -> Predictor:
    return Predictor(default_model_dir)


@pytest.fixture(scope="module")
def tiles(magnetic_tile) -> list[tuple[str, bytes]]:
    """Two photos of each defect class and three defect-free ones, as (name, bytes)."""
    picked = []
    for folder in sorted((magnetic_tile / "images").iterdir()):
        count = 3 if folder.name == "free" else 2
        picked.extend(sorted(folder.glob("*.jpg"))[:count])
    return [(f"{p.parent.name}_{p.name}", p.read_bytes()) for p in picked]


def zip_of(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def counts(store: Store) -> dict[str, int]:
    with store.connect() as con:
        return {
            table: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("inspections", "embeddings", "images", "duplicates", "failures", "batches")
        }


def test_batch_is_classified_stored_and_summarised(tmp_path, predictor, tiles):
    store = Store(tmp_path / "home")
    first_bytes = tiles[0][1]
    uploads = list(
        iter_named_bytes(
            [
                *tiles,
                ("copy of first.jpg", first_bytes),  # same bytes again in the same upload
                ("truncated.jpg", first_bytes[: len(first_bytes) // 3]),
                ("notes.txt", b"not a photo"),
                ("Prüfung.zip", zip_of({"inner/a.jpg": tiles[1][1], "../evil.jpg": tiles[2][1]})),
            ]
        )
    )
    progress: list[tuple[int, int | None]] = []
    result = run_batch(
        store,
        predictor,
        uploads,
        station="Line 2",
        operator="Ana",
        note="night shift",
        progress=lambda done, total: progress.append((done, total)),
        chunk_size=4,
    )

    assert result.inspected == len(tiles)
    assert [(d.file_name, d.inspection_id) for d in result.duplicates] == [
        ("copy of first.jpg", result.inspection_ids[0]),
        ("Prüfung.zip/inner/a.jpg", result.inspection_ids[1]),
    ]
    reasons = {f.file_name: f.reason for f in result.failures}
    assert set(reasons) == {"truncated.jpg", "notes.txt", "Prüfung.zip/../evil.jpg"}
    assert reasons["truncated.jpg"].startswith("truncated image")
    assert "not an image file type" in reasons["notes.txt"]
    assert result.files == len(uploads)

    # progress: one step per file, ending at the total
    assert [d for d, _ in progress] == list(range(1, len(uploads) + 1))
    assert {t for _, t in progress} == {len(uploads)}

    batch = store.batch(result.batch_id)
    assert (batch["status"], batch["station"], batch["operator"], batch["note"], batch["source"]) == (
        "complete",
        "Line 2",
        "Ana",
        "night shift",
        "app",
    )
    assert batch["model_name"] == predictor.model_name
    summary = result.summary
    assert summary["inspected"] == len(tiles) and sum(summary["by_action"].values()) == len(tiles)
    assert summary["duplicates"] == 2 and summary["failures"] == 3
    assert counts(store) == {
        "inspections": len(tiles),
        "embeddings": len(tiles),
        "images": len(tiles),
        "duplicates": 2,
        "failures": 3,
        "batches": 1,
    }

    rows = store.batch_rows(result.batch_id)
    assert rows["file_name"].tolist() == [name for name, _ in tiles]
    first = rows.iloc[0]
    assert first["sha256"] == sha256_hex(first_bytes)
    assert Path(first["image_file"]).read_bytes() == first_bytes  # content-addressed original
    assert Path(first["image_file"]).name == f"{first['sha256']}.jpg"
    assert Path(first["thumb_file"]).is_file()
    assert set(rows["pred_defect"]) <= set(predictor.card.classes("defect"))
    assert rows["confidence"].between(0, 1).all()
    detail = store.inspection_detail(int(first["inspection_id"]))
    assert set(detail["probabilities"]["defect"]) == set(predictor.card.classes("defect"))
    assert detail["probabilities"]["defect"][detail["pred_defect"]] == pytest.approx(detail["confidence"])
    assert (detail["width"], detail["height"], detail["format"]) == (
        *Image.open(io.BytesIO(first_bytes)).size,
        "JPEG",
    )
    ids, vectors = store.embeddings(InspectionFilter(batches=(result.batch_id,)))
    assert ids.tolist() == result.inspection_ids
    assert vectors.shape == (len(tiles), 1280)
    # defect-free predictions carry no severity or location
    free = rows[rows["pred_defect"] == predictor.card.no_defect_class]
    assert free["pred_severity"].isna().all() and free["pred_location"].isna().all()


def test_a_second_batch_of_the_same_photos_is_all_duplicates(tmp_path, predictor, tiles):
    store = Store(tmp_path / "home")
    first = run_batch(store, predictor, [UploadFile(n, d) for n, d in tiles[:4]], source="cli")
    second = run_batch(store, predictor, [UploadFile(f"again/{n}", d) for n, d in tiles[:4]])
    assert second.inspected == 0
    assert [d.inspection_id for d in second.duplicates] == first.inspection_ids
    assert store.count() == 4  # not counted again
    assert second.summary["inspected"] == 0 and second.summary["duplicates"] == 4
    dups = store.batch_duplicates(second.batch_id)
    assert dups["earlier_batch_id"].tolist() == [first.batch_id] * 4
    assert dups["earlier_file_name"].tolist() == [n for n, _ in tiles[:4]]
    # a soft-deleted inspection no longer counts as "seen before"
    store.soft_delete(first.inspection_ids[:1], "Ana")
    third = run_batch(store, predictor, [UploadFile("back.jpg", tiles[0][1])])
    assert third.inspected == 1 and not third.duplicates


class PowerCut(RuntimeError):
    pass


class CrashingPredictor:
    """The real predictor, except that its stream dies after ``after`` results."""

    def __init__(self, real: Predictor, after: int):
        self.real = real
        self.after = after

    def __getattr__(self, name):
        return getattr(self.real, name)

    def predict_stream(self, items):
        for i, out in enumerate(self.real.predict_stream(items)):
            if i == self.after:
                raise PowerCut("the predictor died mid-stream")
            yield out


def test_crash_mid_batch_leaves_whole_chunks_and_the_batch_resumes(tmp_path, predictor, tiles):
    store = Store(tmp_path / "home")
    uploads = [UploadFile(n, d) for n, d in tiles] + [UploadFile("broken.jpg", b"\xff\xd8\xff garbage")]
    with pytest.raises(PowerCut):
        run_batch(store, CrashingPredictor(predictor, after=7), uploads, chunk_size=3)

    (batch_id,) = store.list_batches()["batch_id"].tolist()
    assert store.batch(batch_id)["status"] == "open"
    written = counts(store)
    # only whole chunks landed: every inspection has its embedding and its image row
    assert 0 < written["inspections"] < len(tiles)
    assert written["inspections"] == written["embeddings"] == written["images"]
    with store.connect() as con:
        orphans = con.execute(
            "SELECT count(*) FROM inspections i LEFT JOIN images im USING (sha256) "
            "LEFT JOIN embeddings e USING (inspection_id) WHERE im.sha256 IS NULL OR e.inspection_id IS NULL"
        ).fetchone()[0]
    assert orphans == 0
    done_before = len(store.recorded_names(batch_id))

    resumed = run_batch(store, predictor, uploads, batch_id=batch_id)
    assert resumed.skipped == done_before
    assert resumed.inspected == len(tiles) - written["inspections"]
    assert not resumed.duplicates  # files the batch already holds are skipped, not reported as duplicates
    assert store.batch(batch_id)["status"] == "complete"
    rows = store.batch_rows(batch_id)
    assert sorted(rows["file_name"]) == sorted(n for n, _ in tiles)  # each file exactly once
    assert store.batch_failures(batch_id)["file_name"].tolist() == ["broken.jpg"]
    assert counts(store)["embeddings"] == len(tiles)


def test_resuming_an_unknown_batch_is_refused(tmp_path, predictor, tiles):
    store = Store(tmp_path / "home")
    with pytest.raises(ValueError, match="no batch"):
        run_batch(store, predictor, [UploadFile(*tiles[0])], batch_id="nope")


def test_store_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, visionqc.store, visionqc.store.ingest; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
