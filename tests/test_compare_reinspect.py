"""Compare and re-inspect on real models and images: the shipped model against a small model trained here, on the
candidate's own test split and on a stored dataset; a batch re-inspected with another version into a new batch,
with what changed."""

from __future__ import annotations

import pytest

from visionqc.datasets.archive import import_dataset
from visionqc.datasets.checks import DatasetProblem
from visionqc.datasets.export import items_for_files
from visionqc.filters import InspectionFilter
from visionqc.intake.uploads import UploadFile
from visionqc.jobs import compare
from visionqc.jobs.reinspect import reinspect
from visionqc.jobs.training_job import TrainingOptions
from visionqc.jobs.training_job import run as run_training
from visionqc.jobs.worker import JobContext
from visionqc.model.card import read_card
from visionqc.model.predict import Predictor
from visionqc.registry import ModelRegistry
from visionqc.store import Store
from visionqc.store.ingest import run_batch


@pytest.fixture(scope="module")
def trained(tmp_path_factory, labelled_folder):
    """A data folder holding the shipped model, a 36-image tile dataset and a small model trained on it (the training
    job's own code, run in this process)."""
    root = tmp_path_factory.mktemp("compare")
    home = root / "visionqc-data"
    registry = ModelRegistry(home)
    registry.ensure_initialised()
    store = Store(home)
    import_dataset(store, "tiles", labelled_folder(root / "tiles", 6), by="ana")
    job_id = store.add_job("train", {}, created_by="ana")
    params = {"name": "tiles-model", "dataset": "tiles@1",
              "options": TrainingOptions(views=1, epochs=20, phase2=False, export=False).to_json()}  # fmt: skip
    job = {**store.job(job_id), "params": params}
    run_training(JobContext(home, store, job))
    return home


def test_compare_on_the_candidates_own_test_split(trained):
    registry, store = ModelRegistry(trained), Store(trained)
    shipped, small = registry.get("magnetic-tile", "2"), registry.get("tiles-model", "1")
    result = compare.compare(store, shipped, small)
    test_files = read_card(small.path).raw["training"]["split"]["test_files"]
    expected = items_for_files(store.dataset_items("tiles@1"), test_files)
    assert result["images"] == len(expected) == len(test_files) > 0
    assert result["dataset"] == "tiles@1 (test split of tiles-model v1)"
    for side, version in (("baseline", shipped), ("candidate", small)):
        summary = result[side]
        assert summary["label"] == version.label
        cm = summary["confusion_matrix"]["rows_true_columns_predicted"]
        assert sum(map(sum, cm)) == result["images"]
        correct = sum(cm[i][i] for i in range(len(cm)))
        assert summary["accuracy"] == pytest.approx(correct / result["images"], abs=1e-4)
        assert set(summary["recall"]) == set(expected["defect"])
        assert summary["images_per_second"] > 0 and 0 <= summary["needs_review_share"] <= 1
    truth = dict(zip(expected["sha256"], expected["defect"], strict=True))
    for d in result["disagreements"]:
        assert d["baseline"] != d["candidate"] and d["truth"] == truth[d["sha256"]]
    compare.save(trained, result, shipped, small, None)
    assert compare.load(trained, shipped, small, None) == result
    assert compare.load(trained, small, shipped, None) is None  # the order matters: baseline vs candidate


def test_compare_on_a_named_dataset_and_without_one(trained):
    registry, store = ModelRegistry(trained), Store(trained)
    shipped, small = registry.get("magnetic-tile", "2"), registry.get("tiles-model", "1")
    result = compare.compare(store, small, shipped, dataset="tiles")
    assert result["images"] == 36 and result["dataset"] == "tiles@1"
    with pytest.raises(DatasetProblem, match="was not trained from a dataset here"):
        compare.compare(store, small, shipped)  # the shipped model has no dataset in this store
    with pytest.raises(DatasetProblem, match="no dataset 'nope'"):
        compare.compare(store, small, shipped, dataset="nope")


def test_reinspect_a_batch_with_another_version_into_a_new_batch(trained, magnetic_tile):
    registry, store = ModelRegistry(trained), Store(trained)
    photos = [p for cls in ("crack", "free") for p in sorted((magnetic_tile / "images" / cls).glob("*.jpg"))[10:13]]
    shipped = Predictor(registry.get("magnetic-tile", "2").path)
    original = run_batch(store, shipped, [UploadFile(p.name, p.read_bytes()) for p in photos])
    first_id = original.inspection_ids[0]
    store.review([first_id], "ana", "correct", defect="crack")  # the original's effective label is a person's
    small = Predictor(registry.get("tiles-model", "1").path)
    result = reinspect(store, small, InspectionFilter(batches=(original.batch_id,)), described="the batch")
    assert result.batch_id != original.batch_id and (result.inspected, result.failed) == (6, 0)
    batch = store.batch(result.batch_id)
    assert (batch["model_name"], batch["model_version"], batch["status"]) == ("tiles-model", "1", "complete")
    assert batch["note"] == "re-inspection of the batch with tiles-model v1"
    new_rows = store.batch_rows(result.batch_id)
    assert sorted(new_rows["sha256"]) == sorted(store.batch_rows(original.batch_id)["sha256"])
    changes = result.changes.set_index("original_inspection_id")
    assert changes.loc[first_id, "original_defect"] == "crack"
    for row in new_rows.itertuples():
        change = changes[changes["new_inspection_id"] == row.inspection_id].iloc[0]
        assert change["new_defect"] == row.pred_defect and change["new_action"] == row.pred_action
        assert change["action_changed"] == (change["original_action"] != row.pred_action)
    assert result.actions_changed == int(result.changes["action_changed"].sum())
    assert len(store.batch_rows(original.batch_id)) == 6  # the originals are untouched
    # History (and its CSV) tell the two apart by model version, as the Models page names them.
    assert {"magnetic-tile v2", "tiles-model v1"} <= set(store.distinct_values("model_version"))
    by_version = store.search(InspectionFilter(model_versions=("tiles-model v1",)), page_size=0)[0]
    assert set(by_version["batch_id"]) == {result.batch_id} and len(by_version) == 6
    assert store.count(InspectionFilter(model_versions=("tiles-model v9",))) == 0
    with pytest.raises(ValueError, match="nothing to re-inspect"):
        reinspect(store, small, InspectionFilter(batches=("none",)), described="nothing")
