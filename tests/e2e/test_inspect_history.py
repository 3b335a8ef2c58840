"""The Inspect and History pages in a real browser: `streamlit run` + headless Chromium (Playwright, sync API).

Real magnetic-tile photos go through the real file input (files and a zip), a label is corrected, History is
filtered and its CSV downloaded; bad files (corrupt JPEG, text named .png, zip with ../ paths) are reported
while the rest of the batch is saved. Screenshots land in the test's tmp_path (see ``screenshot_dir``).
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path

import pytest

from visionqc.filters import InspectionFilter
from visionqc.store import Store

pytestmark = pytest.mark.slow


def _photos(magnetic_tile: Path, n: int, offset: int = 0) -> list[Path]:
    """``n`` real photos of different classes, deterministic."""
    classes = sorted(p for p in (magnetic_tile / "images").iterdir() if p.is_dir())
    picked = []
    for i in range(n):
        folder = classes[(i + offset) % len(classes)]
        files = sorted(folder.glob("*.jpg"))
        picked.append(files[(i + offset) // len(classes) % len(files)])
    return picked


def _payload(name: str, data: bytes, mime: str = "image/jpeg") -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _upload_and_inspect(page, wait_for_app, files: list[dict] | None, count: int | None = None) -> None:
    """Put ``files`` in the first uploader (``None``: already uploaded), then press "Inspect N files"."""
    if files is not None:
        page.locator("[data-testid='stFileUploader'] input[type=file]").first.set_input_files(files)
    label = f"Inspect {count or len(files)} files"
    button = page.get_by_role("button", name=label)
    button.wait_for(state="visible", timeout=60_000)
    page.wait_for_function(
        "name => [...document.querySelectorAll('button')].some(b => b.innerText.includes(name) && !b.disabled)",
        arg=label,
    )
    button.click()
    page.get_by_role("heading", name=re.compile(r"^Batch ")).wait_for(timeout=120_000)
    wait_for_app(page)


def _metric(page, label: str) -> int:
    metric = page.locator("[data-testid='stMetric']").filter(
        has=page.locator("[data-testid='stMetricLabel']", has_text=re.compile(rf"(^|\s){label}$"))
    )
    return int(metric.locator("[data-testid='stMetricValue']").inner_text().replace(",", ""))


def _grid_cells(grid) -> list[str]:
    # Glide data grid keeps an accessible copy of the cells it shows in the DOM (once scrolled into view).
    grid.scroll_into_view_if_needed()
    grid.locator("td").first.wait_for(state="attached")
    return [t.strip() for t in grid.locator("td").all_text_contents()]


def _click_row(page, grid, row: int, x: float = 15, row_height: int = 35, header: int = 35) -> None:
    """Click row ``row``: ``x=15`` is its tick box (History), further right any of its cells (opens it)."""
    box = grid.locator("canvas").first.bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + header + row_height * row + row_height / 2)


def _choose(page, label: str, option: str, scope=None) -> None:
    """Pick ``option`` in the selectbox labelled ``label`` (a react-aria combobox in Streamlit 1.67)."""
    box = (scope or page).get_by_role("combobox", name=label, exact=True)
    box.click()
    if box.get_attribute("aria-expanded") != "true":
        box.press("ArrowDown")  # a click near the window's bottom edge focuses the box without opening it
    page.get_by_role("option", name=option, exact=True).click()


def _tall(page, wait_for_app) -> None:
    # Streamlit scrolls inside its main container, so a full-page screenshot needs a tall window.
    page.set_viewport_size({"width": 1400, "height": 2600})
    wait_for_app(page)


def test_inspect_correct_then_filter_and_download_history(
    app_server, page, wait_for_app, screenshot_dir, magnetic_tile
):
    photos = _photos(magnetic_tile, 4)
    zipped = _photos(magnetic_tile, 2, offset=7)
    files = [_payload(p.name, p.read_bytes()) for p in photos]
    # The zip holds two new photos in a sub-folder and a copy of the first photo: a duplicate.
    archive = _zip({f"shift/{p.name}": p.read_bytes() for p in zipped} | {"again/copy.jpg": photos[0].read_bytes()})
    files.append(_payload("shift.zip", archive, "application/zip"))

    page.goto(app_server.url)
    wait_for_app(page)
    assert "Active model" in page.locator("[data-testid='stSidebar']").inner_text()
    _upload_and_inspect(page, wait_for_app, files)

    assert _metric(page, "Inspected") == 6
    assert _metric(page, "Duplicates") == 1
    assert _metric(page, "Failed") == 0
    assert sum(_metric(page, a) for a in ("Pass", "Hold", "Rework", "Reject", "Review")) == 6
    assert "inspected before" in page.inner_text("[data-testid='stMain']")

    grid = page.locator("[data-testid='stDataFrame']").filter(has_text=photos[1].name).last
    cells = _grid_cells(grid)
    for p in [*photos, *zipped]:
        assert any(p.name in c for c in cells), p.name
    headers = [h.strip() for h in grid.locator("th").all_text_contents()]
    for title in ("Image", "File", "Defect", "Conf.", "Severity", "Location", "Action", "Review", "Why look"):
        assert title in headers, headers

    # The reviewer's name is set once, in the sidebar.
    name = page.get_by_role("textbox", name="Your name (reviewer)")
    name.fill("Ana Lead")
    name.press("Enter")
    wait_for_app(page)
    _tall(page, wait_for_app)
    page.screenshot(path=str(screenshot_dir / "visionqc-inspect.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})
    # A click on any cell of the second row opens it beside the table; correct its defect type, save.
    grid = page.locator("[data-testid='stDataFrame']").filter(has_text=photos[1].name).last
    grid.scroll_into_view_if_needed()
    _click_row(page, grid, 1, x=300)
    panel = page.get_by_role("dialog")
    panel.get_by_text("Model predicted:").wait_for(timeout=120_000)
    form = panel.locator("[data-testid='stForm']")
    current = form.get_by_role("combobox", name="Defect").input_value()
    new_defect = "crack" if current != "crack" else "blowhole"
    _choose(page, "Defect", new_defect, scope=form)
    assert "Reviewing as Ana Lead" in form.inner_text()
    form.get_by_role("button", name="Save correction").click()
    panel.get_by_text("Saved:").wait_for()
    page.screenshot(path=str(screenshot_dir / "visionqc-inspect-detail.png"))
    page.keyboard.press("Escape")  # closing the panel redraws the page with the correction
    wait_for_app(page)
    assert not page.get_by_role("dialog").count()
    corrected, _ = Store(app_server.home).search(InspectionFilter(file_name=photos[1].name), page_size=0)
    assert list(corrected["reviewed_by"]) == ["Ana Lead"] and list(corrected["defect"]) == [new_defect]

    # History: filter by file name, then by "Reviewed", and download the CSV of the filtered set.
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.get_by_role("link", name="History").click()
    wait_for_app(page)
    page.get_by_text("inspections match").wait_for()
    assert "6 inspections match" in page.inner_text("[data-testid='stMain']")
    history_grid = page.locator("[data-testid='stDataFrame']").filter(has_text=photos[1].name).last
    _grid_cells(history_grid)
    _click_row(page, history_grid, 0)
    _click_row(page, history_grid, 2)
    wait_for_app(page)
    page.get_by_text("Selected — 2 images").wait_for()
    _tall(page, wait_for_app)
    page.screenshot(path=str(screenshot_dir / "visionqc-history-selected.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})
    name_box = page.get_by_role("textbox", name="File name contains")
    name_box.fill(photos[2].name)
    name_box.press("Enter")
    wait_for_app(page)
    assert "1 inspection matches" in page.inner_text("[data-testid='stMain']")
    name_box.fill("")
    name_box.press("Enter")
    wait_for_app(page)
    page.get_by_role("radiogroup", name="Reviewed").get_by_text("Yes", exact=True).click()
    wait_for_app(page)
    assert "1 inspection matches" in page.inner_text("[data-testid='stMain']")
    _tall(page, wait_for_app)
    page.screenshot(path=str(screenshot_dir / "visionqc-history.png"))

    with page.expect_download() as download_info:
        page.get_by_role("button", name=re.compile("Download all 1 matching")).click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    data = Path(download.path()).read_bytes()
    assert data.startswith(b"\xef\xbb\xbf"), "UTF-8 with BOM, so spreadsheet tools read it as UTF-8"
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert len(rows) == 1
    assert rows[0]["defect"] == new_defect
    assert rows[0]["reviewed_by"] == "Ana Lead"
    assert rows[0]["reviewed"].lower() == "true"
    assert rows[0]["pred_defect"] != new_defect, "the original prediction is kept beside the correction"


def test_bad_files_are_reported_and_the_rest_saved(app_server, page, wait_for_app, screenshot_dir, magnetic_tile):
    good, zipped_good = _photos(magnetic_tile, 2, offset=13)
    corrupt = good.read_bytes()[: len(good.read_bytes()) // 3]  # a JPEG cut off a third of the way through
    files = [
        _payload(good.name, good.read_bytes()),
        _payload("cut-off.jpg", corrupt),
        _payload("notes.png", b"shift notes: camera 2 lens cleaned\n", "image/png"),
        _payload(
            "evil.zip",
            _zip({"../../escape.jpg": good.read_bytes(), f"ok/{zipped_good.name}": zipped_good.read_bytes()}),
            "application/zip",
        ),
    ]
    page.goto(app_server.url)
    wait_for_app(page)
    _upload_and_inspect(page, wait_for_app, files)

    assert _metric(page, "Inspected") == 2
    assert _metric(page, "Failed") == 3
    main = page.inner_text("[data-testid='stMain']")
    assert "3 file(s) could not be inspected; the rest of the batch was saved." in main
    failures = _grid_cells(page.locator("[data-testid='stDataFrame']").filter(has_text="notes.png").first)
    text = " | ".join(failures)
    assert "cut-off.jpg" in text and "truncated" in text
    assert "notes.png" in text and "not an image" in text
    assert "escape.jpg" in text and "leaves the archive" in text
    _tall(page, wait_for_app)
    page.screenshot(path=str(screenshot_dir / "visionqc-inspect-bad-files.png"))


def test_a_folder_upload_is_inspected_with_its_sub_folders(
    app_server, page, wait_for_app, screenshot_dir, magnetic_tile, tmp_path
):
    folder = tmp_path / "line-3"
    (folder / "morning").mkdir(parents=True)
    chosen = _photos(magnetic_tile, 3, offset=19)
    for i, photo in enumerate(chosen):
        target = folder / ("morning" if i else "") / photo.name
        target.write_bytes(photo.read_bytes())
    (folder / "readme.txt").write_text("not a photo")

    page.goto(app_server.url)
    wait_for_app(page)
    page.screenshot(path=str(screenshot_dir / "visionqc-inspect-start.png"))
    page.get_by_role("tab", name=re.compile("A folder")).click()
    folder_input = page.locator("[data-testid='stFileUploader'] input[type=file]").nth(1)
    assert folder_input.get_attribute("webkitdirectory") is not None
    folder_input.set_input_files(folder)
    _upload_and_inspect(page, wait_for_app, None, count=4)

    assert _metric(page, "Inspected") == 3
    assert _metric(page, "Failed") == 1
    cells = " | ".join(_grid_cells(page.locator("[data-testid='stDataFrame']").filter(has_text="readme.txt").first))
    assert "not an image file type (.txt)" in cells
    results = _grid_cells(page.locator("[data-testid='stDataFrame']").filter(has_text=chosen[1].name).last)
    for photo in chosen:
        assert any(photo.name in c for c in results), photo.name
