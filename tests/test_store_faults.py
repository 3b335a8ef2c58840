"""Faults without damage, with real processes and real files: a damaged database is reported before anything
writes to it (its bytes stay the same); a full disk (a real small tmpfs, and a simulated ENOSPC) stops a
batch with a message, a consistent database and no leftover temporary files, and ``--resume`` finishes it; a
read-only folder (a real read-only bind mount: chmod is not read-only for root) can be browsed and refuses
writes with a message; a backup taken while ``inspect`` writes is consistent, and restore puts one back."""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import time
from pathlib import Path

import pytest
from faults import (
    damage_a_block,
    digest,
    grow,
    inspect_in_background,
    read_only_mount,
    small_disk,
    truncate,
    visionqc,
)

from visionqc.intake.uploads import UploadFile
from visionqc.model.predict import Predictor
from visionqc.store import Store, StoreCorruptError, StoreReadOnlyError, StoreSpaceError
from visionqc.store.ingest import run_batch
from visionqc.store.schema import DB_FILE

EXIT_STORE_ERROR = 4


@pytest.fixture(scope="module")
def predictor(default_model_dir) -> Predictor:
    return Predictor(default_model_dir)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, predictor, tile_photos) -> Path:
    """A data folder with 12 real inspections in two batches."""
    home = tmp_path_factory.mktemp("faults") / "visionqc-data"
    store = Store(home)
    photos = [UploadFile(p.name, p.read_bytes()) for p in tile_photos(12, offset=500)]
    run_batch(store, predictor, photos[:6], station="Line 1")
    run_batch(store, predictor, photos[6:], station="Line 2")
    return home


@pytest.fixture
def home(seeded, tmp_path) -> Path:
    copy = tmp_path / "visionqc-data"
    shutil.copytree(seeded, copy)
    return copy


@pytest.fixture
def photo_folder(tmp_path, tile_photos) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    for i, path in enumerate(tile_photos(16, offset=600)):
        shutil.copy(path, folder / f"tile_{i:02d}.jpg")
    return folder


def consistent_counts(store: Store) -> dict[str, int]:
    """Row counts, after checking that no inspection lacks its embedding or its image row."""
    with store.connect() as con:
        counts = {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("inspections", "embeddings", "images", "image_claims", "duplicates", "failures", "batches")
        }
        orphans = con.execute(
            "SELECT count(*) FROM inspections i LEFT JOIN images im USING (sha256) "
            "LEFT JOIN embeddings e USING (inspection_id) WHERE im.sha256 IS NULL OR e.inspection_id IS NULL"
        ).fetchone()[0]
    assert orphans == 0
    assert counts["inspections"] == counts["embeddings"] == counts["images"] == counts["image_claims"]
    return counts


def no_temporary_files(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.name.endswith(".tmp")]


# --- a damaged database -----------------------------------------------------------------------------
DAMAGE = {"truncated": truncate, "damaged block": damage_a_block}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_database_is_reported_and_never_written(home, photo_folder, default_model_dir, damage):
    DAMAGE[damage](home)
    before = digest(home / DB_FILE)

    done = visionqc(home, "inspect", "--model", str(default_model_dir), str(photo_folder), "--quiet")
    assert done.returncode == EXIT_STORE_ERROR
    assert "Traceback" not in done.stderr
    message = done.stderr
    assert f"The inspection database {home / DB_FILE} is damaged" in message
    assert ("cut off" in message) if damage == "truncated" else ("does not match its checksum" in message)
    assert "python -m visionqc restore" in message and "VISIONQC_HOME" in message
    assert digest(home / DB_FILE) == before, "the damaged file was written to"
    # No WAL, nothing new: only the (empty) lock file every VisionQC process holds while it has the file open, and
    # the (empty) turn file of a process waiting for it (visionqc/store/filelock.py).
    locks = [DB_FILE + ".lock", DB_FILE + ".lock.turn"]
    assert sorted(p.name for p in home.iterdir()) == sorted(["images", "thumbs", DB_FILE, *locks])
    assert all((home / lock).stat().st_size == 0 for lock in locks)

    with pytest.raises(StoreCorruptError):
        Store(home)
    backup = visionqc(home, "backup", "--out", str(home.parent / "backup.duckdb"))
    assert backup.returncode == EXIT_STORE_ERROR and "is damaged" in backup.stderr
    assert not (home.parent / "backup.duckdb").exists()
    assert digest(home / DB_FILE) == before


def test_damage_found_after_opening_stops_every_later_write(home):
    store = Store(home)
    damage_a_block(home)
    before = digest(home / DB_FILE)
    with pytest.raises(StoreCorruptError, match="does not match its checksum"):
        store.search()
    with pytest.raises(StoreCorruptError):
        store.create_batch(station=None, operator=None, note=None, source="cli", model_name="m", model_version="1")
    assert digest(home / DB_FILE) == before


def test_a_backup_restores_a_damaged_database(home):
    store = Store(home)
    expected = consistent_counts(store)
    backup_file = home.parent / "monday.duckdb"
    done = visionqc(home, "backup", "--out", str(backup_file))
    assert done.returncode == 0, done.stderr
    assert f"{expected['inspections']} inspection(s) in {expected['batches']} batch(es)" in done.stdout
    again = visionqc(home, "backup", "--out", str(backup_file))
    assert again.returncode == EXIT_STORE_ERROR and "never overwrites" in again.stderr

    truncate(home)
    damaged = digest(home / DB_FILE)
    done = visionqc(home, "restore", str(backup_file))
    assert done.returncode == 0, done.stderr
    (kept,) = home.glob(f"{DB_FILE}.replaced-*")
    assert digest(kept) == damaged  # the damaged file is kept, not deleted
    assert consistent_counts(Store(home)) == expected


def test_a_damaged_backup_is_refused_and_nothing_is_replaced(home):
    backup_file = home.parent / "bad.duckdb"
    assert visionqc(home, "backup", "--out", str(backup_file)).returncode == 0
    with backup_file.open("r+b") as f:
        f.truncate(backup_file.stat().st_size // 2 + 99)
    before = digest(home / DB_FILE)
    done = visionqc(home, "restore", str(backup_file))
    assert done.returncode == EXIT_STORE_ERROR
    assert "is damaged too" in done.stderr and "Traceback" not in done.stderr
    assert digest(home / DB_FILE) == before
    assert not list(home.glob("*.replaced-*")) and not no_temporary_files(home)


@pytest.mark.slow
def test_a_backup_taken_while_inspect_writes_is_consistent(home, tmp_path, default_model_dir, tile_photos):
    folder = tmp_path / "shift"
    folder.mkdir()
    for i, path in enumerate(tile_photos(48, offset=700)):
        shutil.copy(path, folder / f"tile_{i:02d}.jpg")
    writer = inspect_in_background(home, default_model_dir, folder)
    store = Store(home)
    start = store.count()
    backups, taken_during = [], 0
    try:
        deadline = time.monotonic() + 300
        while writer.poll() is None and store.count() == start and time.monotonic() < deadline:
            time.sleep(0.2)
        for n in range(2):
            out = tmp_path / f"backup-{n}.duckdb"
            done = visionqc(home, "backup", "--out", str(out), timeout=300)
            assert done.returncode == 0, done.stderr
            taken_during += writer.poll() is None
            backups.append(out)
        _, stderr = writer.communicate(timeout=600)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, stderr
    if not taken_during:
        pytest.skip("inspect finished before a backup could be taken during it")
    sizes = []
    for out in backups:
        restored = tmp_path / f"restored-{out.stem}"
        restored.mkdir()
        shutil.copy(out, restored / DB_FILE)
        counts = consistent_counts(Store(restored))
        sizes.append(counts["inspections"])
    assert sizes == sorted(sizes) and start <= sizes[0] and sizes[-1] <= store.count() == start + 48


# --- a full disk --------------------------------------------------------------------------------------
def test_a_full_disk_while_saving_photos_stops_the_batch_cleanly_and_it_resumes(
    home, predictor, tile_photos, monkeypatch
):
    """Simulated ENOSPC (the photo copy fails after a few files): the same code path a real full disk takes."""
    import visionqc.store.images as images

    real_replace, calls = os.replace, []

    def disk_fills(src, dst):
        calls.append(dst)
        if len(calls) > 9:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))
        real_replace(src, dst)

    monkeypatch.setattr(images.os, "replace", disk_fills)
    store = Store(home)
    before = consistent_counts(store)
    uploads = [UploadFile(p.name, p.read_bytes()) for p in tile_photos(12, offset=800)]
    with pytest.raises(StoreSpaceError, match="The disk is full") as failure:
        run_batch(store, predictor, uploads, chunk_size=2)
    assert failure.value.batch_id is not None
    assert "Nothing was lost" in str(failure.value)
    assert not no_temporary_files(home)
    after = consistent_counts(store)
    assert 0 < after["inspections"] - before["inspections"] < len(uploads)  # whole chunks only
    assert store.batch(failure.value.batch_id)["status"] == "open"

    monkeypatch.setattr(images.os, "replace", real_replace)  # space was freed
    resumed = run_batch(store, predictor, uploads, batch_id=failure.value.batch_id)
    assert store.batch(resumed.batch_id)["status"] == "complete"
    assert sorted(store.batch_rows(resumed.batch_id)["file_name"]) == sorted(u.name for u in uploads)
    assert consistent_counts(store)["inspections"] == before["inspections"] + len(uploads)


@pytest.mark.slow
def test_inspect_on_a_real_full_disk_says_so_and_resume_finishes(tmp_path, photo_folder, default_model_dir):
    """A 1.5 MB tmpfs fills up mid-batch; after it grows, the printed --resume command completes the batch."""
    with small_disk(tmp_path / "disk", 1536 * 1024) as disk:
        home = disk / "visionqc-data"
        done = visionqc(home, "inspect", "--model", str(default_model_dir), str(photo_folder), "--quiet")
        assert done.returncode == EXIT_STORE_ERROR, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        assert "The disk is full" in done.stderr and "Nothing was lost" in done.stderr
        assert re.search(r"free at least [\d.]+ MB on that disk", done.stderr)
        assert not no_temporary_files(home)
        command = re.search(r"^  (python -m visionqc inspect .*--resume \S+)$", done.stderr, re.M).group(1)
        batch_id = command.split()[-1]

        grow(disk, 64 * 1024 * 1024)
        store = Store(home)
        consistent_counts(store)
        assert store.batch(batch_id)["status"] == "open"
        resumed = visionqc(home, *shlex.split(command)[3:])
        assert resumed.returncode == 0, resumed.stderr
        assert store.batch(batch_id)["status"] == "complete"
        rows = store.batch_rows(batch_id)
        assert sorted(Path(n).name for n in rows["file_name"]) == sorted(p.name for p in photo_folder.iterdir())
        assert consistent_counts(store)["inspections"] == 16
        assert not no_temporary_files(home)


# --- a read-only folder -----------------------------------------------------------------------------
def assert_browsable_but_not_writable(store: Store, expected: int) -> None:
    assert store.read_only
    assert store.count() == expected
    rows, total = store.search(page_size=5)
    assert total == expected and len(rows) == 5
    assert len(store.list_batches()) == 2
    with pytest.raises(StoreReadOnlyError, match="read-only"):
        store.add_tags([int(rows.iloc[0]["inspection_id"])], ["retrain"])
    with pytest.raises(StoreReadOnlyError):
        store.create_batch(station=None, operator=None, note=None, source="cli", model_name="m", model_version="1")


def test_a_read_only_mount_can_be_browsed_and_refuses_writes_with_a_message(
    home, tmp_path, photo_folder, default_model_dir
):
    """A real read-only bind mount of the data folder: read-only for root as well."""
    before = digest(home / DB_FILE)
    with read_only_mount(home, tmp_path / "ro") as ro:
        store = Store(ro)
        assert store.read_only_reason == "its file system is mounted read-only"
        assert_browsable_but_not_writable(store, 12)

        done = visionqc(ro, "inspect", "--model", str(default_model_dir), str(photo_folder), "--quiet")
        assert done.returncode == EXIT_STORE_ERROR
        assert "Traceback" not in done.stderr
        assert f"The data folder {ro} is read-only (its file system is mounted read-only)" in done.stderr
        assert "write permission for user" in done.stderr

        backup = visionqc(ro, "backup", "--out", str(tmp_path / "from-ro.duckdb"))
        assert backup.returncode == 0, backup.stderr  # reading is all a backup needs

        missing = visionqc(ro / "new-folder", "inspect", "--model", str(default_model_dir), str(photo_folder))
        assert missing.returncode == EXIT_STORE_ERROR and "Traceback" not in missing.stderr
        assert "creating the data folder is not possible" in missing.stderr
    assert digest(home / DB_FILE) == before


def test_a_store_opened_read_only_can_be_browsed(home):
    """The same through DuckDB's read-only open, which needs no mount."""
    assert_browsable_but_not_writable(Store(home, read_only=True), 12)
