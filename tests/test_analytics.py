"""Dashboard aggregates (visionqc.store.analytics) against hand-computed numbers on a real DuckDB store.

Rows are written through ``Store.write_chunk`` (the path ingest uses) with chosen timestamps, labels, models
and stations; reviews go through ``Store.review``. Every expected number below is counted by hand from the
table in :func:`seeded` — no expectation is computed with the code under test.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest
from records import synthetic_record

from visionqc.filters import InspectionFilter, Period
from visionqc.reporting.dashboard import kpi_cards
from visionqc.store import InspectionRecord, Store
from visionqc.store.analytics import dashboard_data

TODAY = date(2026, 3, 20)
NO_DEFECT = "free"


@dataclass
class Row:
    """One inspection as the test wants it: UTC time, predicted labels, station and model."""

    at: datetime
    defect: str
    severity: str | None = None
    location: str | None = None
    action: str = "Pass"
    needs_review: bool = False
    station: str = "Line 1"
    model: str = "magnetic-tile"


def _record(row: Row, inspection_id: int) -> InspectionRecord:
    return synthetic_record(
        inspection_id,
        created_at=row.at,
        defect=row.defect,
        severity=row.severity,
        location=row.location,
        action=row.action,
        needs_review=row.needs_review,
        model_name=row.model,
        no_defect_label=NO_DEFECT,
    )


def insert(store: Store, rows: list[Row]) -> list[int]:
    """Write ``rows`` (one batch per station, as ingest would) and return their inspection ids in order."""
    ids = store.reserve_inspection_ids(len(rows))
    for station in dict.fromkeys(r.station for r in rows):
        batch = store.create_batch(
            station=station, operator="t", note=None, source="cli", model_name="magnetic-tile", model_version="1.0"
        )
        store.write_chunk(batch, [_record(r, i) for r, i in zip(rows, ids, strict=True) if r.station == station])
        store.finish_batch(batch)
    return ids


def utc(month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute)  # naive UTC, as the store keeps it


# The hand-counted table. Period "7d" with today 2026-03-20 covers 03-14 .. 03-20 (UTC).
#  #  day    predicted                     effective (after review)      station model         flags
#  1  03-20  crack/high/top Reject         same                          Line 1  magnetic-tile
#  2  03-20  crack/medium/top Rework       same                          Line 1  magnetic-tile
#  3  03-19  scratch/low/edge Hold         same                          Line 1  magnetic-tile
#  4  03-19  free Pass                     same                          Line 1  magnetic-tile
#  5  03-18  free Pass                     same                          Line 1  magnetic-tile
#  6  03-18  crack/high/edge Review        same                          Line 1  magnetic-tile needs review
#  7  03-10  scratch/medium/edge Rework    same (previous 7 days)        Line 1  magnetic-tile
#  8  03-09  free Pass                     same (previous 7 days)        Line 1  magnetic-tile
#  9  02-01  crack/high/top Reject         same (outside 30 days)        Line 1  magnetic-tile
# 10  03-20  dent/low/center Hold          same                          Line 2  other-model
# 11  03-17  free Review                   same                          Line 2  magnetic-tile needs review
# 12  03-19  crack/high/top Review         reviewed -> free, Pass        Line 1  magnetic-tile needs review
# 13  03-19  crack/high/top Reject         reviewed -> scratch/low, Hold Line 1  magnetic-tile
ROWS = [
    Row(utc(3, 20, 10), "crack", "high", "top", "Reject"),
    Row(utc(3, 20, 11), "crack", "medium", "top", "Rework"),
    Row(utc(3, 19, 10), "scratch", "low", "edge", "Hold"),
    Row(utc(3, 19, 12), NO_DEFECT),
    Row(utc(3, 18, 9), NO_DEFECT),
    Row(utc(3, 18, 9, 30), "crack", "high", "edge", "Review", needs_review=True),
    Row(utc(3, 10, 8), "scratch", "medium", "edge", "Rework"),
    Row(utc(3, 9, 8), NO_DEFECT),
    Row(utc(2, 1, 8), "crack", "high", "top", "Reject"),
    Row(utc(3, 20, 12), "dent", "low", "center", "Hold", station="Line 2", model="other-model"),
    Row(utc(3, 17, 8), NO_DEFECT, action="Review", needs_review=True, station="Line 2"),
    Row(utc(3, 19, 14), "crack", "high", "top", "Review", needs_review=True),
    Row(utc(3, 19, 15), "crack", "high", "top", "Reject"),
]


@pytest.fixture(scope="module")
def seeded(new_database, tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("analytics") / "home", url=new_database())
    ids = insert(store, ROWS)
    assert store.review([ids[11]], "Ana", "correct", defect=NO_DEFECT, action="Pass") == 1
    assert store.review([ids[12]], "Ana", "correct", defect="scratch", severity="low", action="Hold") == 1
    return store


def week(store: Store, models=(), stations=(), cross=(), include_no_defect=False) -> object:
    f = InspectionFilter(model_names=models, stations=stations)
    for dimension, values in cross:
        f = f.with_labels(dimension, [None if v == "—" else v for v in values])
    return dashboard_data(store, f, Period("7d"), include_no_defect=include_no_defect, today=TODAY)


def as_dict(frame: pd.DataFrame, key: str) -> dict[str, int]:
    return dict(zip(frame[key], frame["count"].astype(int), strict=True))


# --- aggregates for the default view --------------------------------------------------------------------
def test_defect_type_by_severity_counts(seeded):
    data = week(seeded)
    got = {(d, s): int(c) for d, s, c in data.defect_severity[["defect", "severity", "count"]].itertuples(index=False)}
    # rows 1, 6 | 2 | 3, 13 (reviewed to scratch/low) | 10 — the reviewed-to-free row 12 is not a crack.
    assert got == {("crack", "high"): 2, ("crack", "medium"): 1, ("scratch", "low"): 2, ("dent", "low"): 1}
    assert NO_DEFECT not in set(data.defect_severity["defect"])
    assert data.defect_severity["is_defect"].all()
    # share is of all 10 inspections the chart covers (4 of them defect-free)
    crack_high = data.defect_severity.query("defect == 'crack' and severity == 'high'")
    assert crack_high["share"].iloc[0] == pytest.approx(2 / 10)


def test_defect_type_ratio_excludes_no_defect(seeded):
    data = week(seeded)
    assert as_dict(data.by_defect, "defect") == {"crack": 3, "scratch": 2, "dent": 1}
    assert list(data.by_defect["defect"]) == ["crack", "scratch", "dent"]  # most first
    assert dict(zip(data.by_defect["defect"], data.by_defect["share"], strict=True)) == pytest.approx(
        {"crack": 3 / 6, "scratch": 2 / 6, "dent": 1 / 6}
    )
    assert data.no_defect_labels == (NO_DEFECT,)


def test_include_no_defect_counts_the_no_defect_class(seeded):
    data = week(seeded, include_no_defect=True)
    # rows 4, 5, 11 and the reviewed row 12
    assert as_dict(data.by_defect, "defect") == {"crack": 3, "scratch": 2, "dent": 1, NO_DEFECT: 4}
    assert data.by_defect["share"].sum() == pytest.approx(1.0)
    free = data.defect_severity.query("defect == @NO_DEFECT")
    assert list(free["severity"]) == ["—"] and int(free["count"].iloc[0]) == 4
    assert not free["is_defect"].any()
    # the KPIs do not change: the no-defect class is still not a defect
    assert data.kpis.defects == 6 and data.kpis.top_defect == "crack"


def test_severity_location_and_action_ratios(seeded):
    data = week(seeded)
    assert list(data.by_severity["severity"]) == ["low", "medium", "high"]  # lowest first
    assert as_dict(data.by_severity, "severity") == {"low": 3, "medium": 1, "high": 2}
    assert data.by_severity["share"].tolist() == pytest.approx([3 / 6, 1 / 6, 2 / 6])
    assert list(data.by_location["location"]) == ["top", "edge", "center"]  # most first
    assert as_dict(data.by_location, "location") == {"top": 3, "edge": 2, "center": 1}  # row 13 kept "top"
    assert list(data.by_action["action"]) == ["Pass", "Hold", "Rework", "Reject", "Review"]
    assert as_dict(data.by_action, "action") == {"Pass": 3, "Hold": 3, "Rework": 1, "Reject": 1, "Review": 2}
    assert data.by_action["share"].sum() == pytest.approx(1.0)


def test_daily_volume_and_defect_rate(seeded):
    daily = week(seeded).daily
    assert list(daily["day"]) == [date(2026, 3, d) for d in range(14, 21)]  # every day, zeros included
    assert daily["inspected"].tolist() == [0, 0, 0, 1, 2, 4, 3]
    assert daily["defects"].tolist() == [0, 0, 0, 0, 1, 2, 3]
    rates = daily["defect_rate"].tolist()
    assert all(np.isnan(r) for r in rates[:3])  # nothing inspected: no rate, not 0 %
    assert rates[3:] == pytest.approx([0.0, 0.5, 0.5, 1.0])


def test_kpis(seeded):
    k = week(seeded).kpis
    assert k.inspected == 10 and k.defects == 6
    assert k.defect_rate == pytest.approx(0.6)
    assert (k.last7, k.last7_defects) == (10, 6)
    assert (k.prev7, k.prev7_defects) == (2, 1)  # rows 7 and 8 (03-07 .. 03-13)
    assert k.prev7_rate == pytest.approx(0.5)
    assert (k.top_defect, k.top_defect_count) == ("crack", 3)
    assert k.top_defect_share == pytest.approx(0.5)
    assert k.serious == 3  # rows 1, 2, 6; row 13 was high but is reviewed to low
    assert k.serious_share == pytest.approx(0.5)
    assert k.backlog == 2  # rows 6 and 11; row 12 was flagged but is reviewed


def test_kpi_cards_text(seeded):
    cards = {c["label"]: c for c in kpi_cards(week(seeded).kpis)}
    assert cards["Inspected"]["value"] == "10"
    assert cards["Defect rate"]["value"] == "60.0%"
    assert cards["Defect rate"]["delta"] == "+10.0 pp"  # 60 % in the last 7 days vs 50 % before
    assert cards["Last 7 days"]["value"] == "10"
    assert cards["Last 7 days"]["delta"] == "+8 (+400%)"
    assert cards["Top defect"]["value"] == "crack"
    assert cards["Top defect"]["delta"] == "50.0% of defects"
    assert cards["≥ Medium severity"]["value"] == "50.0%"
    assert cards["Review backlog"]["value"] == "2"


# --- the period applies to every number -----------------------------------------------------------------
def test_period_30d_and_all(seeded):
    month = dashboard_data(seeded, period=Period("30d"), today=TODAY)
    assert month.kpis.inspected == 12 and month.kpis.defects == 7  # + rows 7 and 8, not row 9
    assert as_dict(month.by_defect, "defect") == {"crack": 3, "scratch": 3, "dent": 1}
    assert as_dict(month.by_severity, "severity") == {"low": 3, "medium": 2, "high": 2}
    assert as_dict(month.by_action, "action") == {"Pass": 4, "Hold": 3, "Rework": 2, "Reject": 1, "Review": 2}
    assert len(month.daily) == 30 and month.daily["inspected"].sum() == 12
    assert (month.first_day, month.last_day) == (date(2026, 2, 19), TODAY)

    everything = dashboard_data(seeded, period=Period("all"), today=TODAY)
    assert everything.kpis.inspected == 13 and everything.kpis.defects == 8
    assert as_dict(everything.by_defect, "defect") == {"crack": 4, "scratch": 3, "dent": 1}
    assert everything.first_day == date(2026, 2, 1)  # the first inspection, not an open bound
    assert everything.daily["inspected"].sum() == 13 and len(everything.daily) == 48


def test_custom_period_filters_every_aggregate(seeded):
    period = Period("custom", date(2026, 3, 19), date(2026, 3, 18))  # order does not matter
    data = dashboard_data(seeded, period=period, today=TODAY)
    # rows 3, 4, 5, 6, 12 (free), 13 (scratch/low)
    assert data.kpis.inspected == 6 and data.kpis.defects == 3
    assert as_dict(data.by_defect, "defect") == {"scratch": 2, "crack": 1}
    assert as_dict(data.by_severity, "severity") == {"low": 2, "high": 1}
    assert as_dict(data.by_location, "location") == {"edge": 2, "top": 1}
    assert as_dict(data.by_action, "action") == {"Hold": 2, "Pass": 3, "Review": 1}
    assert data.daily["inspected"].tolist() == [2, 4]
    assert data.kpis.backlog == 1
    # the 7-day comparison ends on the period's last day: 03-13 .. 03-19 and 03-06 .. 03-12
    assert (data.kpis.last7, data.kpis.prev7) == (7, 2)


# --- model, station and cross-filters -------------------------------------------------------------------
def test_model_filter(seeded):
    data = week(seeded, models=("magnetic-tile",))
    assert data.kpis.inspected == 9 and data.kpis.defects == 5  # without row 10
    assert as_dict(data.by_defect, "defect") == {"crack": 3, "scratch": 2}
    assert as_dict(data.by_location, "location") == {"top": 3, "edge": 2}
    other = week(seeded, models=("other-model",))
    assert other.kpis.inspected == 1 and other.kpis.top_defect == "dent"


def test_station_filter(seeded):
    data = week(seeded, stations=("Line 2",))
    assert data.kpis.inspected == 2 and data.kpis.defects == 1  # rows 10 and 11
    assert data.kpis.backlog == 1
    assert as_dict(data.by_defect, "defect") == {"dent": 1}
    assert as_dict(data.by_action, "action") == {"Hold": 1, "Review": 1}
    assert data.daily["inspected"].tolist() == [0, 0, 0, 1, 0, 0, 1]
    both = week(seeded, stations=("Line 1", "Line 2"))
    assert both.kpis.inspected == 10


def test_cross_filter_on_defect_type(seeded):
    data = week(seeded, cross=(("defect", ("crack",)),))
    # KPIs and trend: only cracks (rows 1, 2, 6)
    k = data.kpis
    assert (k.inspected, k.defects, k.serious, k.backlog) == (3, 3, 3, 1)
    assert (k.last7, k.prev7, k.top_defect) == (3, 0, "crack")
    assert data.daily["inspected"].tolist() == [0, 0, 0, 0, 1, 0, 2]
    # the other charts follow the pick ...
    assert as_dict(data.by_severity, "severity") == {"medium": 1, "high": 2}
    assert as_dict(data.by_location, "location") == {"top": 2, "edge": 1}
    assert as_dict(data.by_action, "action") == {"Rework": 1, "Reject": 1, "Review": 1}
    # ... while the defect charts keep every bar so the pick can be changed
    assert as_dict(data.by_defect, "defect") == {"crack": 3, "scratch": 2, "dent": 1}


def test_cross_filter_on_severity_and_combination(seeded):
    low = week(seeded, cross=(("severity", ("low",)),))
    assert low.kpis.inspected == 3  # rows 3, 10, 13
    assert as_dict(low.by_defect, "defect") == {"scratch": 2, "dent": 1}
    assert as_dict(low.by_severity, "severity") == {"low": 3, "medium": 1, "high": 2}  # its own chart: all
    f = InspectionFilter().with_labels("defect", ["scratch"]).with_labels("location", ["edge"])
    both = dashboard_data(seeded, f, Period("7d"), today=TODAY)
    assert both.kpis.inspected == 1  # row 3 (row 13 is a scratch at the top)
    assert as_dict(both.by_location, "location") == {"edge": 1, "top": 1}  # scratches, every location
    assert as_dict(both.by_defect, "defect") == {"scratch": 1, "crack": 1}  # at the edge, every type
    assert both.picks == {"defect": ["scratch"], "location": ["edge"]}


def test_cross_filter_on_action(seeded):
    data = week(seeded, cross=(("action", ("Pass",)),))
    assert data.kpis.inspected == 3 and data.kpis.defects == 0
    assert data.kpis.top_defect is None and data.kpis.defect_rate == 0
    assert data.by_severity.empty and data.by_location.empty
    # "—" on a chart stands for "no value": the severity of the defect-free rows 4, 5, 11 and 12
    none = week(seeded, cross=(("severity", ("—",)),))
    assert none.kpis.inspected == 4 and none.kpis.defects == 0
    handed = none.history_filter()
    assert tuple(handed.severities) == (None,)
    assert seeded.count(handed) == 4


# --- reviewed labels win over predictions ---------------------------------------------------------------
def test_reviewed_labels_override_predictions(new_database, tmp_path):
    store = Store(tmp_path / "home", url=new_database())
    ids = insert(store, [Row(utc(3, 20, h), "crack", "high", "top", "Reject") for h in (8, 9, 10)])
    store.review([ids[0]], "Ana", "correct", defect=NO_DEFECT)
    store.review([ids[1]], "Ana", "correct", defect="scratch", severity="low", location="edge")
    data = week(store)
    assert data.kpis.inspected == 3 and data.kpis.defects == 2
    assert as_dict(data.by_defect, "defect") == {"crack": 1, "scratch": 1}
    assert as_dict(data.by_severity, "severity") == {"low": 1, "high": 1}
    assert as_dict(data.by_location, "location") == {"top": 1, "edge": 1}
    assert data.kpis.serious == 1
    with_free = week(store, include_no_defect=True)
    assert as_dict(with_free.by_defect, "defect") == {"crack": 1, "scratch": 1, NO_DEFECT: 1}
    # a later review replaces an earlier one
    store.review([ids[0]], "Bo", "correct", defect="dent", severity="medium", location="center")
    again = week(store)
    assert as_dict(again.by_defect, "defect") == {"crack": 1, "scratch": 1, "dent": 1}
    assert again.kpis.serious == 2
    # soft-deleted inspections leave every number
    store.soft_delete([ids[2]], "Bo")
    deleted = week(store)
    assert deleted.kpis.inspected == 2 and as_dict(deleted.by_defect, "defect") == {"scratch": 1, "dent": 1}


# --- local calendar days --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def boundary(new_database, tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("boundary") / "home", url=new_database())
    insert(
        store,
        [
            Row(utc(3, 10, 12), "crack", "high", "top", "Reject"),
            Row(utc(3, 10, 23, 30), "crack", "high", "top", "Reject"),  # 03-11 00:30 in Berlin (UTC+1)
            Row(utc(3, 11, 3, 30), NO_DEFECT),  # 03-10 23:30 in New York (EDT, UTC-4 since 03-08)
        ],
    )
    return store


@pytest.mark.parametrize(
    ("zone", "inspected", "defects"),
    [
        ("UTC", [2, 1], [2, 0]),
        ("Europe/Berlin", [1, 2], [1, 1]),
        ("America/New_York", [3, 0], [2, 0]),
    ],
)
def test_daily_buckets_follow_the_time_zone(boundary, zone, inspected, defects):
    period = Period("custom", date(2026, 3, 10), date(2026, 3, 11))
    daily = dashboard_data(boundary, InspectionFilter(timezone=zone), period, today=date(2026, 3, 11)).daily
    assert list(daily["day"]) == [date(2026, 3, 10), date(2026, 3, 11)]
    assert daily["inspected"].tolist() == inspected
    assert daily["defects"].tolist() == defects


@pytest.mark.parametrize(("zone", "expected"), [("UTC", 1), ("Europe/Berlin", 2), ("America/New_York", 0)])
def test_period_edges_are_local_days(boundary, zone, expected):
    period = Period("custom", date(2026, 3, 11), date(2026, 3, 11))
    data = dashboard_data(boundary, InspectionFilter(timezone=zone), period, today=date(2026, 3, 11))
    assert data.kpis.inspected == expected
    assert data.daily["inspected"].sum() == expected
    assert sum(as_dict(data.by_action, "action").values()) == expected


# --- hand-off, empty and tiny ---------------------------------------------------------------------------
def test_hand_off_to_history_matches_the_dashboard(seeded):
    data = week(seeded, models=("magnetic-tile",), cross=(("defect", ("crack",)),))
    handed = data.history_filter()
    assert isinstance(handed, InspectionFilter)
    assert (handed.date_from, handed.date_to) == (date(2026, 3, 14), TODAY)
    assert tuple(handed.defects) == ("crack",) and tuple(handed.model_names) == ("magnetic-tile",)
    assert seeded.count(handed) == data.kpis.inspected == 3


def test_describe_names_filters_and_period(seeded):
    data = week(seeded, stations=("Line 2",), cross=(("defect", ("dent",)),))
    lines = data.describe()
    assert lines[0] == "Period: Last 7 days: 14 Mar 2026 – 20 Mar 2026 (days in UTC)"
    assert "Models: all" in lines and "Stations: Line 2" in lines and "Defect type: dent" in lines


def test_empty_store(new_database, tmp_path):
    store = Store(tmp_path / "home", url=new_database())
    data = week(store)
    assert data.empty
    assert data.kpis.defect_rate is None and data.kpis.top_defect is None and data.kpis.backlog == 0
    assert data.by_defect.empty and data.by_severity.empty and data.by_location.empty and data.by_action.empty
    assert data.daily["inspected"].tolist() == [0] * 7
    everything = dashboard_data(store, period=Period("all"), today=TODAY)
    assert everything.empty and everything.first_day is None and everything.daily.empty
    assert "no inspections" in everything.period_text()
    assert all(c["value"] in ("0", "—") for c in kpi_cards(everything.kpis))


def test_single_day_single_class(new_database, tmp_path):
    store = Store(tmp_path / "home", url=new_database())
    insert(store, [Row(utc(3, 20, 9), "crack", "high", "top", "Reject")])
    data = week(store)
    assert not data.empty
    assert (data.kpis.inspected, data.kpis.defects, data.kpis.top_defect) == (1, 1, "crack")
    assert data.kpis.defect_rate == 1.0 and data.kpis.prev7 == 0
    assert as_dict(data.by_severity, "severity") == {"high": 1}
    assert data.daily["inspected"].tolist() == [0, 0, 0, 0, 0, 0, 1]


def test_filter_validation(new_database, tmp_path):
    with pytest.raises(ValueError):
        Period("fortnight")
    with pytest.raises(ValueError):
        dashboard_data(
            Store(tmp_path / "home", url=new_database()), InspectionFilter(timezone="Mars/Olympus"), today=TODAY
        )
    with pytest.raises(KeyError):
        InspectionFilter().with_labels("station", ["x"])
    assert Period("7d").days(TODAY) == (date(2026, 3, 14), TODAY)


def test_unusable_photos_leave_every_quality_figure_and_are_counted_apart(new_database, tmp_path):
    store = Store(tmp_path / "home", url=new_database())
    ids = insert(store, ROWS)
    before = week(store)
    # Rows 1 (crack/high Reject) and 4 (free Pass) of the last 7 days were not our part at all.
    assert store.mark_unusable([ids[0], ids[3]], "Ana", "not our part") == 2
    after = week(store)
    assert after.kpis.unusable == 2 and before.kpis.unusable == 0
    assert after.kpis.inspected == before.kpis.inspected - 2
    assert after.kpis.defects == before.kpis.defects - 1
    assert as_dict(after.by_action, "action")["Reject"] == as_dict(before.by_action, "action")["Reject"] - 1
    assert sum(after.by_station["count"]) == after.kpis.inspected
    assert after.daily["inspected"].sum() == after.kpis.inspected
    # Marked and not: the comparison charts agree with the KPIs.
    line1 = after.by_station[after.by_station["group"] == "Line 1"]
    assert line1["inspected"].iloc[0] == line1["count"].sum()


def test_stations_compared_on_defect_rate_and_action_mix(seeded):
    data = week(seeded)
    frame = data.by_station
    assert set(frame["group"]) == {"Line 1", "Line 2"}
    line2 = frame[frame["group"] == "Line 2"]
    # Rows 10 (dent Hold) and 11 (free Review) in the last 7 days.
    assert as_dict(line2, "action") == {"Hold": 1, "Review": 1}
    assert line2["defect_rate"].iloc[0] == pytest.approx(0.5) and line2["share"].sum() == pytest.approx(1.0)
    assert frame["count"].sum() == data.kpis.inspected
    assert set(data.by_operator["group"]) == {"t"}
