"""Re-inspection as a job, for real: the worker process re-inspects exactly the inspections the lead had selected
(ids fixed when they pressed the button) with the shipped model, writes a new batch and the image-by-image
comparison; a cancel mid-way leaves whole chunks and says which batch holds them; the Models page queues the job
from a batch or from History's filters and shows its result after it ends, whatever reruns happened meanwhile.

The tests that write the job's rows (the worker process, a cancel mid-way, the page queueing a History selection)
run on both backends (the ``backend`` fixture: PostgreSQL second); the others on DuckDB only (the suite's time)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from apptest import as_reviewer, open_app
from streamlit.testing.v1 import AppTest

from visionqc.filters import InspectionFilter
from visionqc.intake.uploads import UploadFile
from visionqc.jobs import queue, reinspect_job
from visionqc.jobs.progress import read_progress, request_cancel
from visionqc.jobs.worker import run_one
from visionqc.model.predict import Predictor
from visionqc.registry import ModelRegistry
from visionqc.store import Store
from visionqc.store.ingest import CHUNK_SIZE, run_batch

WAIT_S = 300


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "visionqc-data"
    monkeypatch.setenv("VISIONQC_HOME", str(home))
    monkeypatch.delenv("VISIONQC_MODEL", raising=False)
    ModelRegistry(home).ensure_initialised()
    return home


def inspect_tiles(home: Path, photos: list[Path]):
    predictor = Predictor(ModelRegistry(home).get("magnetic-tile", "2").path)
    return run_batch(Store(home), predictor, [UploadFile(p.name, p.read_bytes()) for p in photos])


def wait_for(store: Store, job_id: str, *states: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while (job := store.job(job_id))["status"] not in states:
        assert time.monotonic() < deadline, f"job {job_id} stayed {job['status']}"
        time.sleep(0.25)
    return job


@pytest.mark.usefixtures("backend")
def test_the_worker_reinspects_exactly_the_ids_it_was_given(home, tile_photos, monkeypatch):
    store = Store(home)
    batch = inspect_tiles(home, tile_photos(8))
    # The worker reads the jobs where the store that queued them lives: its PostgreSQL URL reaches the worker
    # process even when this process's environment no longer names it.
    monkeypatch.delenv("VISIONQC_DATABASE_URL", raising=False)
    chosen = sorted(batch.inspection_ids)[1:6]  # five of the eight: the others must stay out
    version = ModelRegistry(home).get("magnetic-tile", "2")
    params = reinspect_job.params(chosen, version, "five tiles")
    job_id = queue.submit(store, reinspect_job.KIND, params, by="ana", model_name=version.name)
    job = wait_for(store, job_id, "succeeded", "failed", "cancelled")
    assert job["status"] == "succeeded", job["error"]
    result = job["result"]
    new_rows = store.batch_rows(result["batch_id"])
    originals = store.search(InspectionFilter(ids=tuple(chosen)), page_size=0)[0]
    assert sorted(new_rows["sha256"]) == sorted(originals["sha256"])
    assert (result["inspected"], result["failed"], result["version"]) == (5, 0, "magnetic-tile v2")
    new_batch = store.batch(result["batch_id"])
    assert (new_batch["operator"], new_batch["status"]) == ("ana", "complete")
    assert new_batch["note"] == "re-inspection of five tiles with magnetic-tile v2"
    changes = reinspect_job.changes(home, job_id)
    assert sorted(changes["original_inspection_id"]) == chosen
    assert set(changes["new_inspection_id"]) == set(new_rows["inspection_id"])
    assert result["actions_changed"] == int(changes["action_changed"].sum()) == 0  # same model, same answers
    assert read_progress(home, job_id)["batch_id"] == result["batch_id"]
    assert queue.describe(reinspect_job.KIND, params) == "re-inspect five tiles (5 images) with magnetic-tile v2"


def test_bad_requests_are_refused_with_the_reason(home):
    version = ModelRegistry(home).get("magnetic-tile", "2")
    with pytest.raises(ValueError, match="nothing to re-inspect"):
        reinspect_job.params([], version, "nothing")
    with pytest.raises(ValueError, match="at most 20,000"):
        reinspect_job.params(range(20_001), version, "too many")
    store = Store(home)
    job_id = store.add_job(reinspect_job.KIND, {"ids": [1], "model": {"name": "nope", "version": "1"}}, created_by=None)
    assert run_one(home, store, store.job(job_id)) == "failed"
    assert "there is no registered model 'nope'" in store.job(job_id)["error"]


@pytest.mark.usefixtures("backend")
def test_a_cancel_mid_way_keeps_whole_chunks_and_names_their_batch(home, tile_photos, monkeypatch):
    store = Store(home)
    batch = inspect_tiles(home, tile_photos(CHUNK_SIZE + 8))
    version = ModelRegistry(home).get("magnetic-tile", "2")
    params = reinspect_job.params(batch.inspection_ids, version, "the batch")
    job_id = store.add_job(reinspect_job.KIND, params, created_by="ana")

    from visionqc.model import predict

    real = predict.open_predictor

    def cancelling_predictor(path):  # the lead presses Cancel after the first chunk's last image
        predictor = real(path)
        stream = predictor.predict_stream

        def predict_stream(items):
            for done, item in enumerate(stream(items), start=1):
                if done == CHUNK_SIZE + 1:
                    request_cancel(home, job_id)
                yield item

        predictor.predict_stream = predict_stream
        return predictor

    monkeypatch.setattr(predict, "open_predictor", cancelling_predictor)
    ctx_job = store.job(job_id)
    assert run_one(home, store, ctx_job) == "cancelled"
    batch_id = read_progress(home, job_id)["batch_id"]
    assert len(store.batch_rows(batch_id)) == CHUNK_SIZE  # the first chunk, whole; nothing of the second
    assert store.batch(batch_id)["status"] == "open"


def open_models(reviewer: str = "Ana") -> AppTest:
    """The Models page, the lead ``reviewer`` queueing: typed in the sidebar, or signed in on a shared store."""
    at = open_app("pages/6_Models.py", reviewer=reviewer, timeout=240)
    as_reviewer(at, reviewer).run()
    assert not at.exception, at.exception
    return at


def test_the_page_queues_a_batch_and_shows_the_result_once_the_job_ends(home, tile_photos):
    store = Store(home)
    inspect_tiles(home, tile_photos(4))
    second = inspect_tiles(home, tile_photos(6, offset=4))
    at = open_models()
    at.radio(key="models_re_source").set_value("batch").run()
    at.selectbox(key="models_re_batch").set_value(second.batch_id).run()
    go = at.button(key="models_re_go")
    assert go.label == "Re-inspect 6 images with magnetic-tile v2"
    go.click().run()
    assert not at.exception, at.exception
    [job] = store.jobs(kinds=(reinspect_job.KIND,)).itertuples()
    assert job.params["ids"] == sorted(second.inspection_ids) and job.created_by == "Ana"
    assert wait_for(store, job.job_id, "succeeded", "failed")["status"] == "succeeded"
    at.run()  # a later rerun (or a reload: the job's result is in the store, not the session) shows it
    new_batch = store.job(job.job_id)["result"]["batch_id"]
    assert any(f"New batch **{new_batch}**: 6 re-inspected" in s.value for s in at.success)
    assert any("Nothing changed" in c.value for c in at.caption)


@pytest.mark.usefixtures("backend")
def test_a_history_selection_is_fixed_when_the_lead_presses_the_button(home, tile_photos):
    store = Store(home)
    inspect_tiles(home, tile_photos(12))
    selection = InspectionFilter(defects=("free",))
    expected = sorted(store.search(selection, page_size=0)[0]["inspection_id"])
    assert 0 < len(expected) < 12
    at = open_models()
    at.session_state["history_filter"] = selection
    at.radio(key="models_re_source").set_value("history").run()
    at.button(key="models_re_go").click().run()
    assert not at.exception, at.exception
    [job] = store.jobs(kinds=(reinspect_job.KIND,)).itertuples()
    assert job.params["ids"] == expected
    queue.cancel(store, job.job_id)  # the test needs only what was queued
