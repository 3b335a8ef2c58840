"""The review queue through AppTest, over a real store filled by the real ingest and shipped model:
most uncertain first, confirm and correct write reviews to the audit trail, skip writes nothing. The tests that
write reviews run on both backends (``BOTH_BACKENDS``: a PostgreSQL clone of the seeded rows second); skipping
writes nothing and reads the queue's order, which the confirm test reads on PostgreSQL too, so it runs on DuckDB
only (the suite's time budget)."""

from __future__ import annotations

from pathlib import Path

import pytest
from apptest import BOTH_BACKENDS, as_reviewer, open_app
from streamlit.testing.v1 import AppTest

from visionqc.filters import InspectionFilter
from visionqc.intake.uploads import UploadFile
from visionqc.model.predict import Predictor
from visionqc.store import Store
from visionqc.store.ingest import run_batch

PAGE = "pages/5_Review_queue.py"
TIMEOUT = 180


@pytest.fixture(scope="module")
def seeded_home(tmp_path_factory, magnetic_tile, default_model_dir) -> Path:
    home = tmp_path_factory.mktemp("queue") / "visionqc-data"
    files = []
    for cls in ("blowhole", "crack", "free", "uneven"):
        files += sorted((magnetic_tile / "images" / cls).glob("*.jpg"))[:4]
    run_batch(Store(home), Predictor(default_model_dir), [UploadFile(p.name, p.read_bytes()) for p in files])
    return home


def waiting_order(store: Store, below: float = 1.0) -> list[int]:
    """Every unreviewed row in the queue's order, computed here in pandas (threshold 100% queues all)."""
    rows, _ = store.search(InspectionFilter(reviewed=False), sort="inspection_id", descending=False, page_size=0)
    rows = rows[rows["needs_review"] | (rows["confidence"] < below)]
    return rows.sort_values(["confidence", "inspection_id"])["inspection_id"].astype(int).tolist()


@pytest.fixture
def app(home) -> AppTest:
    at = open_app(PAGE, reviewer="Ana", timeout=TIMEOUT)
    at.slider(key="queue_confidence").set_value(100).run()
    as_reviewer(at, "Ana").run()
    assert not at.exception, at.exception
    return at


def shown_id(at: AppTest) -> int:
    for md in at.markdown:
        if "· inspection " in md.value:
            return int(md.value.rsplit("inspection ", 1)[1])
    raise AssertionError("no inspection shown")


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


@BOTH_BACKENDS
def test_most_uncertain_first_and_confirm_writes_a_review(app, home):
    store = Store(home)
    order = waiting_order(store)
    assert shown_id(app) == order[0]
    assert any(f"**{len(order)} waiting**" in md.value for md in app.markdown)
    button(app, "Confirm").click().run()
    assert not app.exception, app.exception
    history = store.review_history(order[0])
    assert list(history["kind"]) == ["confirm"] and list(history["reviewer"]) == ["Ana"]
    assert shown_id(app) == order[1]
    assert any("Confirmed" in s.value for s in app.success)


@BOTH_BACKENDS
def test_correct_writes_the_chosen_labels(app, home):
    store = Store(home)
    first = waiting_order(store)[0]
    app.selectbox(key=f"queue_{first}_defect").set_value("crack")
    app.selectbox(key=f"queue_{first}_severity").set_value("high")
    app.text_input(key=f"queue_{first}_note").set_value("hairline crack at the edge")
    button(app, "Save correction").click().run()
    assert not app.exception, app.exception
    detail = store.inspection_detail(first)
    assert detail["defect"] == "crack" and detail["severity"] == "high" and detail["reviewed_by"] == "Ana"
    history = store.review_history(first)
    assert list(history["kind"]) == ["correct"] and history["note"].iloc[0] == "hairline crack at the edge"


def test_skip_moves_on_without_writing(app, home):
    store = Store(home)
    order = waiting_order(store)
    button(app, "Skip").click().run()
    assert shown_id(app) == order[1]
    assert store.review_history(order[0]).empty
    assert any("1 skipped" in md.value for md in app.markdown)


@pytest.mark.duckdb_only("a typed reviewer name: on a shared store the signed-in user reviews, nothing is typed")
def test_a_review_needs_a_name(app, home):
    store = Store(home)
    first = waiting_order(store)[0]
    app.text_input(key="sidebar_reviewer").set_value("").run()
    button(app, "Confirm").click().run()
    assert any("name" in e.value for e in app.error)
    assert store.review_history(first).empty


@BOTH_BACKENDS
def test_not_a_part_is_a_key_in_the_queue_and_leaves_it(app, home):
    store = Store(home)
    order = waiting_order(store)
    [unusable] = [b for b in app.button if b.label == "Not a part / unusable"]
    app.selectbox(key=f"queue_{order[0]}_unusable_reason").set_value("blurred")
    unusable.click().run()
    assert not app.exception, app.exception
    detail = store.inspection_detail(order[0])
    assert detail["unusable_reason"] == "blurred" and detail["defect"] is None and detail["action"] is None
    assert list(store.review_history(order[0])["kind"]) == ["unusable"]
    assert shown_id(app) == order[1], "the queue moves on"
    assert any("unusable" in s.value for s in app.success)
