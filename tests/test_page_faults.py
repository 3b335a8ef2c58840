"""No page shows a stack trace for a damaged database, a read-only folder or a full disk (AppTest through the
app's entry point, so the page boundary in ``streamlit_app.py`` is what is tested); History stays browsable
from a read-only folder; a batch stopped by a full disk goes on where it stopped when Inspect is pressed again
(on both backends: the batch's rows are in the store). The damaged and the read-only database are the DuckDB
file itself, so those run on DuckDB only."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from apptest import open_app
from faults import damage_a_block, digest, read_only_mount, truncate
from streamlit.testing.v1 import AppTest

from visionqc.intake.uploads import UploadFile
from visionqc.model.predict import Predictor
from visionqc.store import Store
from visionqc.store.ingest import run_batch
from visionqc.store.schema import DB_FILE
from visionqc.ui import upload

TIMEOUT = 180
STORE_PAGES = ["pages/1_Inspect.py", "pages/2_History.py", "pages/3_Dashboard.py", "pages/4_Explore.py"]
STORE_PAGES += ["pages/5_Review_queue.py"]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, default_model_dir, tile_photos) -> Path:
    home = tmp_path_factory.mktemp("page-faults") / "visionqc-data"
    photos = [UploadFile(p.name, p.read_bytes()) for p in tile_photos(10, offset=900)]
    run_batch(Store(home), Predictor(default_model_dir), photos, station="Line 1")
    return home


def run_page(page: str) -> AppTest:
    """``page`` run the way the app runs it: inside ``streamlit_app.py`` (its navigation and page boundary).

    The first run goes through the entry point: until a script calls ``st.navigation``, Streamlit runs a
    page of the legacy ``pages/`` folder on its own, without the entry point around it."""
    return open_app(page, timeout=TIMEOUT)


def messages(at: AppTest) -> str:
    return "\n".join(e.value for e in [*at.error, *at.info, *at.warning])


@pytest.mark.duckdb_only("a damaged DuckDB file")
@pytest.mark.parametrize("damage", ["truncated", "damaged block"])
def test_no_page_shows_a_stack_trace_for_a_damaged_database(seeded, private_home, damage):
    home = private_home(seeded)
    (truncate if damage == "truncated" else damage_a_block)(home)
    before = digest(home / DB_FILE)
    for page in STORE_PAGES:
        at = run_page(page)
        text = messages(at)
        assert f"The inspection database {home / DB_FILE} is damaged" in text, page
        assert "python -m visionqc restore" in text
    assert digest(home / DB_FILE) == before


@pytest.mark.duckdb_only("the DuckDB file in a read-only folder (opened read-only)")
def test_a_read_only_folder_can_be_browsed_and_inspecting_is_switched_off(seeded, tmp_path, monkeypatch):
    """A real read-only bind mount (chmod is not read-only for root)."""
    copy = tmp_path / "visionqc-data"
    shutil.copytree(seeded, copy)
    with read_only_mount(copy, tmp_path / "ro") as ro:
        monkeypatch.setenv("VISIONQC_HOME", str(ro))
        for page in STORE_PAGES[1:4]:
            at = run_page(page)
            assert "Browsing only" in messages(at), page
        history = run_page("pages/2_History.py")
        shown = next(df.value for df in history.dataframe if "inspection_id" in df.value.columns or len(df.value))
        assert len(shown) == 10
        inspect = run_page("pages/1_Inspect.py")
        inspect.file_uploader(key="inspect_files_0").set_value([("a.jpg", b"\xff\xd8\xff", "image/jpeg")]).run()
        assert inspect.button(key="inspect_run").disabled


@pytest.mark.usefixtures("backend")
def test_a_full_disk_on_inspect_is_a_message_and_the_batch_goes_on(
    visionqc_home, default_model_dir, tile_photos, monkeypatch
):
    import visionqc.store.images as images

    monkeypatch.setenv("VISIONQC_MODEL", str(default_model_dir))
    real_replace, calls = os.replace, []

    def disk_fills(src, dst):
        calls.append(dst)
        if len(calls) > 70:  # 35 photos: the first chunk of 32 is saved, the second fails
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))
        real_replace(src, dst)

    monkeypatch.setattr(images.os, "replace", disk_fills)
    photos = tile_photos(40, offset=950)
    at = run_page("pages/1_Inspect.py")
    at.file_uploader(key="inspect_files_0").set_value([(p.name, p.read_bytes(), "image/jpeg") for p in photos]).run()
    at.button(key="inspect_run").click().run()
    assert not at.exception
    text = messages(at)
    assert "The disk is full" in text and "Nothing was lost" in text
    assert "free at least" in text and "press **Inspect** again" in text
    assert upload.CURRENT_BATCH not in at.session_state
    store = Store(visionqc_home)
    (batch_id,) = store.list_batches()["batch_id"]
    saved = store.count()
    assert 0 < saved < len(photos)

    monkeypatch.setattr(images.os, "replace", real_replace)  # space was freed
    at.button(key="inspect_run").click().run()
    assert not at.exception
    assert at.session_state[upload.CURRENT_BATCH] == batch_id  # the same batch, continued
    assert store.batch(batch_id)["status"] == "complete"
    assert store.count() == len(photos) and store.batch_summary(batch_id)["duplicates"] == 0
