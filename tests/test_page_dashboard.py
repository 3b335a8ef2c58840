"""The Dashboard page through AppTest: the empty state, a seeded database, a cross-filter and clearing it; every
test on both backends (the aggregates' SQL is what differs)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from apptest import BOTH_BACKENDS, open_app
from records import seed_inspections
from streamlit.testing.v1 import AppTest

from visionqc.filters import InspectionFilter
from visionqc.store import Store

PAGE = "pages/3_Dashboard.py"
CROSS_KEY = "dashboard_cross"


@pytest.fixture(scope="module")
def seeded_home(tmp_path_factory) -> Path:
    """800 synthetic inspections over the last 20 days (SQL only: fast); each test gets a copy (``home``)."""
    home = tmp_path_factory.mktemp("dashboard") / "visionqc-data"
    seed_inspections(home, 800, days=20, end=datetime.now(UTC))
    return home


def open_dashboard(default_model_dir, monkeypatch) -> AppTest:
    monkeypatch.setenv("VISIONQC_MODEL", str(default_model_dir))
    monkeypatch.setenv("VISIONQC_TIMEZONE", "UTC")
    return open_app(PAGE, timeout=120)


def metric(at: AppTest, label: str) -> str:
    [value] = [m.value for m in at.metric if m.label == label]
    return value


@pytest.mark.usefixtures("backend")
def test_empty_database_points_to_inspect(visionqc_home, default_model_dir, monkeypatch):
    at = open_dashboard(default_model_dir, monkeypatch)
    assert any("Nothing has been inspected yet" in info.value for info in at.info)
    assert not at.metric


@pytest.fixture
def seeded(home) -> Store:
    return Store(home)


@BOTH_BACKENDS
def test_kpis_match_the_database_and_a_cross_filter_narrows_them(seeded, default_model_dir, monkeypatch):
    at = open_dashboard(default_model_dir, monkeypatch)
    labels = [m.label for m in at.metric]
    assert labels == [
        "Inspected",
        "Defect rate",
        "Last 7 days",
        "Top defect",
        "≥ Medium severity",
        "Review backlog",
        "Unusable photos",
    ]
    # The default period is the last 30 days; the seeded rows span 20, so every live row counts.
    total = seeded.count(InspectionFilter())
    assert metric(at, "Inspected") == f"{total:,}"
    assert len(at.get("vega_lite_chart")) == 7

    # Clicking "crack" on a chart stores this cross-filter; every KPI is then about cracks only.
    at.session_state[CROSS_KEY] = {"defect": ["crack"]}
    at.run()
    assert not at.exception, at.exception
    cracks = seeded.count(InspectionFilter(defects=("crack",)))
    assert 0 < cracks < total
    assert metric(at, "Inspected") == f"{cracks:,}"
    assert metric(at, "Top defect") == "crack"
    assert metric(at, "Defect rate") == "100.0%"
    assert any("crack" in caption.value for caption in at.caption)

    clear = next(b for b in at.button if b.label == "Clear chart filters")
    assert not clear.disabled
    clear.click().run()
    assert at.session_state[CROSS_KEY] == {}
    assert metric(at, "Inspected") == f"{total:,}"


@BOTH_BACKENDS
def test_open_in_history_carries_the_filters(seeded, default_model_dir, monkeypatch):
    at = open_dashboard(default_model_dir, monkeypatch)
    station = seeded.distinct_values("station")[0]
    at.multiselect(key="dashboard_stations").set_value([station])
    at.session_state[CROSS_KEY] = {"severity": ["high"]}
    at.run()
    expected = seeded.count(InspectionFilter(severities=("high",), stations=(station,)))
    assert metric(at, "Inspected") == f"{expected:,}"

    next(b for b in at.button if b.label == "Open in History").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "History"
    # The History widgets show what the Dashboard had, the station included.
    assert at.multiselect(key="history_f_severities").value == ["high"]
    assert at.multiselect(key="history_f_stations").value == [station]
    assert at.date_input(key="history_f_date_from").value is not None
    shown = at.session_state["history_filter"]
    assert shown.severities == ("high",) and tuple(shown.stations) == (station,)
    assert seeded.count(shown) == expected
