"""The Explore page through AppTest over a real store (real ingest, shipped model): the map, its sample
size and filters, colour choices, t-SNE, and outlier scoring. Dragging a box is tested in the browser
(tests/e2e/test_explore_map.py); the selection logic itself is tested here on a fake event.

The tests that read or write rows run on PostgreSQL too (``BOTH_BACKENDS``: the map's rows and embeddings, the
filters' SQL, the scores and tags written back); the colourings and projections draw the rows the first test
already read, so they run on DuckDB only (the suite's time budget)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from apptest import BOTH_BACKENDS, open_app
from PIL import Image
from streamlit.testing.v1 import AppTest

from visionqc.explore import scores
from visionqc.filters import InspectionFilter
from visionqc.intake.uploads import UploadFile
from visionqc.model.predict import Predictor
from visionqc.reporting import explore_map
from visionqc.store import Store
from visionqc.store.ingest import run_batch
from visionqc.ui import explore

PAGE = "pages/4_Explore.py"
TIMEOUT = 180


@pytest.fixture(scope="module")
def seeded_home(tmp_path_factory, magnetic_tile, default_model_dir) -> Path:
    home = tmp_path_factory.mktemp("explore") / "visionqc-data"
    files = []
    for cls in ("blowhole", "break", "crack", "fray", "free", "uneven"):
        files += sorted((magnetic_tile / "images" / cls).glob("*.jpg"))[:6]
    uploads = [UploadFile(p.name, p.read_bytes()) for p in files]
    buf = io.BytesIO()
    Image.open(files[0]).save(buf, format="JPEG", quality=90)  # the same photo re-encoded: a near-duplicate
    uploads.append(UploadFile("copy-of-" + files[0].name, buf.getvalue()))
    run_batch(Store(home), Predictor(default_model_dir), uploads)
    return home


@pytest.fixture
def app(home) -> AppTest:
    return open_app(PAGE, timeout=TIMEOUT)


def count_line(at: AppTest) -> str:
    return next(md.value for md in at.markdown if "inspections match" in md.value)


@BOTH_BACKENDS
def test_map_shows_every_inspection_when_few(app, home):
    total = Store(home).count(InspectionFilter())
    assert total == 37
    assert count_line(app) == f"**{total} inspections match** · the map shows all {total}"
    assert len(app.get("vega_lite_chart")) == 1


def test_large_sets_are_sampled(app):
    app.select_slider(key="explore_points").set_value(500).run()
    assert not app.exception
    assert "all 37" in count_line(app)


@BOTH_BACKENDS
def test_filters_are_shared_with_history(app, home):
    app.multiselect(key="explore_f_defects").set_value(["free"]).run()
    assert not app.exception, app.exception
    expected = Store(home).count(InspectionFilter(defects=["free"]))
    assert count_line(app).startswith(f"**{expected} inspections match**")


@pytest.mark.parametrize("colour", list(explore_map.COLOR_CHOICES))
def test_every_colouring_renders(app, colour):
    app.selectbox(key="explore_color").set_value(colour).run()
    assert not app.exception, app.exception


@pytest.mark.parametrize("method", ["t-SNE", "UMAP"])
def test_other_projections_render(app, method):
    app.radio(key="explore_method").set_value(method).run()
    assert not app.exception, app.exception
    assert len(app.get("vega_lite_chart")) == 1


@BOTH_BACKENDS
def test_scoring_stores_outlier_scores_and_tags_near_duplicates(app, home):
    next(b for b in app.button if b.label.startswith("Compute scores")).click().run()
    assert not app.exception, app.exception
    assert any("Scored 37 inspections" in s.value for s in app.success)
    rows, _ = Store(home).search(InspectionFilter(), sort="outlier_score", descending=True, page_size=0)
    assert rows["outlier_score"].notna().all()
    tagged = rows[rows["tags"].map(lambda t: scores.NEAR_DUPLICATE_TAG in list(t))]
    assert len(tagged) >= 2  # the copy and its original
    assert any("Most unusual images" in md.value for md in app.markdown)
    # Near-duplicates are also sortable in History: the re-encoded copy comes first, pointing at its original.
    by_similarity, _ = Store(home).search(
        InspectionFilter(), sort="near_duplicate_similarity", descending=True, page=1, page_size=1
    )
    top = by_similarity.iloc[0]
    assert (
        top["file_name"].startswith("copy-of-") and top["near_duplicate_similarity"] >= scores.NEAR_DUPLICATE_THRESHOLD
    )
    original = Store(home).inspection_detail(int(top["near_duplicate_of"]))
    assert "copy-of-" + original["file_name"] == top["file_name"]


def test_box_selection_picks_the_points_inside():
    frame = pd.DataFrame({"inspection_id": [1, 2, 3], "x": [0.0, 1.0, 2.0], "y": [0.0, 1.0, 2.0]})
    event = {"selection": {explore_map.REGION: {"x": [0.5, 2.5], "y": [2.5, 0.5]}}}
    assert explore.selected_ids(frame, event) == [2, 3]
    assert explore.selected_ids(frame, {"selection": {explore_map.REGION: {}}}) == []
    assert explore.selected_ids(frame, None) == []
    assert explore_map.map_frame(
        pd.DataFrame(
            {
                "inspection_id": [1],
                "file_name": ["a.jpg"],
                "defect": ["crack"],
                "severity": [None],
                "batch_id": ["b"],
                "confidence": [0.5],
                "outlier_score": [np.nan],
                "needs_review": [True],
                "reviewed": [False],
            }
        ),
        np.zeros((1, 2)),
    )["review_state"].tolist() == ["needs review"]
