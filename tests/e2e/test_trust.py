"""What a QC lead must be able to trust, in a real browser over a real store with the network blocked:

- ticks belong to images: tick rows, change a filter, act -> only the intended images change;
- "Clear filters" empties every widget, and the next unrelated click keeps them empty;
- three photos marked "not a part" leave the Dashboard's numbers and appear in their own count;
- the lot report downloads as a PDF that names the batch, the station and every rejected file;
- no request leaves the machine on any page (every non-local request is blocked and recorded).

The store is seeded once with the real model: two batches (Line 1 / Ana: magnetic tiles; Line 2 / Bo: tiles and
three solar-cell photos from elpv, which are not our part at all).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from visionqc import config
from visionqc.filters import InspectionFilter
from visionqc.intake.uploads import UploadFile
from visionqc.model.predict import Predictor
from visionqc.store import Store
from visionqc.store.ingest import run_batch

pytestmark = pytest.mark.slow
HEADER_PX = 35
ROW_PX = 35  # visionqc.ui.tables.ROW_HEIGHT
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1", "http://localhost", "ws://localhost", "data:", "blob:")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, tile_photos, default_model_dir, app_server_at):
    elpv = config.SHARED_DATA / "elpv" / "images"
    if not elpv.is_dir():
        pytest.skip(f"real images not available: {elpv} is absent (CI provides ../shared/data)")
    foreign = sorted(elpv.glob("*.png"))[:3]
    home = tmp_path_factory.mktemp("trust") / "visionqc-data"
    store = Store(home)
    predictor = Predictor(default_model_dir)
    tiles = tile_photos(14, offset=90)
    line1 = run_batch(
        store, predictor, [UploadFile(p.name, p.read_bytes()) for p in tiles[:8]], station="Line 1", operator="Ana"
    )
    uploads = [UploadFile(p.name, p.read_bytes()) for p in tiles[8:]]
    uploads += [UploadFile(f"not-our-part-{i}.png", p.read_bytes()) for i, p in enumerate(foreign)]
    line2 = run_batch(store, predictor, uploads, station="Line 2", operator="Bo")
    with app_server_at(home) as server:
        yield server, store, line1.batch_id, line2.batch_id


@pytest.fixture
def offline(page):
    """Block every request that would leave the machine; the list says what was attempted."""
    attempted: list[str] = []

    def route(r):
        if r.request.url.startswith(LOCAL):
            r.continue_()
        else:
            attempted.append(r.request.url)
            r.abort()

    page.context.route("**/*", route)
    return attempted


def _grid(page, text: str):
    grid = page.locator("[data-testid='stDataFrame']").filter(has_text=text).last
    grid.scroll_into_view_if_needed()
    grid.locator("td").first.wait_for(state="attached")
    return grid


def _grid_click(page, grid, row: int, x: float = 15) -> None:
    """Click row ``row`` of a table: ``x=15`` is the tick box; further right is a cell."""
    box = grid.locator("canvas").first.bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + HEADER_PX + ROW_PX * row + ROW_PX / 2)


def _files_in_order(grid) -> list[str]:
    return [c.strip() for c in grid.locator("td").all_text_contents() if re.search(r"\.(jpg|png)$", c.strip())]


def _matches(page) -> int:
    text = page.inner_text("[data-testid='stMain']")
    return int(re.search(r"([\d,]+) inspections? match", text).group(1).replace(",", ""))


def _pick(page, label: str, option: str) -> None:
    box = page.get_by_role("combobox", name=label, exact=True)
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    page.keyboard.press("Escape")


def _go(page, server, wait_for_app, title: str) -> None:
    """Open a page the way a user does: the app, then its link in the sidebar."""
    if not page.url.startswith(server.url):
        page.goto(server.url)
        wait_for_app(page)
    page.get_by_role("link", name=title, exact=True).click()
    wait_for_app(page)


def _open_history(page, server, wait_for_app, reviewer: str | None = "Chris") -> None:
    _go(page, server, wait_for_app, "History")
    page.get_by_text("inspections match").wait_for()
    if reviewer:
        box = page.get_by_role("textbox", name="Your name (reviewer)")
        box.fill(reviewer)
        box.press("Enter")
        wait_for_app(page)


def _sort_by_file_name(page, wait_for_app) -> None:
    _pick(page, "Sort by", "File name")
    wait_for_app(page)
    page.get_by_role("radiogroup", name="Order").get_by_text("Ascending", exact=True).click()
    wait_for_app(page)


def test_ticks_stay_with_their_images_when_a_filter_changes(seeded, page, offline, wait_for_app, screenshot_dir):
    server, store, _, line2 = seeded
    _open_history(page, server, wait_for_app)
    _sort_by_file_name(page, wait_for_app)
    grid = _grid(page, ".jpg")
    first_two = _files_in_order(grid)[:2]
    _grid_click(page, grid, 0)
    _grid_click(page, grid, 1)
    wait_for_app(page)
    page.get_by_text(f"Selected — 2 images: {first_two[0]}, {first_two[1]}").wait_for()
    page.set_viewport_size({"width": 1400, "height": 2200})
    wait_for_app(page)
    page.screenshot(path=str(screenshot_dir / "visionqc-history-table.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})

    # A filter change: the rows at those positions are now other images, and the ticks must not follow them.
    _pick(page, "Stations", "Line 2")
    wait_for_app(page)
    page.get_by_text("these ticks were cleared").wait_for()
    assert "Selected —" not in page.inner_text("[data-testid='stMain']")
    grid = _grid(page, ".jpg")
    target = _files_in_order(grid)[1]
    _grid_click(page, grid, 1)
    wait_for_app(page)
    page.get_by_text(f"Selected — 1 image: {target}").wait_for()
    page.get_by_role("textbox", name="Add tags (comma-separated)").fill("checked")
    page.get_by_role("button", name="Add tags").click()
    wait_for_app(page)
    page.get_by_text("Tagged 1 inspection(s)").wait_for()
    tagged, _ = store.search(InspectionFilter(tags_all=("checked",)), page_size=0)
    assert list(tagged["file_name"]) == [target], "only the image ticked on the rows shown was tagged"
    assert list(tagged["batch_id"]) == [line2]
    assert not offline, offline


def test_clear_filters_empties_every_widget_for_good(seeded, page, offline, wait_for_app):
    server, _store, _, _ = seeded
    _open_history(page, server, wait_for_app, reviewer=None)
    total = _matches(page)
    name_box = page.get_by_role("textbox", name="File name contains")
    name_box.fill("no-such-file")
    name_box.press("Enter")
    wait_for_app(page)
    _pick(page, "Operators", "Bo")
    wait_for_app(page)
    assert _matches(page) == 0
    page.get_by_role("button", name="Clear filters").click()
    wait_for_app(page)
    assert _matches(page) == total
    assert name_box.input_value() == ""
    filters = page.locator("[data-testid='stExpander']").first
    assert filters.locator("[data-testid='stMultiSelect'] [role='button']").filter(has_text="Bo").count() == 0
    # The next unrelated click must not bring the old filters back.
    page.get_by_role("radiogroup", name="Order").get_by_text("Ascending", exact=True).click()
    wait_for_app(page)
    assert _matches(page) == total and name_box.input_value() == ""
    assert not offline, offline


def _kpi(page, label: str) -> int:
    metric = page.locator("[data-testid='stMetric']").filter(
        has=page.locator("[data-testid='stMetricLabel']", has_text=re.compile(rf"^{label}$"))
    )
    return int(metric.locator("[data-testid='stMetricValue']").inner_text().replace(",", ""))


def test_three_photos_marked_not_a_part_leave_the_dashboard(seeded, page, offline, wait_for_app, screenshot_dir):
    server, store, _, _ = seeded
    _go(page, server, wait_for_app, "Dashboard")
    inspected_before = _kpi(page, "Inspected")
    assert _kpi(page, "Unusable photos") == 0

    _open_history(page, server, wait_for_app)
    name_box = page.get_by_role("textbox", name="File name contains")
    name_box.fill("not-our-part")
    name_box.press("Enter")
    wait_for_app(page)
    assert _matches(page) == 3
    grid = _grid(page, "not-our-part")
    for row in range(3):
        _grid_click(page, grid, row)
    wait_for_app(page)
    page.get_by_text("Selected — 3 images").wait_for()
    page.get_by_role("button", name="Mark unusable").click()
    wait_for_app(page)
    page.get_by_text("Marked 3 photo(s) unusable (not our part)").wait_for()

    _go(page, server, wait_for_app, "Dashboard")
    assert _kpi(page, "Unusable photos") == 3
    assert _kpi(page, "Inspected") == inspected_before - 3
    page.set_viewport_size({"width": 1400, "height": 3000})
    wait_for_app(page)
    page.screenshot(path=str(screenshot_dir / "visionqc-dashboard.png"))
    marked, _ = store.search(InspectionFilter(unusable=True), page_size=0)
    assert sorted(marked["file_name"]) == [f"not-our-part-{i}.png" for i in range(3)]
    assert set(marked["reviewed_by"]) == {"Chris"}
    assert not offline, offline


def test_the_lot_report_downloads_and_names_the_batch_station_and_rejects(
    seeded, page, offline, wait_for_app, screenshot_dir
):
    from pypdf import PdfReader

    server, store, line1, _ = seeded
    _open_history(page, server, wait_for_app, reviewer=None)
    _pick(page, "Batches", next(o for o in _batch_options(page) if o.startswith(line1)))
    wait_for_app(page)
    page.get_by_role("radiogroup", name="View").get_by_text("Pictures").click()
    wait_for_app(page)
    page.set_viewport_size({"width": 1400, "height": 2400})
    wait_for_app(page)
    page.screenshot(path=str(screenshot_dir / "visionqc-history-pictures.png"))
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download lot report (PDF)").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".pdf")
    text = "".join(
        " ".join(p.extract_text() for p in PdfReader(io.BytesIO(Path(download.path()).read_bytes())).pages).split()
    )
    rejected, _ = store.search(InspectionFilter(batches=(line1,), actions=("Reject",)), page_size=0)
    assert len(rejected), "the seeded tiles include rejects"
    for expected in (line1, "Line1", "Ana", *rejected["file_name"]):
        assert expected.replace(" ", "") in text, expected
    assert not offline, offline


def _batch_options(page) -> list[str]:
    box = page.get_by_role("combobox", name="Batches", exact=True)
    box.click()
    options = [o.strip() for o in page.get_by_role("option").all_inner_texts()]
    page.keyboard.press("Escape")
    return options


def test_every_page_renders_with_the_network_blocked(seeded, page, offline, wait_for_app):
    server, *_ = seeded
    for title in ("Inspect", "History", "Dashboard", "Explore", "Review queue", "Models"):
        _go(page, server, wait_for_app, title)
        page.get_by_role("heading", name=title, exact=True).first.wait_for()
        assert not page.locator("[data-testid='stException']").count(), title
    assert not offline, f"requests tried to leave the machine: {offline}"
