"""Training jobs for real: a worker process trains on real images and registers the model; jobs queue one at a
time; cancelling works queued and running; a kill -9 leaves the registry and the store consistent and the job
failed with its reason; progress is stored and moves.

The job queue's rows (claiming, cancelling, finishing a dead worker's job) and a training job run start to end by a
worker process are tested on both backends (the ``backend`` fixture: PostgreSQL second, the worker process gets
its URL) by the cancel, kill -9 and reconcile tests; the others, whose rows those cover, on DuckDB only (each
training job takes a minute on the shared cores)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from visionqc.datasets.archive import import_dataset
from visionqc.jobs import queue
from visionqc.jobs.progress import (
    JobCancelled,
    ProgressFile,
    Stage,
    job_dir,
    nested_fraction,
    read_progress,
    request_cancel,
)
from visionqc.jobs.training_job import KIND, TrainingOptions, estimate_seconds, plan
from visionqc.jobs.worker import DIED
from visionqc.model.card import read_card
from visionqc.registry import ModelRegistry
from visionqc.store import Store
from visionqc.training.pipeline import ELAPSED_TICKS, Step, elapsed_bar, part, progress_bar, reporting_to

# Seconds, not minutes: the suite stays fast (the job's export is tested by the browser test of the model loop).
TINY = TrainingOptions(views=1, epochs=3, phase2=False, repeats=0, conv_head="off", export=False)
WAIT_S = 600


@pytest.fixture
def home(tmp_path, labelled_folder, monkeypatch) -> Path:
    """A data folder with the shipped model registered and a 24-image dataset of real tiles (4 per class)."""
    home = tmp_path / "visionqc-data"
    monkeypatch.setenv("VISIONQC_HOME", str(home))
    monkeypatch.delenv("VISIONQC_MODEL", raising=False)
    ModelRegistry(home).ensure_initialised()
    import_dataset(Store(home), "tiles", labelled_folder(tmp_path / "tiles", 4), by="ana")
    return home


def submit(store: Store, name: str = "tiles-model", options: TrainingOptions = TINY, dataset: str = "tiles@1") -> str:
    params = {"name": name, "dataset": dataset, "options": options.to_json()}
    return queue.submit(store, KIND, params, by="ana", dataset_id=dataset, model_name=name)


def wait_for(store: Store, job_id: str, *states: str, timeout: float = WAIT_S) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.job(job_id)
        if job["status"] in states:
            return job
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} stayed {store.job(job_id)['status']} for {timeout} s")


def wait_for_stage(home: Path, job_id: str, stage: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while (read_progress(home, job_id) or {}).get("stage") != stage:
        assert time.monotonic() < deadline, f"job {job_id} never reached stage {stage}"
        time.sleep(0.05)


def test_jobs_run_one_at_a_time_in_their_own_process_and_register_their_models(home):
    store = Store(home)
    first, second = submit(store), submit(store)
    assert store.job(second)["status"] == "queued"
    done = [wait_for(store, job_id, "succeeded", "failed") for job_id in (first, second)]
    assert [j["status"] for j in done] == ["succeeded", "succeeded"], [j["error"] for j in done]
    assert done[1]["started_at"] >= done[0]["finished_at"]  # queued behind the first, never side by side
    assert all(j["pid"] not in (None, os.getpid()) for j in done)
    registry = ModelRegistry(home)
    v1, v2 = registry.get("tiles-model", "1"), registry.get("tiles-model", "2")
    assert (v1.job_id, v2.job_id) == (first, second)
    assert v1.source == "trained" and v1.registered_by == "ana"
    assert v1.dataset == {"id": "tiles@1", "name": "tiles", "version": 1}
    assert done[0]["result"]["model"] == {"name": "tiles-model", "version": "1"}
    assert done[0]["result"]["cpu_seconds"] > 0
    card = read_card(v1.path)
    assert (card.name, card.version) == ("tiles-model", "1")
    assert card.raw["training_data"]["images"] == 24 and card.raw["training"]["config"]["views"] == 1
    assert registry.active().label == "magnetic-tile v2"  # training never switches the model by itself
    progress = read_progress(home, first)
    assert progress["status"] == "succeeded" and progress["fraction"] == 1.0
    assert not (job_dir(home, first) / "work").exists()  # the exported data and the staging model are gone


@pytest.mark.usefixtures("backend")
def test_a_queued_job_cancels_at_once_and_a_running_one_at_its_next_step(home):
    store = Store(home)
    running, queued = submit(store), submit(store)
    assert queue.cancel(store, queued) == "cancelled"
    assert store.job(queued)["error"] == "cancelled before it started"
    wait_for_stage(home, running, "features")
    assert queue.cancel(store, running) == "stopping"
    job = wait_for(store, running, "cancelled", "succeeded", "failed")
    assert (job["status"], job["error"]) == ("cancelled", "cancelled on request")
    assert [v.label for v in ModelRegistry(home).versions()] == ["magnetic-tile v2"]
    assert queue.cancel(store, running) == "cancelled"  # cancelling again says what it is


@pytest.mark.usefixtures("backend")
def test_kill_9_of_a_running_job_leaves_registry_and_store_consistent_and_the_job_failed(home):
    store = Store(home)
    killed, behind = submit(store), submit(store)  # a second worker waits for the first one's lock
    wait_for_stage(home, killed, "features")
    os.kill(store.job(killed)["pid"], signal.SIGKILL)
    # The waiting worker gets the lock, finishes the dead job as failed, and runs the next one.
    assert wait_for(store, behind, "succeeded", "failed")["status"] == "succeeded"
    job = store.job(killed)
    assert (job["status"], job["error"]) == ("failed", DIED)
    assert not (job_dir(home, killed) / "work").exists()
    registry = ModelRegistry(home)
    assert {v.label for v in registry.versions()} == {"magnetic-tile v2", "tiles-model v1"}
    assert registry.get("tiles-model", "1").job_id == behind  # the next job's version, never the killed one's
    assert Store(home).dataset("tiles")["images"] == 24  # the store opens and reads as before


@pytest.mark.usefixtures("backend")
def test_reconcile_finishes_a_job_whose_worker_is_gone(home):
    """No worker holds the lock but a job is marked running (its process died): the app's refresh fails it, and
    a queued job with no worker gets one."""
    store = Store(home)
    orphan = store.add_job(KIND, {"name": "x", "dataset": "tiles@1"}, created_by="ana")
    store.claim_next_job(pid=999_999)
    assert not queue.worker_running(home)
    queue.reconcile(store)
    assert (store.job(orphan)["status"], store.job(orphan)["error"]) == ("failed", DIED)
    waiting = store.add_job(KIND, {"name": "bad name!", "dataset": "tiles@1"}, created_by="ana")  # no worker yet
    queue.reconcile(store)
    assert "is not usable" in wait_for(store, waiting, "failed", "succeeded")["error"]


def test_a_failed_job_says_why(home):
    store = Store(home)
    job = wait_for(store, submit(store, dataset="gone@1"), "failed", "succeeded")
    assert job["status"] == "failed" and "no longer exists" in job["error"]
    job = wait_for(store, submit(store, name="not a name!"), "failed", "succeeded")
    assert "model name 'not a name!' is not usable" in job["error"]
    with pytest.raises(ValueError, match="unknown job kind"):
        queue.submit(store, "paint", {}, by="ana")


def test_progress_moves_through_the_stages_and_a_cancel_request_stops_it(tmp_path):
    stages = [Stage("prepare", "Preparing", (), 10), Stage("features", "Reading", ("features",), 60),
              Stage("phase1", "Heads", ("phase 1",), 30)]  # fmt: skip
    progress = ProgressFile(tmp_path, "job-1", stages)
    progress.stage("prepare")
    seen = []
    for done in range(0, 101, 25):
        progress.last_write = 0  # write every step (normally at most once a second)
        progress([Step("features (3 view(s) per image)", done, 100)])
        seen.append(read_progress(tmp_path, "job-1")["fraction"])
    progress.last_write = 0
    progress([Step("repeated", 1, 4), Step("phase 1 (heads)", 5, 10, {"val_balanced_accuracy": 0.8})])
    assert seen == sorted(seen) and seen[0] == pytest.approx(0.1) and seen[-1] == pytest.approx(0.7)
    state = read_progress(tmp_path, "job-1")
    assert state["stage_label"] == "Reading"  # an unknown bar never moves the job backwards or sideways
    progress.last_write = 0
    progress([Step("phase 1 (heads)", 5, 10, {"val_balanced_accuracy": 0.8})])
    state = read_progress(tmp_path, "job-1")
    assert (state["stage_label"], state["fraction"], state["info"]) == ("Heads", 0.85, {"val_balanced_accuracy": 0.8})
    request_cancel(tmp_path, "job-1")
    with pytest.raises(JobCancelled):
        progress([Step("phase 1 (heads)", 6, 10)])


def test_a_long_call_without_progress_of_its_own_still_moves_the_bar_and_can_be_cancelled(tmp_path):
    """An ONNX export or an int8 quantization is one library call: its part of the bar moves with the time spent,
    slows down instead of overshooting when the call takes longer than expected, and a cancel request made
    meanwhile stops the job when the call returns."""
    heard: list[list[Step]] = []
    with (
        reporting_to(heard.append),
        progress_bar(total=10, desc="exporting", disable=True) as bar,
        part(bar, 8, "quantizing to int8"),
        elapsed_bar("int8 graph", expected_seconds=0.2, every=0.05),
    ):
        time.sleep(1.0)  # five times longer than expected
    inside = [steps for steps in heard if len(steps) == 2]
    ticks = [steps[1].done for steps in inside]
    assert len(ticks) >= 10 and ticks == sorted(ticks) and 0 < ticks[-1] < ELAPSED_TICKS
    assert {steps[0].info["step"] for steps in inside} == {"quantizing to int8"}
    fractions = [nested_fraction(steps) for steps in heard]
    assert fractions == sorted(fractions) and 0.7 < max(fractions[:-1]) < fractions[-1] == 0.8

    stages = [Stage("export", "Exporting", ("exporting",), 60)]
    progress = ProgressFile(tmp_path, "job-2", stages)
    progress([Step("exporting", 3, 10, {"step": "quantizing to int8"})])
    assert read_progress(tmp_path, "job-2")["detail"] == "quantizing to int8"  # the part's name, not "3 of 10"
    with (
        pytest.raises(JobCancelled),
        reporting_to(progress),
        progress_bar(total=10, desc="exporting", disable=True) as bar,
        part(bar, 10, "quantizing to int8"),
        elapsed_bar("int8 graph", expected_seconds=60, every=0.05),
    ):
        request_cancel(tmp_path, "job-2")
        time.sleep(0.3)


def test_the_time_estimate_scales_with_images_views_and_phases():
    counts = {"a": 500, "b": 1000}
    base = estimate_seconds(counts, TrainingOptions())
    assert estimate_seconds(counts, TrainingOptions(views=1)) < base
    assert estimate_seconds(counts, TrainingOptions(phase2=False)) < base
    assert estimate_seconds(counts, TrainingOptions(repeats=5)) > base
    assert estimate_seconds({"a": 100, "b": 200}, TrainingOptions()) < base
    assert estimate_seconds(counts, TrainingOptions(max_per_class=100)) < estimate_seconds(counts, TrainingOptions())
    assert estimate_seconds(counts, TrainingOptions(conv_head="off")) < base
    assert estimate_seconds(counts, TrainingOptions(export=False)) < base
    assert [s.key for s in plan(counts, TrainingOptions(phase2=False, conv_head="off", export=False))] == [
        "prepare",
        "features",
        "phase1",
        "test",
        "register",
    ]
    # The stages in the order the trainer reaches them (the progress file only moves forward).
    assert [s.key for s in plan(counts, TrainingOptions())] == [
        "prepare",
        "features",
        "phase1",
        "phase2",
        "conv_head",
        "calibrate",
        "test",
        "export",
        "register",
    ]
