"""The Models page through AppTest over real registries, stores and models: the active model's card, rollback
with a confirm and its audit trail, a comparison before promotion, a dataset imported through the uploader and one
built from reviews, a training job started from the page; and Inspect's notice when a batch looks foreign.

The tests that write or read rows (datasets, reviews, jobs, a batch) run on PostgreSQL too, on a new schema
(``BOTH_BACKENDS``); the model card and the registry (files under the data folder, not rows) on DuckDB only."""

from __future__ import annotations

import io
import json
import shutil
import zipfile

import pytest
from apptest import as_reviewer, open_app
from streamlit.testing.v1 import AppTest

from visionqc.datasets.archive import import_dataset
from visionqc.filters import InspectionFilter
from visionqc.intake.uploads import UploadFile
from visionqc.model.card import read_card
from visionqc.model.predict import Predictor
from visionqc.registry import ModelRegistry
from visionqc.reporting import model_card
from visionqc.store import Store
from visionqc.store.ingest import run_batch
from visionqc.training.localisation import SampleResult, summarise, write_to_card
from visionqc.ui import upload

PAGE = "pages/6_Models.py"
TIMEOUT = 240
BOTH_BACKENDS = pytest.mark.usefixtures("backend")  # a new, empty store: the DuckDB file, then PostgreSQL


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "visionqc-data"
    monkeypatch.setenv("VISIONQC_HOME", str(home))
    monkeypatch.delenv("VISIONQC_MODEL", raising=False)
    return home


def open_page(page: str = PAGE, reviewer: str = "Ana") -> AppTest:
    return open_app(page, reviewer=reviewer, timeout=TIMEOUT)


def sidebar_text(at: AppTest) -> str:
    """The sidebar's text as read (user text there is Markdown-escaped)."""
    return " ".join(m.value for m in [*at.sidebar.markdown, *at.sidebar.caption]).replace("\\", "")


def copy_as_version(default_model_dir, target, version: str):
    shutil.copytree(default_model_dir, target)
    card = json.loads((target / "model.json").read_text())
    card["version"] = version
    (target / "model.json").write_text(json.dumps(card))
    return target


def test_the_card_of_the_active_model(tmp_path, default_model_dir, monkeypatch):
    target = tmp_path / "model"
    shutil.copytree(default_model_dir, target)
    results = [
        SampleResult("a.jpg", "crack", "crack", (1, 1), (0, 0, 4, 4), True, True, 0.6),
        SampleResult("b.jpg", "blowhole", "blowhole", (9, 9), (0, 0, 4, 4), False, True, 0.0),
    ]
    write_to_card(target, summarise(results, dataset="magnetic-tile", method="test"), "magnetic-tile test split")
    monkeypatch.setenv("VISIONQC_MODEL", str(target))
    monkeypatch.setenv("VISIONQC_HOME", str(tmp_path / "home"))
    at = open_page()
    card = read_card(target)
    text = " ".join(m.value for m in at.markdown).replace("\\", "")  # user text is Markdown-escaped
    assert card.name in text and card.version in text
    # Plain words for a QC lead first; the technical tables behind an expander.
    assert "What it finds" in text and "How often it is right" in text and "When it asks a person" in text
    assert "photos it never saw while learning" in text
    assert f"more than a **{100 * card.miss_threshold:.0f}%** chance" in text
    assert any("Technical details" in e.label for e in at.expander)
    assert any("Huang" in i.value for i in at.info)  # the dataset citation
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pointing game"] == "50%" and metrics["Within 15 px"] == "100%"
    assert "Balanced accuracy" in metrics
    charts = at.get("vega_lite_chart")
    assert len(charts) == len(model_card.test_metrics(card.raw))  # one confusion matrix per task
    [loc] = [d.value for d in at.dataframe if "Pointing game %" in d.value.columns]
    assert loc["Images"].tolist() == [2, 1, 1]
    assert any("VISIONQC_MODEL" in w.value for w in at.sidebar.warning)  # pinned: the registry is not used


def test_confusion_frame_shares_are_per_true_class():
    frame = model_card.confusion_frame({"labels": ["a", "b"], "rows_true_columns_predicted": [[3, 1], [0, 2]]})
    assert frame["Images"].tolist() == [3, 1, 0, 2]
    assert frame["Share of true %"].tolist() == [75.0, 25.0, 0.0, 100.0]
    assert model_card.localisation_entries({}) == {}


def test_after_an_update_the_page_offers_the_new_shipped_model_and_keeps_the_one_in_use(
    home, tmp_path, default_model_dir
):
    registry = ModelRegistry(home)  # a data folder from before the update: version 1 shipped and in use
    old = registry.register(copy_as_version(default_model_dir, tmp_path / "v1", "1"), by="VisionQC", source="shipped")
    registry.activate(old.name, old.version, by="VisionQC", action="first start")
    at = open_page()
    assert not at.exception, at.exception
    assert "· version 1" in sidebar_text(at)
    [notice] = [i.value for i in at.info if "ships" in i.value]
    assert "ships **magnetic-tile v2**" in notice and "compare it with magnetic-tile v1" in notice
    versions = next(d.value for d in at.dataframe if "Balanced accuracy %" in d.value.columns)
    assert versions[["Version", "Source", "Active"]].values.tolist() == [["2", "shipped", ""], ["1", "shipped", "✔"]]


def test_rollback_asks_first_and_is_recorded(home, tmp_path, default_model_dir):
    registry = ModelRegistry(home)
    registry.ensure_initialised()
    newer = registry.register(copy_as_version(default_model_dir, tmp_path / "v3", "3"), by="ana")
    registry.activate(newer.name, newer.version, by="ana")
    at = open_page(reviewer="Ben")
    assert "· version 3" in sidebar_text(at)
    versions = next(d.value for d in at.dataframe if "Balanced accuracy %" in d.value.columns)
    assert versions["Version"].tolist() == ["3", "2"] and versions["Active"].tolist() == ["✔", ""]
    as_reviewer(at, "Ben").run()
    at.button(key="models_rollback").click().run()
    assert registry.active().label == "magnetic-tile v3"  # not yet: the question is on screen
    assert any("Make magnetic-tile v2 the active model again" in w.value for w in at.warning)
    at.button(key="models_rollback_yes").click().run()
    assert not at.exception, at.exception
    assert registry.active().label == "magnetic-tile v2"
    assert "· version 2" in sidebar_text(at)
    audit = next(d.value for d in at.dataframe if "What" in d.value.columns)
    assert audit.iloc[0][["What", "From", "To", "By"]].tolist() == [
        "rollback",
        "magnetic-tile v3",
        "magnetic-tile v2",
        "Ben",
    ]


@BOTH_BACKENDS
def test_promotion_comes_after_a_comparison(home, tmp_path, default_model_dir, labelled_folder):
    registry = ModelRegistry(home)
    registry.ensure_initialised()
    registry.register(copy_as_version(default_model_dir, tmp_path / "v3", "3"), by="ana")
    import_dataset(Store(home), "tiles", labelled_folder(tmp_path / "tiles", 2, ["crack", "free", "uneven"]), by="ana")
    at = open_page()
    assert not [b for b in at.button if b.key == "models_promote"]  # no comparison yet, no promotion
    at.selectbox(key="models_compare_candidate").set_value("magnetic-tile v3").run()
    at.selectbox(key="models_compare_dataset").set_value("tiles@1").run()
    at.button(key="models_compare_go").click().run()
    assert not at.exception, at.exception
    side_by_side = next(d.value for d in at.dataframe if "Measure" in d.value.columns)
    assert side_by_side.columns.tolist() == ["Measure", "magnetic-tile v2", "magnetic-tile v3", "Change"]
    accuracy = side_by_side.set_index("Measure").loc["Accuracy %"]
    assert accuracy["magnetic-tile v2"] == accuracy["magnetic-tile v3"] and accuracy["Change"] == 0  # same weights
    assert len(at.get("vega_lite_chart")) >= 2  # both confusion matrices
    as_reviewer(at, "Ana").run()
    at.button(key="models_promote").click().run()
    at.button(key="models_promote_yes").click().run()
    assert not at.exception, at.exception
    assert registry.active().label == "magnetic-tile v3"
    assert registry.activations()[0]["action"] == "promote"
    assert "· version 3" in sidebar_text(at)


def zipped_folder(folder) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder.parent).as_posix())
    return buffer.getvalue()


@BOTH_BACKENDS
def test_import_an_archive_and_start_a_training_job(home, tmp_path, labelled_folder):
    archive = zipped_folder(labelled_folder(tmp_path / "door-panels", 3, ["crack", "free"]))
    at = open_page()
    at.file_uploader(key="models_import_zip").set_value([("door-panels.zip", archive, "application/zip")]).run()
    assert at.text_input(key="models_import_name").value == "door-panels"
    as_reviewer(at, "Ana").run()
    at.button(key="models_import_go").click().run()
    assert not at.exception, at.exception
    assert any("door-panels@1" in s.value for s in at.success)
    assert any("too few images to learn well" in w.value for w in at.warning)
    store = Store(home)
    assert store.dataset("door-panels")["class_counts"] == {"crack": 3, "free": 3}

    at.number_input(key="models_train_epochs").set_value(5).run()
    at.radio(key="models_train_views").set_value(1).run()
    at.checkbox(key="models_train_phase2").uncheck().run()
    assert at.checkbox(key="models_train_conv_head").value  # tried by default
    at.checkbox(key="models_train_conv_head").uncheck().run()
    assert any("about" in c.value and "6 images" in c.value for c in at.caption)  # the time estimate
    as_reviewer(at, "Ana").run()
    at.button(key="models_train_go").click().run()
    assert not at.exception, at.exception
    [job] = store.jobs().itertuples()
    assert job.params == {"name": "door-panels", "dataset": "door-panels@1",
                          "options": {"views": 1, "epochs": 5, "phase2": False, "phase2_epochs": 10, "repeats": 0,
                                      "max_per_class": None, "seed": 0, "conv_head": "off",
                                      "export": True}}  # fmt: skip
    assert any("queued" in s.value for s in at.success)
    from visionqc.jobs import queue

    assert queue.cancel(store, job.job_id) in ("cancelled", "stopping")  # the test needs no model from it


@BOTH_BACKENDS
def test_a_dataset_from_reviews_through_the_page(home, magnetic_tile, default_model_dir):
    ModelRegistry(home).ensure_initialised()
    store = Store(home)
    photos = [p for cls in ("crack", "free") for p in sorted((magnetic_tile / "images" / cls).glob("*.jpg"))[:3]]
    run_batch(
        store, Predictor(default_model_dir), [UploadFile(f"{p.parent.name}-{p.name}", p.read_bytes()) for p in photos]
    )
    rows, _ = store.search(InspectionFilter(), page_size=0)
    for row in rows.itertuples():
        store.review([row.inspection_id], "ana", "correct", defect=row.file_name.split("-")[0])
    at = open_page()
    as_reviewer(at, "Ana").run()
    assert any("6 inspections" in m.value for m in at.markdown)
    at.text_input(key="models_reviews_name").set_value("line-2").run()
    at.button(key="models_reviews_go").click().run()
    assert not at.exception, at.exception
    row = store.dataset("line-2")
    assert row["class_counts"] == {"crack": 3, "free": 3} and row["created_by"] == "Ana"


@BOTH_BACKENDS
def test_inspect_says_when_a_batch_looks_foreign(home, default_model_dir, neu_det):
    ModelRegistry(home).ensure_initialised()
    store = Store(home)
    steel = sorted((neu_det / "images" / "scratches").glob("*.jpg"))[:6]
    foreign = run_batch(store, Predictor(default_model_dir), [UploadFile(p.name, p.read_bytes()) for p in steel])
    at = open_app(timeout=TIMEOUT)
    at.session_state[upload.CURRENT_BATCH] = foreign.batch_id
    at.switch_page("pages/1_Inspect.py").run()
    assert not at.exception, at.exception
    [notice] = [w.value for w in at.warning if "look unlike anything" in w.value]
    assert "6 of 6" in notice and "magnetic-tile v2" in notice
    # Both ways to start: good photos only (an anomaly model), or labelled photos (a classifier).
    assert "**train an anomaly model from good photos**" in notice
    assert "**train a classifier from labelled photos** (an archive, or a dataset built from your reviews" in notice


@BOTH_BACKENDS
def test_the_anomaly_form_lets_the_lead_choose_how_many_good_parts_may_be_flagged(home, magnetic_tile):
    photos = [
        (p.name, p.read_bytes(), "image/jpeg") for p in sorted((magnetic_tile / "images" / "free").glob("*.jpg"))[:11]
    ]
    at = open_page()
    flagged = at.radio(key="models_anomaly_flagged")
    assert flagged.value == 95.0 and flagged.options == ["1 in 100", "1 in 50", "1 in 20", "1 in 10"]
    at.file_uploader(key="models_anomaly_files").set_value(photos).run()
    flagged.set_value(90.0).run()
    as_reviewer(at, "Ana").run()
    at.button(key="models_anomaly_go").click().run()
    assert not at.exception, at.exception
    store = Store(home)
    [job] = store.jobs().itertuples()
    assert job.kind == "anomaly" and job.params["good_percentile"] == 90.0 and job.params["photos"] == 11
    assert any("about 1 in 10 good parts flagged by mistake" in s.value for s in at.success)
    from visionqc.jobs import queue

    assert queue.cancel(store, job.job_id) in ("cancelled", "stopping")  # the test needs no model from it
