"""Exactly once per image under concurrency: racing ``inspect`` processes and racing app sessions (threads
sharing one store, as Streamlit sessions do) over overlapping real magnetic-tile photos store each distinct
image once and account for every other file as a duplicate of it; deleted images may be inspected again;
a version-3 file is migrated to image claims."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import duckdb
import pytest
from faults import inspect_in_background

from visionqc.intake.uploads import UploadFile
from visionqc.model.predict import Predictor
from visionqc.store import Store
from visionqc.store.ingest import run_batch, sha256_hex
from visionqc.store.schema import DB_FILE, MIGRATIONS


@pytest.fixture(scope="module")
def predictor(default_model_dir) -> Predictor:
    return Predictor(default_model_dir)


def assert_each_image_counted_once(store: Store, files: dict[str, bytes], batch_files: dict[str, int]) -> None:
    """Every distinct image has exactly one visible inspection; every other file of every batch is a duplicate
    pointing at that inspection; every batch is complete and holds all its files."""
    distinct = {sha256_hex(data) for data in files.values()}
    with store.connect() as con:
        per_image = dict(
            con.execute("SELECT sha256, count(*) FROM inspections WHERE deleted_at IS NULL GROUP BY sha256").fetchall()
        )
        duplicates = con.execute(
            "SELECT d.batch_id, d.file_name, d.sha256, d.inspection_id, i.sha256, i.deleted_at "
            "FROM duplicates d LEFT JOIN inspections i USING (inspection_id)"
        ).fetchall()
        embeddings, images = con.execute(
            "SELECT (SELECT count(*) FROM embeddings), (SELECT count(*) FROM images)"
        ).fetchone()
    assert per_image == {sha: 1 for sha in distinct}, "an image was stored more than once (or not at all)"
    assert embeddings == images == len(distinct)
    total_files = sum(batch_files.values())
    assert len(duplicates) == total_files - len(distinct)
    for _batch, _name, sha, earlier, earlier_sha, earlier_deleted in duplicates:
        assert earlier_sha == sha and earlier_deleted is None, f"duplicate points at {earlier}, not its image"
    batches = store.list_batches().set_index("batch_id")
    assert set(batches["status"]) == {"complete"}
    for batch_id, count in batch_files.items():
        assert batches.loc[batch_id, "inspected"] + batches.loc[batch_id, "duplicates"] == count


class RacingPredictor:
    """The real predictor, except that every run classifies all its files and then waits for the others at a
    barrier before handing results back: every run has looked for earlier inspections before any writes, so
    all of them classify the shared images and race to store them (the worst case of concurrent sessions)."""

    def __init__(self, real: Predictor, barrier: threading.Barrier):
        self.real, self.barrier = real, barrier

    def __getattr__(self, name):
        return getattr(self.real, name)

    def predict_stream(self, items):
        results = list(self.real.predict_stream(items))
        self.barrier.wait(timeout=300)
        yield from results


def test_racing_sessions_in_one_process_store_each_image_once(tmp_path, predictor, tile_photos, backend):
    """Four app sessions (threads sharing the store and the model) inspect overlapping uploads at once, on the
    DuckDB file and on PostgreSQL."""
    photos = [p.read_bytes() for p in tile_photos(15, offset=200)]
    shared, own = photos[:3], photos[3:]
    uploads = []
    for user in range(4):
        files = [UploadFile(f"user{user}/shared_{i}.jpg", data) for i, data in enumerate(shared)]
        files += [UploadFile(f"user{user}/own_{i}.jpg", data) for i, data in enumerate(own[3 * user : 3 * user + 3])]
        if user == 0:  # the same shared photo twice in one upload: its copy must follow the winner too
            files.append(UploadFile("user0/shared_0 again.jpg", shared[0]))
        uploads.append(files)
    store = Store(tmp_path / "home")
    barrier = threading.Barrier(len(uploads))
    results, errors = {}, []

    def session(user: int) -> None:
        try:
            results[user] = run_batch(
                store, RacingPredictor(predictor, barrier), uploads[user], station=f"user{user}", chunk_size=2
            )
        except BaseException as exc:  # reported below with the user
            errors.append((user, exc))
            barrier.abort()

    threads = [threading.Thread(target=session, args=(user,)) for user in range(len(uploads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors

    files = {f.name: f.data for batch in uploads for f in batch}
    assert_each_image_counted_once(store, files, {results[u].batch_id: len(uploads[u]) for u in results})
    # Every shared photo was classified by all four sessions; one stored it, three lost the race.
    assert sum(r.inspected for r in results.values()) == 3 + 12
    assert store.count() == 15
    for user, result in results.items():
        assert result.files == len(uploads[user])
        assert result.summary["inspected"] + result.summary["duplicates"] == len(uploads[user])
        stored = store.batch_duplicates(result.batch_id)  # what the Inspect page shows
        assert dict(zip(stored["file_name"], stored["earlier_inspection_id"], strict=True)) == {
            d.file_name: d.inspection_id for d in result.duplicates
        }
    copy = next(d for d in results[0].duplicates if d.file_name == "user0/shared_0 again.jpg")
    holder = store.earlier_inspections([sha256_hex(shared[0])])[sha256_hex(shared[0])]
    assert copy.inspection_id == holder


@pytest.mark.slow
def test_inspect_processes_started_together_store_each_image_once(tmp_path, default_model_dir, tile_photos):
    """Three ``python -m visionqc inspect`` runs at once over folders of 20 photos, 8 of them in every folder."""
    photos = tile_photos(44, offset=300)
    shared, own = photos[:8], photos[8:]
    folders = []
    for run in range(3):
        folder = tmp_path / f"line{run}"
        folder.mkdir()
        for i, path in enumerate(shared):  # shared first: every run classifies them at the same moment
            shutil.copy(path, folder / f"a_shared_{i:02d}.jpg")
        for i, path in enumerate(own[12 * run : 12 * run + 12]):
            shutil.copy(path, folder / f"b_own_{i:02d}.jpg")
        folders.append(folder)
    home = tmp_path / "data"
    Store(home)  # created once, so the runs only race for the images
    runs = [inspect_in_background(home, default_model_dir, folder) for folder in folders]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (_, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stderr
        assert "Traceback" not in stderr

    store = Store(home)
    files = {f"{folder.name}/{p.name}": p.read_bytes() for folder in folders for p in folder.iterdir()}
    batches = store.list_batches()
    assert_each_image_counted_once(store, files, dict.fromkeys(batches["batch_id"], 20))
    assert store.count() == 44
    reported = sum(int(out.split("new inspections: ")[1].split()[0]) for out, _ in outputs)
    assert reported == 44  # each run's summary counts what it stored, not what it classified


def test_a_deleted_image_is_inspected_again_and_restore_keeps_it_counted_once(tmp_path, predictor, tile_photos):
    photo = tile_photos(1, offset=400)[0].read_bytes()
    store = Store(tmp_path / "home")
    first = run_batch(store, predictor, [UploadFile("first.jpg", photo)])
    (a,) = first.inspection_ids
    assert store.soft_delete([a], "Ana") == 1

    second = run_batch(store, predictor, [UploadFile("again.jpg", photo)])
    assert second.inspected == 1 and not second.duplicates  # a deleted inspection does not make a duplicate
    (b,) = second.inspection_ids
    assert store.restore([a], "Ana") == 0  # b counts for the image now: a stays deleted
    assert store.count() == 1

    store.soft_delete([b], "Bo")
    assert store.restore([a, b], "Ana") == 1  # both deleted: only the one holding the image comes back
    third = run_batch(store, predictor, [UploadFile("third.jpg", photo)])
    assert third.inspected == 0
    assert [d.inspection_id for d in third.duplicates] == [b]
    assert store.count() == 1


def test_a_version_3_file_is_migrated_to_one_claim_per_image(tmp_path, predictor, tile_photos):
    """A file damaged by the old race (one image stored twice) keeps its rows; the earliest visible one counts
    for the image from now on, and a new copy of it is a duplicate of that one."""
    photo = tile_photos(1, offset=410)[0].read_bytes()
    seeded = Store(tmp_path / "seed")
    (earliest,) = run_batch(seeded, predictor, [UploadFile("a.jpg", photo)]).inspection_ids
    home = tmp_path / "home"
    home.mkdir()
    with seeded.connect() as src:
        rows = src.execute("SELECT * FROM inspections").df()
    con = duckdb.connect(str(home / DB_FILE))
    con.register("seed_rows", rows)
    for version, statements in MIGRATIONS[:3]:
        for statement in statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_version VALUES (?, now())", [version])
    # A version-3 file has version 3's columns only (later migrations add more; the views are recreated by them).
    v3_columns = [
        r[0]
        for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'inspections'").fetchall()
    ]
    selected = ", ".join("inspection_id + ? AS inspection_id" if c == "inspection_id" else c for c in v3_columns)
    for offset in (0, 10, 20):  # the same image three times, the first deleted
        con.execute(f"INSERT INTO inspections BY NAME SELECT {selected} FROM seed_rows", [offset])
    con.execute("UPDATE inspections SET deleted_at = now() WHERE inspection_id = ?", [earliest])
    con.close()

    store = Store(home)
    assert store.schema_version() == MIGRATIONS[-1][0]
    holder = earliest + 10
    assert store.earlier_inspections([sha256_hex(photo)]) == {sha256_hex(photo): holder}
    again = run_batch(store, predictor, [UploadFile("b.jpg", photo)])
    assert again.inspected == 0 and [d.inspection_id for d in again.duplicates] == [holder]


def test_written_chunks_leave_no_temporary_files(tmp_path, predictor, tile_photos):
    store = Store(tmp_path / "home")
    run_batch(store, predictor, [UploadFile(p.name, p.read_bytes()) for p in tile_photos(4, offset=420)])
    assert not [p for p in Path(store.home).rglob("*.tmp")]
