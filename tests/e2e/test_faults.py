"""Faults in a real browser: four QC leads press Inspect at the same moment with overlapping photos, and each
image is stored once; a damaged database gives every page a message, never a stack trace (the read-only
folder is checked page by page in tests/test_page_faults.py). Screenshots land in ``screenshot_dir``."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from faults import damage_a_block

from visionqc.intake.uploads import UploadFile
from visionqc.model.predict import Predictor
from visionqc.store import Store
from visionqc.store.ingest import run_batch, sha256_hex
from visionqc.ui.pages import page_specs

pytestmark = pytest.mark.slow

USERS = 4


def _payload(name: str, data: bytes) -> dict:
    return {"name": name, "mimeType": "image/jpeg", "buffer": data}


def _main_text(page) -> str:
    return page.inner_text("[data-testid='stMain']")


def test_four_leads_inspecting_overlapping_photos_at_once_store_each_image_once(
    tmp_path, browser, app_server_at, wait_for_app, screenshot_dir, tile_photos
):
    photos = [p.read_bytes() for p in tile_photos(25, offset=1000)]
    shared = photos[:5]
    uploads = [
        [_payload(f"lead{u}_shared_{i}.jpg", d) for i, d in enumerate(shared)]
        + [_payload(f"lead{u}_own_{i}.jpg", d) for i, d in enumerate(photos[5 + 5 * u : 10 + 5 * u])]
        for u in range(USERS)
    ]
    with app_server_at(tmp_path / "visionqc-data") as server:
        contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(USERS)]
        try:
            pages = [context.new_page() for context in contexts]
            for page, files in zip(pages, uploads, strict=True):
                page.set_default_timeout(60_000)
                page.goto(server.url)
                wait_for_app(page)
                page.locator("[data-testid='stFileUploader'] input[type=file]").first.set_input_files(files)
                page.get_by_role("button", name="Inspect 10 files").wait_for(state="visible")
                page.wait_for_function(
                    "() => [...document.querySelectorAll('button')]"
                    ".some(b => b.innerText.includes('Inspect 10 files') && !b.disabled)"
                )
            for page in pages:  # all four press Inspect at once
                page.get_by_role("button", name="Inspect 10 files").click()
            for page in pages:
                page.get_by_role("heading", name=re.compile(r"^Batch ")).wait_for(timeout=300_000)
                wait_for_app(page, timeout_ms=120_000)
                assert page.locator("[data-testid='stException']").count() == 0
            pages[-1].screenshot(path=str(screenshot_dir / "four-leads-last-batch.png"), full_page=True)
        finally:
            for context in contexts:
                context.close()
        store = Store(server.home)
        batches = store.list_batches()
        assert len(batches) == USERS and set(batches["status"]) == {"complete"}
        assert (batches["inspected"] + batches["duplicates"]).tolist() == [10] * USERS
        assert store.count() == 25  # 5 shared + 4 x 5 own: each image once
        assert batches["duplicates"].sum() == USERS * 10 - 25
        with store.connect() as con:
            per_image = con.execute(
                "SELECT max(n) FROM (SELECT count(*) AS n FROM inspections GROUP BY sha256)"
            ).fetchone()[0]
        assert per_image == 1
        held = store.earlier_inspections([sha256_hex(d) for d in shared])
        for batch_id in batches["batch_id"]:
            dups = store.batch_duplicates(batch_id)
            assert all(held[sha] == i for sha, i in zip(dups["sha256"], dups["earlier_inspection_id"], strict=True))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, default_model_dir, tile_photos) -> Path:
    home = tmp_path_factory.mktemp("e2e-faults") / "visionqc-data"
    photos = [UploadFile(p.name, p.read_bytes()) for p in tile_photos(12, offset=1100)]
    run_batch(Store(home), Predictor(default_model_dir), photos, station="Line 1", operator="Ana")
    return home


def _visit_every_page(server, page, wait_for_app) -> dict[str, str]:
    texts = {}
    page.goto(server.url)
    wait_for_app(page)
    for spec in page_specs():
        page.goto(f"{server.url}/{spec.url_path}")
        wait_for_app(page)
        assert page.locator("[data-testid='stException']").count() == 0, spec.title
        texts[spec.title] = _main_text(page)
        assert "Traceback" not in texts[spec.title]
    return texts


def test_a_damaged_database_is_a_message_on_every_page(
    seeded, tmp_path, page, app_server_at, wait_for_app, screenshot_dir
):
    home = tmp_path / "visionqc-data"
    shutil.copytree(seeded, home)
    damage_a_block(home)
    with app_server_at(home) as server:
        texts = _visit_every_page(server, page, wait_for_app)
        page.goto(f"{server.url}/history")
        wait_for_app(page)
        page.screenshot(path=str(screenshot_dir / "damaged-database-history.png"), full_page=True)
    for title in ("Inspect", "History", "Dashboard", "Explore", "Review queue"):
        assert "is damaged" in texts[title] and "python -m visionqc restore" in texts[title], title
