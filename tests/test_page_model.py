"""The Model page through AppTest with the shipped model's card (plus a localisation entry written by the
``localise`` code path): sections, metrics, confusion matrices and localisation numbers are shown."""

from __future__ import annotations

import shutil

import pytest
from streamlit.testing.v1 import AppTest

from visionqc.config import PROJECT_ROOT
from visionqc.model.card import read_card
from visionqc.reporting import model_card
from visionqc.training.localisation import SampleResult, summarise, write_to_card

APP = str(PROJECT_ROOT / "streamlit_app.py")


@pytest.fixture
def model_dir(tmp_path, default_model_dir, monkeypatch):
    target = tmp_path / "model"
    shutil.copytree(default_model_dir, target)
    results = [
        SampleResult("a.jpg", "crack", "crack", (1, 1), (0, 0, 4, 4), True, True, 0.6),
        SampleResult("b.jpg", "blowhole", "blowhole", (9, 9), (0, 0, 4, 4), False, True, 0.0),
    ]
    write_to_card(target, summarise(results, dataset="magnetic-tile", method="test"), "magnetic-tile test split")
    monkeypatch.setenv("VISIONQC_MODEL", str(target))
    monkeypatch.setenv("VISIONQC_HOME", str(tmp_path / "home"))
    return target


def test_model_page_shows_the_card(model_dir):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/6_Model.py").run()
    assert not at.exception, at.exception
    card = read_card(model_dir)
    text = " ".join(m.value for m in at.markdown)
    assert card.name in text and card.version in text
    assert any("Huang" in i.value for i in at.info)  # the dataset citation
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pointing game"] == "50%" and metrics["Within 15 px"] == "100%"
    assert "Balanced accuracy" in metrics
    charts = at.get("vega_lite_chart")
    assert len(charts) == len(model_card.test_metrics(card.raw))  # one confusion matrix per task
    [loc] = [d.value for d in at.dataframe if "Pointing game %" in d.value.columns]
    assert loc["Images"].tolist() == [2, 1, 1]


def test_model_page_speaks_plain_words_first(model_dir):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/6_Model.py").run()
    assert not at.exception, at.exception
    plain = " ".join(m.value for m in at.markdown[:12])
    assert "What it finds" in plain and "How often it is right" in plain and "When it asks a person" in plain
    assert "photos it never saw while learning" in plain
    card = read_card(model_dir)
    assert f"more than a **{100 * card.miss_threshold:.0f}%** chance" in plain
    for jargon in ("LayerCAM", "pointing game", "k=5", "out of distribution", "cosine"):
        assert jargon.lower() not in plain.lower(), jargon
    # The technical tables are still there, behind an expander.
    assert any("Technical details" in e.label for e in at.expander)


def test_confusion_frame_shares_are_per_true_class():
    frame = model_card.confusion_frame({"labels": ["a", "b"], "rows_true_columns_predicted": [[3, 1], [0, 2]]})
    assert frame["Images"].tolist() == [3, 1, 0, 2]
    assert frame["Share of true %"].tolist() == [75.0, 25.0, 0.0, 100.0]
    assert model_card.localisation_entries({}) == {}
