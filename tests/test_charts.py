"""Dashboard charts (visionqc.reporting.charts) and exports (visionqc.reporting.exports).

Charts are built from the aggregates of a small real DuckDB store and checked through ``chart.to_dict()``:
fields, colours from :mod:`visionqc.palette`, tooltips, selections and that the embedded data is the aggregate.
PNGs are rendered by vl-convert and opened with PIL; the report zip is opened with ``zipfile``.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, date, datetime

import altair as alt
import pandas as pd
import pytest
from PIL import Image
from records import synthetic_record

from visionqc.filters import InspectionFilter, Period
from visionqc.reporting import charts, dashboard, exports, palette
from visionqc.store import Store
from visionqc.store.analytics import DashboardData, dashboard_data

TODAY = date(2026, 3, 20)
NO_DEFECT = "free"
KEYS = [
    "defect_severity",
    "daily_trend",
    "severity_ratio",
    "location",
    "action_ratio",
    "station_comparison",
    "operator_comparison",
]

# (UTC time, defect, severity, location, action, needs_review) — 12 inspections over five days.
ROWS = [
    (datetime(2026, 3, 20, 9), "crack", "high", "top", "Reject", False),
    (datetime(2026, 3, 20, 10), "crack", "medium", "top", "Rework", False),
    (datetime(2026, 3, 20, 11), "crack", "low", "edge", "Hold", False),
    (datetime(2026, 3, 19, 9), "scratch", "low", "edge", "Hold", False),
    (datetime(2026, 3, 19, 10), "scratch", "high", "center", "Reject", False),
    (datetime(2026, 3, 19, 11), NO_DEFECT, None, None, "Pass", False),
    (datetime(2026, 3, 18, 9), NO_DEFECT, None, None, "Pass", False),
    (datetime(2026, 3, 18, 10), "dent", "medium", "center", "Review", True),
    (datetime(2026, 3, 17, 9), NO_DEFECT, None, None, "Pass", False),
    (datetime(2026, 3, 16, 9), "crack", "high", "edge", "Reject", False),
    (datetime(2026, 3, 16, 10), NO_DEFECT, None, None, "Pass", False),
    (datetime(2026, 3, 16, 11), "dent", "low", "top", "Hold", False),
]


def insert(store: Store, rows: list[tuple]) -> None:
    ids = store.reserve_inspection_ids(len(rows))
    batch = store.create_batch(
        station="Line 1", operator="t", note=None, source="cli", model_name="magnetic-tile", model_version="1.0"
    )
    records = [
        synthetic_record(
            i,
            created_at=at,
            defect=defect,
            severity=severity,
            location=location,
            action=action,
            needs_review=flagged,
            no_defect_label=NO_DEFECT,
        )
        for i, (at, defect, severity, location, action, flagged) in zip(ids, rows, strict=True)
    ]
    store.write_chunk(batch, records)
    store.finish_batch(batch)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("charts") / "home")
    insert(store, ROWS)
    return store


@pytest.fixture(scope="module")
def data(store) -> DashboardData:
    return dashboard_data(store, InspectionFilter(model_names=("magnetic-tile",)), Period("7d"), today=TODAY)


def spec_rows(chart: alt.TopLevelMixin) -> list[dict]:
    """Every data row embedded in a chart's spec (inline datasets)."""
    spec = chart.to_dict()
    return [row for rows in spec.get("datasets", {}).values() for row in rows]


def mark_types(spec: dict) -> list[str]:
    """Every mark type in a chart spec, layers included (a layered chart has no top-level mark)."""
    mark = spec.get("mark")
    types = [mark["type"] if isinstance(mark, dict) else mark] if mark else []
    for part in (*spec.get("layer", []), *spec.get("hconcat", []), *spec.get("vconcat", [])):
        types += mark_types(part)
    return types


def tooltip_fields(encoding: dict) -> dict[str, dict]:
    return {t["field"]: t for t in encoding["tooltip"]}


SEVERITY_EXPECTED = {"low": "#c5b5e0", "medium": "#8c6bb1", "high": "#4d1f86"}


def test_severity_is_a_purple_ramp_apart_from_every_action_colour():
    assert {s: palette.SEVERITY_COLORS[s] for s in SEVERITY_EXPECTED} == SEVERITY_EXPECTED
    assert palette.severity_scale(["high", None, "low", "medium"]) == (
        ["low", "medium", "high", "—"],
        ["#c5b5e0", "#8c6bb1", "#4d1f86", palette.NEUTRAL_COLOR],
    )
    # "low" must never read as "Pass" nor "high" as "Reject" when both are on one page.
    assert not set(palette.SEVERITY_COLORS.values()) & set(palette.ACTION_COLORS.values())
    assert not set(palette.SEVERITY_COLORS.values()) & set(palette.CATEGORY_COLORS)


# --- encodings ------------------------------------------------------------------------------------------
def test_defect_severity_bars_encoding(data):
    chart = charts.defect_severity_bars(data.defect_severity, selected=["crack"], subtitle="Line 1")
    spec = chart.to_dict()
    enc = spec["encoding"]
    assert spec["mark"]["type"] == "bar"
    assert (enc["y"]["field"], enc["y"]["type"]) == ("defect", "nominal")
    assert enc["y"]["sort"] == ["crack", "dent", "scratch"]  # most frequent first: 4, 2, 2 (ties by name)
    assert (enc["x"]["field"], enc["x"]["aggregate"]) == ("count", "sum")
    assert enc["color"]["field"] == "severity"
    assert charts.color_scale_of(chart) == SEVERITY_EXPECTED
    tips = tooltip_fields(enc)
    assert tips["count"]["type"] == "quantitative" and tips["share"]["format"] == ".1%"
    assert tips["share_of_type"]["format"] == ".1%"
    # the selection starts with the active cross-filter
    assert spec["params"][0]["name"] == charts.selection_name("defect")
    assert spec["params"][0]["value"] == [{"defect": "crack"}]
    assert spec["title"]["subtitle"] == "Line 1"
    # the aggregate, not the inspections: one row per (type, severity)
    rows = spec_rows(chart)
    assert len(rows) == len(data.defect_severity) == 7
    assert sum(r["count"] for r in rows) == 8
    assert not any("inspection_id" in r or "file_name" in r for r in rows)
    crack = {r["severity"]: r for r in rows if r["defect"] == "crack"}
    assert crack["high"]["count"] == 2 and crack["high"]["share_of_type"] == pytest.approx(0.5)


def test_severity_colours_agree_on_every_severity_chart(data):
    bars = charts.color_scale_of(charts.defect_severity_bars(data.defect_severity))
    ratio_chart = charts.severity_ratio(data.by_severity)
    ratio = charts.color_scale_of(ratio_chart)
    assert bars == ratio == SEVERITY_EXPECTED
    spec = ratio_chart.to_dict()
    bars_layer, labels_layer = spec["layer"]
    assert bars_layer["mark"]["type"] == "bar" and labels_layer["mark"]["type"] == "text"
    x = bars_layer["encoding"]["x"]
    assert x["field"] == "count" and x["axis"]["tickMinStep"] == 1  # counts never step by 0.5
    assert bars_layer["encoding"]["color"]["scale"]["domain"] == ["low", "medium", "high"]
    tips = tooltip_fields(bars_layer["encoding"])
    assert set(tips) == {"severity", "count", "share"} and tips["share"]["format"] == ".1%"
    assert {r["severity"]: r["count"] for r in spec_rows(ratio_chart)} == {"low": 3, "medium": 2, "high": 3}
    # The values and percentages are written on the chart (so also in its PNG), not only in tooltips.
    assert {r["severity"]: r["label"] for r in spec_rows(ratio_chart)} == {
        "low": "3  (37.5%)",
        "medium": "2  (25.0%)",
        "high": "3  (37.5%)",
    }
    # one severity only: still its own colour, not the first colour of a default scheme
    only_high = charts.severity_ratio(data.by_severity[data.by_severity["severity"] == "high"])
    assert charts.color_scale_of(only_high) == {"high": "#4d1f86"}


def test_action_ratio_uses_action_colours(data):
    chart = charts.action_ratio(data.by_action, selected=["Reject"])
    colours = charts.color_scale_of(chart)
    assert colours == {a: palette.ACTION_COLORS[a] for a in ("Pass", "Hold", "Rework", "Reject", "Review")}
    spec = chart.to_dict()
    assert spec["layer"][0]["encoding"]["color"]["scale"]["domain"] == ["Pass", "Hold", "Rework", "Reject", "Review"]
    assert spec["params"][0]["value"] == [{"action": "Reject"}]
    assert {r["action"]: r["count"] for r in spec_rows(chart)} == {
        "Pass": 4,
        "Hold": 3,
        "Rework": 1,
        "Reject": 3,
        "Review": 1,
    }
    assert set(tooltip_fields(spec["layer"][0]["encoding"])) == {"action", "count", "share"}


def test_location_bars(data):
    chart = charts.location_bars(data.by_location)
    enc = chart.to_dict()["encoding"]
    assert (enc["x"]["field"], enc["y"]["field"]) == ("location", "count")
    assert enc["x"]["sort"] == ["edge", "top", "center"]  # 3, 3, 2 (ties by name)
    assert set(tooltip_fields(enc)) == {"location", "count", "share"}
    assert {r["location"]: r["count"] for r in spec_rows(chart)} == {"edge": 3, "top": 3, "center": 2}


def test_daily_trend_layers(data):
    chart = charts.daily_trend(data.daily, time_zone="Europe/Berlin")
    spec = chart.to_dict()
    bars, line, points = spec["layer"]
    assert bars["mark"]["type"] == "bar" and line["mark"]["type"] == "line"
    assert bars["encoding"]["x"]["field"] == "day" and bars["encoding"]["x"]["timeUnit"] == "utcyearmonthdate"
    assert bars["encoding"]["x"]["title"] == "Day (Europe/Berlin)"
    assert bars["encoding"]["y"]["field"] == "inspected"
    assert line["encoding"]["y"]["field"] == "defect_rate"
    assert spec["resolve"]["scale"]["y"] == "independent"
    assert set(tooltip_fields(points["encoding"])) == {"day", "inspected", "defects", "defect_rate"}
    assert tooltip_fields(points["encoding"])["defect_rate"]["format"] == ".1%"
    rows = spec_rows(chart)
    assert len(rows) == 7  # one row per day, not per inspection
    by_day = {r["day"]: (r["inspected"], r["defects"]) for r in rows}
    assert by_day["2026-03-20"] == (3, 3) and by_day["2026-03-16"] == (3, 2) and by_day["2026-03-14"] == (0, 0)


def test_selection_helpers():
    assert charts.selection_name("severity") == "pick_severity"
    assert charts.selection_values(None, "defect") == []
    picked = [{"severity": "high"}, {"severity": "high"}, {"severity": "low"}, {"other": "x"}]
    assert charts.selection_values(picked, "severity") == ["high", "low"]


def test_empty_frames_give_a_message_chart(tmp_path):
    empty = dashboard_data(Store(tmp_path / "home"), period=Period("7d"), today=TODAY)
    assert empty.empty
    for section in dashboard.sections(empty):
        spec = section.chart.to_dict()
        assert spec["mark"]["type"] == "text", section.key
        assert spec_rows(section.chart)[0]["message"].startswith("No ")


# --- PNG and report -------------------------------------------------------------------------------------
def test_chart_png_is_a_png_at_the_requested_scale(data):
    chart = charts.location_bars(data.by_location)
    one = exports.chart_png(chart, scale=1)
    two = exports.chart_png(chart, scale=2)
    for png in (one, two):
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG"
        assert exports.png_size(png) == image.size
    (w1, h1), (w2, h2) = exports.png_size(one), exports.png_size(two)
    assert w1 >= charts.WIDTH and h1 >= charts.HEIGHT  # the plot plus its title and axes
    assert w2 == pytest.approx(2 * w1, abs=2) and h2 == pytest.approx(2 * h1, abs=2)
    with pytest.raises(ValueError):
        exports.png_size(b"GIF89a" + bytes(30))


def test_section_png(data):
    png = exports.section_png(data, "defect_severity")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    width, height = image.size
    assert exports.png_size(png) == (width, height)
    assert width >= exports.PNG_SCALE * charts.WIDTH and height >= exports.PNG_SCALE * 180
    with pytest.raises(KeyError):
        exports.section_png(data, "no_such_chart")


def test_report_zip(data):
    blob = exports.report_zip(data, generated_at=datetime(2026, 3, 20, 17, 0, tzinfo=UTC))
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        assert archive.testzip() is None
        names = set(archive.namelist())
        assert names == {"report.html", "filters.txt"} | {f"{k}.png" for k in KEYS} | {f"{k}.csv" for k in KEYS}
        for key in KEYS:
            assert Image.open(io.BytesIO(archive.read(f"{key}.png"))).format == "PNG"
        csv = pd.read_csv(io.BytesIO(archive.read("action_ratio.csv")), encoding="utf-8-sig")
        assert dict(zip(csv["action"], csv["count"], strict=True)) == dict(
            zip(data.by_action["action"], data.by_action["count"], strict=True)
        )
        daily = pd.read_csv(io.BytesIO(archive.read("daily_trend.csv")), encoding="utf-8-sig")
        assert len(daily) == 7 and daily["inspected"].sum() == 12
        text = archive.read("filters.txt").decode("utf-8")
        html = archive.read("report.html").decode("utf-8")
    for content in (text, html):
        assert "Last 7 days: 14 Mar 2026 – 20 Mar 2026 (days in UTC)" in content
        assert "Models: magnetic-tile" in content and "Stations: all" in content
    assert "Generated: 2026-03-20 17:00 UTC" in text
    assert "Inspected: 12" in text


def test_report_names_cross_filters(store):
    f = InspectionFilter().with_labels("severity", ["high"])
    data = dashboard_data(store, f, Period("7d"), today=TODAY)
    assert data.kpis.inspected == 3
    sections = {s.key: s for s in dashboard.sections(data)}
    assert charts.color_scale_of(sections["severity_ratio"].chart) == SEVERITY_EXPECTED  # own chart: all bars
    assert sections["severity_ratio"].chart.to_dict()["params"][0]["value"] == [{"severity": "high"}]
    assert "Severity: high" in data.describe()
    assert "severity = high" in data.subtitle()


def test_single_day_single_class_builds_every_chart(tmp_path):
    store = Store(tmp_path / "home")
    insert(store, [(datetime(2026, 3, 20, 9), "crack", "high", "top", "Reject", False)])
    data = dashboard_data(store, period=Period("custom", TODAY, TODAY), today=TODAY)
    built = dashboard.sections(data, subtitle=data.subtitle())
    assert [s.key for s in built] == KEYS
    for section in built:
        marks = mark_types(section.chart.to_dict())
        assert marks and marks != ["text"], (section.key, marks)  # real charts, not the "no data" message
    assert charts.color_scale_of(built[0].chart) == {"high": "#4d1f86"}
    png = exports.chart_png(built[1].chart)
    assert Image.open(io.BytesIO(png)).format == "PNG"


def test_stations_compared_on_defect_rate_and_action_mix(data):
    chart = charts.group_comparison(data.by_station, by="station")
    spec = chart.to_dict()
    rate, mix = spec["hconcat"]
    assert mark_types(rate) == ["bar", "text", "text"] and mark_types(mix) == ["bar", "text"]
    assert rate["layer"][0]["encoding"]["x"]["field"] == "defect_rate"
    assert mix["layer"][0]["encoding"]["x"]["stack"] == "normalize"
    labels = {r["group"]: r["label"] for r in spec_rows(chart) if "label" in r and "of" in str(r["label"])}
    first = data.by_station.iloc[0]
    assert labels[first["group"]] == f"{first['defect_rate']:.1%} of {int(first['inspected'])}"
    assert charts.group_comparison(data.by_station.iloc[0:0]).to_dict()["mark"]["type"] == "text"  # says "none"
