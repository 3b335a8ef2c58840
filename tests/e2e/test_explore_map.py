"""Explore in a real browser: the map draws, hovering shows a thumbnail, dragging a box on the chart canvas
selects images, and tagging them writes tags to the store."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from visionqc.filters import InspectionFilter
from visionqc.intake.uploads import UploadFile
from visionqc.model.predict import Predictor
from visionqc.store import Store
from visionqc.store.ingest import run_batch

CHART = "[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg"


@pytest.fixture(scope="module")
def seeded_app(app_server, magnetic_tile, default_model_dir):
    files = []
    for cls in ("blowhole", "break", "crack", "fray", "free", "uneven"):
        files += sorted((magnetic_tile / "images" / cls).glob("*.jpg"))[:8]
    run_batch(Store(app_server.home), Predictor(default_model_dir), [UploadFile(p.name, p.read_bytes()) for p in files])
    return app_server


def _open_explore(page, server, wait_for_app):
    # A deep link to /explore on a fresh server shows "Page not found" first: open the main page, then click.
    page.goto(server.url)
    wait_for_app(page)
    page.get_by_role("link", name="Explore").click()
    wait_for_app(page)
    chart = page.locator(CHART).first
    chart.wait_for()
    page.wait_for_timeout(1000)  # Vega draws after the script finished
    return chart


def test_drag_a_box_selects_and_tags_images(seeded_app, page, wait_for_app, screenshot_dir):
    chart = _open_explore(page, seeded_app, wait_for_app)
    assert "48 inspections match" in page.inner_text("body")

    box = chart.bounding_box()
    # Find the dots in a picture of the chart (saturated pixels; grid lines and axes are grey) and hover one.
    shot = np.asarray(Image.open(io.BytesIO(chart.screenshot())).convert("RGB")).astype(int)
    saturation = shot.max(axis=2) - shot.min(axis=2)
    plot = saturation[:, : int(shot.shape[1] * 0.8)]  # leave the legend out
    ys, xs = np.nonzero(plot > 60)
    assert len(xs), "no coloured dots on the map"
    found = False
    scale_x, scale_y = box["width"] / shot.shape[1], box["height"] / shot.shape[0]
    for i in range(0, len(xs), max(1, len(xs) // 40)):
        page.mouse.move(box["x"] + xs[i] * scale_x, box["y"] + ys[i] * scale_y)
        page.wait_for_timeout(150)
        if page.locator("#vg-tooltip-element.visible img").count():
            found = True
            break
    assert found, "no tooltip with a thumbnail appeared"
    assert page.locator("#vg-tooltip-element.visible img").get_attribute("src").startswith("data:image/jpeg")

    # Drag a box over most of the plot area (the legend sits to the right of it).
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] - 5, steps=12)
    page.mouse.up()
    wait_for_app(page)
    heading = page.get_by_text(re.compile(r"^\d+ selected$"))
    heading.wait_for()
    selected = int(heading.inner_text().split()[0])
    assert 0 < selected <= 48
    page.screenshot(path=str(screenshot_dir / "vqc-explore-selected.png"), full_page=True)

    page.get_by_role("button", name=re.compile(r"Tag \d+ images")).click()
    wait_for_app(page)
    page.get_by_text(re.compile(r"Tagged \d+ images “retrain”")).wait_for()
    tagged = Store(seeded_app.home).count(InspectionFilter(tags_all=["retrain"]))
    assert tagged == selected
    assert "Traceback" not in page.inner_text("body")
