"""The Dashboard in a real browser: seeded data renders, a screenshot is taken, and a chart's PNG downloads."""

from __future__ import annotations

import struct

import pytest
from records import seed_inspections


def _seed(home, rows: int) -> None:
    seed_inspections(home, rows, days=60)


@pytest.fixture(scope="module")
def seeded_app(app_server):
    _seed(app_server.home, 3_000)
    return app_server


def test_dashboard_renders_and_downloads_png(seeded_app, page, wait_for_app, screenshot_dir, tmp_path):
    # Open the app's main page first: the page list exists only after the first run, and a deep link to
    # /dashboard on a fresh server shows "Page not found" before it switches.
    page.set_viewport_size({"width": 1400, "height": 2400})
    page.goto(seeded_app.url)
    wait_for_app(page)
    page.get_by_role("link", name="Dashboard").click()
    wait_for_app(page)
    page.get_by_text("Defect rate", exact=True).first.wait_for()
    # Charts are drawn by Vega in the browser after the script finished.
    page.locator("[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg").first.wait_for()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(screenshot_dir / "vqc-dashboard.png"), full_page=True)

    body = page.inner_text("body")
    for text in ("Inspected", "Top defect", "Review backlog", "Last 30 days", "Defect types by severity"):
        assert text in body
    assert "Traceback" not in body

    with page.expect_download() as download_info:
        page.locator("[data-testid='stDownloadButton'] button", has_text="PNG").first.click()
    target = tmp_path / "chart.png"
    download_info.value.save_as(target)
    png = target.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 800 and height > 400  # print resolution: twice the on-screen size
