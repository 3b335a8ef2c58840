"""A plant's stations share one store and one data folder: a job another station's worker runs is alive while its
heartbeat is fresh, even where this machine's worker lock (a file on the shared mount) cannot see that worker. On
both backends; the heartbeats are written and compared by the database's clock."""

from __future__ import annotations

import time

import pytest

from visionqc.jobs import worker
from visionqc.jobs.queue import finish_orphans, reconcile
from visionqc.store import Store
from visionqc.store.jobs import this_host

pytestmark = pytest.mark.usefixtures("backend")  # on DuckDB and on PostgreSQL


def age_heartbeat(store: Store, job_id: str, seconds: int) -> None:
    """The job's last heartbeat ``seconds`` earlier (a worker that went silent that long ago)."""
    with store.connect() as con:
        con.execute(
            f"UPDATE jobs SET heartbeat_at = heartbeat_at - INTERVAL '{seconds} seconds' WHERE job_id = ?", [job_id]
        )


def test_a_job_another_station_runs_is_left_alone_while_it_beats_and_finished_once_silent(tmp_path):
    store = Store(tmp_path / "home")
    job_id = store.add_job("train", {"name": "line-2"}, created_by="ana")
    claimed = store.claim_next_job(pid=4242, host="station-9")
    assert (claimed["job_id"], claimed["host"]) == (job_id, "station-9")
    assert claimed["heartbeat_at"] is not None

    reconcile(store)  # no worker here (this machine's lock is free), but station 9's worker beats
    assert store.job(job_id)["status"] == "running"
    age_heartbeat(store, job_id, worker.SILENT_SECONDS - 30)  # late, not yet silent
    assert finish_orphans(store) == [] and store.job(job_id)["status"] == "running"

    age_heartbeat(store, job_id, 60)  # now silent for longer than SILENT_SECONDS: station 9's worker is gone
    assert finish_orphans(store) == [job_id]
    job = store.job(job_id)
    assert (job["status"], job["error"]) == ("failed", worker.died("train"))


def test_a_job_this_machine_ran_is_finished_at_once_when_no_worker_runs_here(tmp_path):
    store = Store(tmp_path / "home")
    mine = store.add_job("reinspect", {"ids": [1]}, created_by="ana")
    theirs = store.add_job("train", {"name": "line-2"}, created_by="ana")
    store.claim_next_job(pid=4242)  # this machine (its heartbeat fresh: the lock says the worker died)
    store.claim_next_job(pid=4343, host="station-9")
    assert store.job(mine)["host"] == this_host()
    assert finish_orphans(store) == [mine]
    assert store.job(mine)["error"] == worker.died("reinspect")
    assert store.job(theirs)["status"] == "running"


def test_the_worker_beats_while_a_job_runs_and_stops_when_it_ends(tmp_path, monkeypatch):
    store = Store(tmp_path / "home")
    job_id = store.add_job("train", {"name": "line-2"}, created_by="ana")
    job = store.claim_next_job(pid=4242)
    age_heartbeat(store, job_id, 3600)
    stale = store.job(job_id)["heartbeat_at"]
    seen = []

    def slow_job(ctx):  # waits for the worker's next beats, as a long training run would see them
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(seen) < 2:
            beat = ctx.store.job(ctx.job_id)["heartbeat_at"]
            if beat > stale and beat not in seen:
                seen.append(beat)
            time.sleep(0.05)
        return {"beats": len(seen)}

    monkeypatch.setattr(worker, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setattr(worker, "handler", lambda kind: slow_job)
    assert worker.run_one(tmp_path / "home", store, job) == "succeeded"
    assert len(seen) == 2 and seen[1] > seen[0]  # fresh, and again later
    last = store.job(job_id)
    assert last["status"] == "succeeded" and last["result"]["beats"] == 2
    time.sleep(0.5)
    assert store.job(job_id)["heartbeat_at"] == last["heartbeat_at"]  # no beat after the job ended
    assert store.beat_job(job_id) is False  # a finished job is not kept alive
