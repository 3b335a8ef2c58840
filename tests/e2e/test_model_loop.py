"""The whole model loop in a real browser: import a labelled archive of real tiles on the Models page, train a small
model (its progress still visible after a page reload: the job runs in its own process), compare it with the active
model, promote it (the sidebar and new inspections use it), roll back (the old one is back)."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest

from visionqc.registry import ModelRegistry
from visionqc.store import Store

pytestmark = pytest.mark.slow
JOB_TIMEOUT_MS = 600_000


@pytest.fixture(scope="module")
def loop_server(tmp_path_factory):
    """The app on an empty data folder, with no VISIONQC_MODEL: the registry chooses the model."""
    from tests.e2e.conftest import start_app_server

    home = tmp_path_factory.mktemp("loop") / "visionqc-data"
    with start_app_server(home, unset=("VISIONQC_MODEL",)) as server:
        yield server


def archive_of_tiles(magnetic_tile: Path, per_class: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for class_dir in sorted(p for p in (magnetic_tile / "images").iterdir() if p.is_dir()):
            for image in sorted(class_dir.glob("*.jpg"))[:per_class]:
                archive.write(image, f"door-panels/{class_dir.name}/{image.name}")
    return buffer.getvalue()


def open_tab(page, wait_for_app, name: str):
    page.get_by_role("tab", name=re.compile(name)).click()
    wait_for_app(page)
    return page.locator("[role='tabpanel']:visible")


def sidebar(page) -> str:
    return page.locator("[data-testid='stSidebar']").inner_text()


def type_into(page, wait_for_app, panel, label: str, text: str) -> None:
    box = panel.get_by_role("textbox", name=label)
    box.fill(text)
    box.press("Enter")
    wait_for_app(page)


def confirm(page, wait_for_app, panel, button: str, yes: str) -> None:
    panel.get_by_role("button", name=button).click()
    wait_for_app(page)
    panel.get_by_role("button", name=yes).click()
    wait_for_app(page)


def test_import_train_reload_compare_promote_inspect_rollback(
    loop_server, page, wait_for_app, screenshot_dir, magnetic_tile
):
    home = loop_server.home
    page.goto(loop_server.url)  # then follow the link: a deep link to a page opens with a "not found" notice
    wait_for_app(page)
    page.get_by_role("link", name="Models").first.click()
    wait_for_app(page)
    assert "magnetic-tile · version 2" in sidebar(page)

    # 1. Import a labelled archive (8 real photos of each of the six classes).
    panel = open_tab(page, wait_for_app, "Datasets")
    importer = panel.locator("[data-testid='stExpander']").filter(has_text="Import a labelled archive")
    importer.get_by_text("Import a labelled archive").click()
    importer.locator("input[type=file]").first.set_input_files(
        [{"name": "door-panels.zip", "mimeType": "application/zip", "buffer": archive_of_tiles(magnetic_tile, 8)}]
    )
    wait_for_app(page)
    type_into(page, wait_for_app, page.locator("[data-testid='stSidebar']"), "Your name (reviewer)", "Ana Lead")
    importer.get_by_role("button", name="Import", exact=True).click()
    wait_for_app(page)
    page.get_by_text("door-panels@1").first.wait_for()
    assert "48 images" in page.inner_text("[data-testid='stMain']")

    # 2. Train with small settings.
    panel = open_tab(page, wait_for_app, "Train")
    panel.get_by_text("1 (fastest)").click()
    wait_for_app(page)
    panel.get_by_text("Fine-tune the last blocks").click()
    wait_for_app(page)
    type_into(page, wait_for_app, page.locator("[data-testid='stSidebar']"), "Your name (reviewer)", "Ana Lead")
    panel.get_by_role("button", name="Start training").click()
    wait_for_app(page)
    page.get_by_text("Training job").first.wait_for()

    # 3. Reload the browser: the job goes on in its own process and its progress is still shown.
    page.reload()
    wait_for_app(page)
    panel = open_tab(page, wait_for_app, "Train")
    panel.get_by_text(re.compile(r"Stage \d of \d|Queued")).first.wait_for(timeout=120_000)
    page.screenshot(path=str(screenshot_dir / "models-train-progress.png"), full_page=True)
    page.get_by_text("Registered door-panels v1").wait_for(timeout=JOB_TIMEOUT_MS)
    wait_for_app(page)
    trained = ModelRegistry(home).get("door-panels", "1").path
    assert (trained / "model.onnx").is_file()  # the job exported the fast runtime, as train does

    # 4. Compare with the active model on the new model's own test images, then promote.
    panel = open_tab(page, wait_for_app, "Compare")
    panel.get_by_role("button", name="Compare", exact=True).click()
    wait_for_app(page, timeout_ms=180_000)
    panel.get_by_text("Side by side").wait_for()
    assert "Where they disagree" in panel.inner_text()
    page.set_viewport_size({"width": 1400, "height": 2200})
    page.screenshot(path=str(screenshot_dir / "models-compare.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})
    type_into(page, wait_for_app, page.locator("[data-testid='stSidebar']"), "Your name (reviewer)", "Ana Lead")
    confirm(page, wait_for_app, panel, "Promote door-panels v1", "Yes, promote")
    page.get_by_text("door-panels v1 is now the active model").wait_for()
    assert "door-panels · version 1" in sidebar(page)

    # 5. New inspections use the promoted model.
    page.get_by_role("link", name="Inspect").first.click()
    wait_for_app(page)
    photo = sorted((magnetic_tile / "images" / "crack").glob("*.jpg"))[20]
    page.locator("[data-testid='stFileUploader'] input[type=file]").first.set_input_files(
        [{"name": photo.name, "mimeType": "image/jpeg", "buffer": photo.read_bytes()}]
    )
    page.get_by_role("button", name="Inspect 1 file").click()
    page.get_by_role("heading", name=re.compile(r"^Batch ")).wait_for(timeout=120_000)
    wait_for_app(page)
    [batch] = Store(home).list_batches().itertuples()
    assert (batch.model_name, batch.model_version) == ("door-panels", "1")

    # 6. Roll back: the shipped model is active again, for the sidebar and the next inspection.
    page.get_by_role("link", name="Models").first.click()
    wait_for_app(page)
    panel = open_tab(page, wait_for_app, "Versions")
    type_into(page, wait_for_app, page.locator("[data-testid='stSidebar']"), "Your name (reviewer)", "Ben Lead")
    confirm(page, wait_for_app, panel, "Roll back to magnetic-tile v2", "Yes, roll back")
    page.get_by_text("magnetic-tile v2 is now the active model").wait_for()
    assert "magnetic-tile · version 2" in sidebar(page)
    page.screenshot(path=str(screenshot_dir / "models-versions.png"), full_page=True)
    trail = ModelRegistry(home).activations()
    assert [(e["action"], e["by"]) for e in trail] == [
        ("rollback", "Ben Lead"),
        ("promote", "Ana Lead"),
        ("first start", "VisionQC"),
    ]
