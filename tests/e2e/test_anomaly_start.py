"""Starting from good parts only, in a real browser: upload good tiles (and a broken file) on the Models page, train
an anomaly model as a job, promote it without labelled photos, inspect a mixed batch, and open a defective tile:
it is flagged "anomaly" and its heatmap (from the patch distances) is shown."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from visionqc.filters import InspectionFilter
from visionqc.store import Store

pytestmark = pytest.mark.slow
JOB_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory):
    """The app on an empty data folder, with no VISIONQC_MODEL: the registry chooses the model."""
    from tests.e2e.conftest import start_app_server

    home = tmp_path_factory.mktemp("anomaly-start") / "visionqc-data"
    with start_app_server(home, unset=("VISIONQC_MODEL",)) as server:
        yield server


def payload(path: Path) -> dict:
    return {"name": path.name, "mimeType": "image/jpeg", "buffer": path.read_bytes()}


def open_tab(page, wait_for_app, name: str):
    page.get_by_role("tab", name=re.compile(name)).click()
    wait_for_app(page)
    return page.locator("[role='tabpanel']:visible")


def test_good_photos_to_an_anomaly_model_that_flags_a_defective_tile(
    fresh_server, page, wait_for_app, screenshot_dir, magnetic_tile
):
    free = sorted((magnetic_tile / "images" / "free").glob("*.jpg"))
    good, unseen = free[::59][:14], free[30::59][:2]
    broken = sorted((magnetic_tile / "images" / "break").glob("*.jpg"))[:3]
    page.goto(fresh_server.url)
    wait_for_app(page)
    name = page.get_by_role("textbox", name="Your name (reviewer)")
    name.fill("Ana Lead")
    name.press("Enter")
    wait_for_app(page)
    page.get_by_role("link", name="Models").first.click()
    wait_for_app(page)

    # 1. Upload good photos (one file among them is not a photo) and train.
    panel = open_tab(page, wait_for_app, "Train")
    uploader = panel.locator("[data-testid='stFileUploader']").filter(has_text="Good photos")
    files = [payload(p) for p in good] + [{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"no photo"}]
    uploader.locator("input[type=file]").first.set_input_files(files)
    wait_for_app(page)
    panel.get_by_role("button", name="Train anomaly model").click()
    wait_for_app(page)
    message = page.get_by_text("anomaly model good-parts from 14 good photos").first
    message.wait_for()
    assert "notes.jpg: not an image" in page.inner_text("[data-testid='stMain']")
    wait_for_app(page)
    page.screenshot(path=str(screenshot_dir / "anomaly-job-submitted.png"), full_page=True)
    # The message above the tabs does not send the lead back to the first tab.
    assert page.get_by_role("tab", name=re.compile("Train")).get_attribute("aria-selected") == "true"
    panel = page.locator("[role='tabpanel']:visible")
    panel.get_by_text(re.compile(r"Stage \d of 6|Registered good-parts v1")).first.wait_for(timeout=60_000)
    store = Store(fresh_server.home)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (job := store.jobs().iloc[0])["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, "the anomaly job did not finish"
        time.sleep(0.5)
    assert job["status"] == "succeeded", job["error"]
    page.wait_for_timeout(3000)  # the job list's next refresh redraws the page once the job ends
    wait_for_app(page)
    open_tab(page, wait_for_app, "Train").get_by_text("Registered good-parts v1").wait_for()

    # 2. No labelled photos to compare on: promote it on its held-out numbers.
    panel = open_tab(page, wait_for_app, "Compare")
    panel.get_by_text("is an anomaly model (trained on good photos only)").wait_for()
    panel.get_by_role("button", name="Promote good-parts v1").click()
    wait_for_app(page)
    panel.get_by_role("button", name="Yes, promote").click()
    wait_for_app(page)
    page.get_by_text("good-parts v1 is now the active model").wait_for()

    # 3. Inspect a mixed batch: two good tiles never seen in training, three broken ones.
    page.get_by_role("link", name="Inspect").first.click()
    wait_for_app(page)
    page.locator("[data-testid='stFileUploader'] input[type=file]").first.set_input_files(
        [payload(p) for p in unseen + broken]
    )
    page.get_by_role("button", name="Inspect 5 files").click()
    page.get_by_role("heading", name=re.compile(r"^Batch ")).wait_for(timeout=120_000)
    wait_for_app(page)
    rows, _ = Store(fresh_server.home).search(InspectionFilter(), page_size=0)
    assert set(rows["model_name"]) == {"good-parts"} and rows["anomaly_score"].notna().all()
    flagged = rows[rows["defect"] == "anomaly"]["file_name"].tolist()
    assert len(set(flagged) & {p.name for p in broken}) >= 2, rows[["file_name", "defect", "anomaly_score"]]
    page.set_viewport_size({"width": 1400, "height": 1400})
    page.screenshot(path=str(screenshot_dir / "anomaly-inspect.png"), full_page=True)

    # 4. Open a flagged tile: the detail shows its anomaly score and the heatmap of where it is unusual.
    target = rows[rows["defect"] == "anomaly"].sort_values("anomaly_score")["file_name"].iloc[-1]
    grid = page.locator("[data-testid='stDataFrame']").filter(has_text=target).last
    grid.scroll_into_view_if_needed()
    body_rows = grid.locator("tbody tr")
    body_rows.first.wait_for(state="attached")
    row = next(i for i in range(body_rows.count()) if target in body_rows.nth(i).inner_text())
    box = grid.locator("canvas").first.bounding_box()
    page.mouse.click(box["x"] + 300, box["y"] + 35 + 35 * row + 17)
    detail = page.get_by_role("dialog")
    detail.get_by_text("Anomaly score", exact=False).first.wait_for(timeout=120_000)
    detail.get_by_text(re.compile("heatmap for “anomaly”")).first.wait_for(timeout=120_000)
    assert target in detail.inner_text()
    detail.locator("[data-testid='stImage'] img").first.wait_for()  # the photo with its heatmap overlay
    page.wait_for_timeout(1000)  # let the image and the probabilities table paint before the screenshot
    page.screenshot(path=str(screenshot_dir / "anomaly-detail-heatmap.png"))
