"""The shared PostgreSQL store under real concurrency: four ``python -m visionqc inspect --station ...`` processes
start at once against an empty database (so they also race to migrate it), over folders that share photos,
while a lead signed in to the app (AppTest) confirms photos in the review queue as they arrive; one station is
killed with SIGKILL mid-batch and resumed. Every image is stored once, every file is accounted for, the killed run
left no half-written chunk, and every review the app wrote is in the audit trail under the lead's name."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from apptest import open_app
from faults import PROJECT_ROOT
from test_exactly_once import assert_each_image_counted_once

from visionqc.store import Store, StoreError
from visionqc.store.schema import MIGRATIONS


def inspect(home, model_dir, folder, station, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "visionqc", "inspect", "--model", str(model_dir), str(folder), "--quiet"),
            "--station",
            station,
            *extra,
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "VISIONQC_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def written(store: Store, station: str) -> tuple[str | None, int]:
    """The station's batch and how many of its files are written (inspected, duplicate or failed)."""
    with store.connect() as con:
        row = con.execute("SELECT batch_id FROM batches WHERE station = ?", [station]).fetchone()
        if row is None:
            return None, 0
        count = con.execute(
            "SELECT (SELECT count(*) FROM inspections WHERE batch_id = ?) + "
            "(SELECT count(*) FROM duplicates WHERE batch_id = ?) + (SELECT count(*) FROM failures WHERE batch_id = ?)",
            [row[0]] * 3,
        ).fetchone()[0]
    return row[0], int(count)


def assert_nothing_half_written(store: Store) -> None:
    """Every inspection has its embedding, its image row and file, and a claim on its image (or lost it to a
    visible one); no claim points at nothing; no temporary file is left in the image folder."""
    with store.connect() as con:
        orphans = con.execute(
            """SELECT
                (SELECT count(*) FROM inspections i WHERE NOT EXISTS
                    (SELECT 1 FROM embeddings e WHERE e.inspection_id = i.inspection_id)),
                (SELECT count(*) FROM embeddings e WHERE NOT EXISTS
                    (SELECT 1 FROM inspections i WHERE i.inspection_id = e.inspection_id)),
                (SELECT count(*) FROM inspections i WHERE NOT EXISTS
                    (SELECT 1 FROM images m WHERE m.sha256 = i.sha256)),
                (SELECT count(*) FROM image_claims k WHERE NOT EXISTS
                    (SELECT 1 FROM inspections i WHERE i.inspection_id = k.inspection_id)),
                (SELECT count(*) FROM duplicates d WHERE NOT EXISTS
                    (SELECT 1 FROM inspections i WHERE i.inspection_id = d.inspection_id))"""
        ).fetchone()
        paths = [r[0] for r in con.execute("SELECT path FROM images").fetchall()]
    assert orphans == (0, 0, 0, 0, 0)
    assert all((store.home / p).is_file() for p in paths)
    assert not [p for p in (store.home / "images").rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_four_stations_write_at_once_and_a_killed_one_resumes(
    tmp_path, postgres_server, monkeypatch, default_model_dir, tile_photos
):
    monkeypatch.setenv("VISIONQC_DATABASE_URL", postgres_server.new_schema_url())
    photos = tile_photos(8 + 3 * 10 + 160, offset=500)
    shared, own, victim_own = photos[:8], photos[8:38], photos[38:]
    folders = {}
    for line in range(1, 5):
        folder = tmp_path / f"line{line}"
        folder.mkdir()
        for i, path in enumerate(shared):  # shared first: every station classifies them at the same moment
            shutil.copy(path, folder / f"a_shared_{i:02d}.jpg")
        mine = victim_own if line == 4 else own[10 * (line - 1) : 10 * line]
        for i, path in enumerate(mine):
            shutil.copy(path, folder / f"b_own_{i:03d}.jpg")
        folders[f"Line {line}"] = folder
    home = tmp_path / "shared-mount"
    # No Store is opened first: the four processes race to create and migrate the schema.
    runs = {station: inspect(home, default_model_dir, folder, station) for station, folder in folders.items()}

    monkeypatch.setenv("VISIONQC_HOME", str(home))  # the app's (AppTest runs the pages in this process)
    confirmed, stop, ready, failures = [], threading.Event(), threading.Event(), []  # confirmed: when each was

    def reviewer() -> None:  # a QC lead in the app confirming whatever arrives, while the stations write
        try:
            while not stop.is_set():
                try:
                    Store(home)
                    break
                except Exception:  # the schema is not there yet: the stations are still starting
                    time.sleep(0.1)
            at = open_app("pages/5_Review_queue.py", reviewer="Ana", timeout=120)  # signs in: a shared store
            at.slider(key="queue_confidence").set_value(100).run()  # every unreviewed photo waits
            ready.set()
            while not stop.is_set():
                confirm = [b for b in at.button if b.label == "Confirm"]
                (confirm[0].click() if confirm else at).run()  # nothing waiting yet: look again
                assert not at.exception, at.exception
                if confirm and any("Confirmed" in s.value for s in at.success):
                    confirmed.append(time.monotonic())
                time.sleep(0.05)
        except BaseException as exc:  # reported by the test's own thread
            failures.append(exc)

    thread = threading.Thread(target=reviewer)
    thread.start()
    resumed = None
    try:
        # Kill Line 4 once its first chunk is in, long before its 168 files are done.
        deadline = time.monotonic() + 300
        store = None
        while time.monotonic() < deadline:
            if store is None:
                try:
                    store = Store(home)
                except Exception:
                    time.sleep(0.05)
                    continue
            victim_batch, count = written(store, "Line 4")
            if count:
                break
            assert runs["Line 4"].poll() is None, runs["Line 4"].communicate()
            time.sleep(0.02)
        else:
            pytest.fail("Line 4 wrote nothing in 300 s")
        runs["Line 4"].send_signal(signal.SIGKILL)
        outputs = {station: run.communicate(timeout=600) for station, run in runs.items()}
        assert runs["Line 4"].returncode == -signal.SIGKILL
        for station in ("Line 1", "Line 2", "Line 3"):
            assert runs[station].returncode == 0, outputs[station][1]
            assert "Traceback" not in outputs[station][1]

        # Migrated once, by one of them.
        with store.connect() as con:
            versions = [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]
        assert versions == [v for v, _ in MIGRATIONS]

        # The killed run: whole chunks only, the batch open; nothing half-written anywhere.
        assert store.batch(victim_batch)["status"] == "open"
        _, kept = written(store, "Line 4")
        assert 0 < kept < len(shared) + len(victim_own)
        assert_nothing_half_written(store)

        # Resuming it finishes the batch, with the lead in the app confirming meanwhile (the app takes a while to
        # open the first time: the stations may all have finished before it did).
        assert ready.wait(300) or failures, "the app did not open the review queue in 300 s"
        assert not failures, failures
        resumed = inspect(home, default_model_dir, folders["Line 4"], "Line 4", "--resume", victim_batch)
        _, err = resumed.communicate(timeout=600)
        finished = time.monotonic()
        assert resumed.returncode == 0, err
    finally:
        stop.set()
        thread.join(timeout=120)
        for run in [*runs.values(), resumed]:
            if run is not None and run.poll() is None:
                run.kill()
    assert not failures, failures

    # Every file of every station is accounted for exactly once.
    files = {f"{folder.name}/{p.name}": p.read_bytes() for folder in folders.values() for p in folder.iterdir()}
    batches = store.list_batches().set_index("station")
    sizes = {batches.loc[station, "batch_id"]: len(list(folder.iterdir())) for station, folder in folders.items()}
    assert_each_image_counted_once(store, files, sizes)
    assert_nothing_half_written(store)
    assert store.count() == len({data for data in files.values()})

    # The lead confirmed photos in the app while a station was writing, and every review is in the audit trail,
    # under the signed-in lead's name.
    assert confirmed and min(confirmed) < finished, "no review was written while the stations wrote"
    with store.connect() as con:
        reviews, named = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE reviewer = 'Ana' AND kind = 'confirm') FROM reviews"
        ).fetchone()
    assert len(confirmed) == reviews == named


def test_a_server_that_cannot_be_reached_is_a_clear_message(tmp_path, monkeypatch):
    """A wrong URL or a stopped server: a StoreError that names the server (without its password) and says
    what to check; nothing is created in the data folder but the folder itself."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("VISIONQC_DATABASE_URL", f"postgresql://qc:secret@127.0.0.1:{port}/plant")
    with pytest.raises(StoreError) as caught:
        Store(tmp_path / "home")
    message = str(caught.value)
    assert f"127.0.0.1:{port}/plant" in message and "secret" not in message
    assert "VISIONQC_DATABASE_URL" in message and "running" in message
    assert not (tmp_path / "home" / "visionqc.duckdb").exists()


def test_a_connection_lost_mid_call_is_a_clear_message(tmp_path, postgres_server, monkeypatch):
    """The server ends the session (a restart, an administrator): the store says so, and the write is not half
    done (the server rolls back the open transaction)."""
    monkeypatch.setenv("VISIONQC_DATABASE_URL", postgres_server.new_schema_url())
    store = Store(tmp_path / "home")
    batch_id = store.create_batch(station="L1", operator=None, note=None, source="cli", model_name=None,
                                  model_version=None)  # fmt: skip

    def cut_off(con):
        con.execute("UPDATE batches SET note = 'half' WHERE batch_id = ?", [batch_id])
        pid = con.execute("SELECT pg_backend_pid()").fetchone()[0]
        with Store(tmp_path / "home").connect() as other:
            other.execute("SELECT pg_terminate_backend(?)", [pid])
        con.execute("SELECT 1")

    with pytest.raises(StoreError, match="lost the connection to the inspection database"):
        store._write(cut_off)
    assert store.batch(batch_id)["note"] is None
