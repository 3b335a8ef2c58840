"""The Inspect page through Streamlit's AppTest: real photos and zips through the real file uploader, the shipped
model, a real store in a temporary VISIONQC_HOME: the DuckDB file, and (``BOTH_BACKENDS``: every test that
writes or reads rows) a new PostgreSQL schema."""

from __future__ import annotations

import csv
import io
import zipfile

import pandas as pd
import pytest
from apptest import APP, as_reviewer, open_app, shared_store
from pypdf import PdfReader
from streamlit.testing.v1 import AppTest

from visionqc.actions import ACTIONS
from visionqc.filters import InspectionFilter
from visionqc.model.card import read_card
from visionqc.reporting.lot_report import lot_report_data, lot_report_pdf
from visionqc.store import Store
from visionqc.ui import pages, upload

TIMEOUT = 180
DETAIL = f"{upload.RESULTS_TABLE}_detail"  # the side panel's widget keys start with this and the inspection id
BOTH_BACKENDS = pytest.mark.usefixtures("backend")  # a new, empty store: the DuckDB file, then PostgreSQL


def make_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def app(visionqc_home, default_model_dir, monkeypatch) -> AppTest:
    monkeypatch.setenv("VISIONQC_MODEL", str(default_model_dir))
    return open_app(timeout=TIMEOUT)


def inspect(at: AppTest, files: list[tuple[str, bytes, str]]) -> str:
    at.file_uploader(key="inspect_files_0").set_value(files)
    at.run()
    button = at.button(key="inspect_run")
    assert button.label == f"Inspect {len(files)} file{'s' if len(files) != 1 else ''}"
    assert not button.disabled
    button.click().run()
    assert not at.exception, at.exception
    return at.session_state[upload.CURRENT_BATCH]


def table_with(at: AppTest, column: str):
    """The first table on the page that has ``column`` (read-only tables carry no key in AppTest)."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


def results_table(at: AppTest):
    """The results table; its key carries the ids it shows (a selection never moves to other images)."""
    return at.dataframe(key=at.session_state[f"{upload.RESULTS_TABLE}_key"])


def click_row(at: AppTest, position: int, column: str = "File") -> None:
    """Click a cell of the results table's row ``position`` (any cell opens the inspection in a side panel)."""
    at.session_state[at.session_state[f"{upload.RESULTS_TABLE}_key"]] = {
        "selection": {"rows": [], "columns": [], "cells": [[position, column]]}
    }
    at.run()


def metric(at: AppTest, label: str) -> int:
    [value] = [m.value for m in at.metric if m.label.split("] ")[-1] == label]
    return int(value.replace(",", ""))


@BOTH_BACKENDS
def test_sidebar_shows_the_active_model_and_data_folder(app, visionqc_home):
    sidebar = " ".join(m.value for m in [*app.sidebar.markdown, *app.sidebar.caption]).replace("\\", "")  # unescaped
    assert "magnetic-tile" in sidebar
    assert "blowhole" in sidebar and "free" in sidebar  # classes of the defect task
    assert str(visionqc_home) in sidebar


def test_every_page_file_is_registered_in_name_order(tmp_path):
    for name in ("2_History.py", "10_Last_one.py", "1_Inspect.py", "5_Review_queue.py", "_private.py"):
        (tmp_path / name).write_text("import streamlit as st\n")
    specs = pages.page_specs(tmp_path)
    assert [s.title for s in specs] == ["Inspect", "History", "Review queue", "Last one"]
    assert [s.url_path for s in specs] == ["inspect", "history", "review-queue", "last-one"]
    assert [s.title for s in pages.page_specs()][:2] == ["Inspect", "History"]


@BOTH_BACKENDS
def test_files_and_a_zip_are_inspected_once_with_duplicates_reported(app, tile_photos, visionqc_home):
    singles = tile_photos(4)
    zipped = tile_photos(2, offset=7)
    archive = make_zip({f"shift/{p.name}": p.read_bytes() for p in zipped} | {"copy.jpg": singles[0].read_bytes()})
    files = [(p.name, p.read_bytes(), "image/jpeg") for p in singles] + [("shift.zip", archive, "application/zip")]
    batch_id = inspect(app, files)

    assert metric(app, "Inspected") == 6
    assert metric(app, "Duplicates") == 1
    assert metric(app, "Failed") == 0
    assert sum(metric(app, a) for a in ("Pass", "Hold", "Rework", "Reject", "Review")) == 6
    assert any("inspected before" in w.value for w in app.warning)
    duplicates = table_with(app, "Inspected earlier as")
    assert list(duplicates["File"]) == ["shift.zip/copy.jpg"]
    assert list(duplicates["Inspected earlier as"]) == [singles[0].name]

    table = results_table(app).value
    expected_names = [p.name for p in singles] + [f"shift.zip/shift/{p.name}" for p in zipped]
    assert sorted(table["File"]) == sorted(expected_names)
    assert all(url.startswith("data:image/jpeg;base64,") for url in table["Image"])
    assert table["Defect %"].between(0, 100).all()
    assert all(len(a) == 1 and a[0] in ACTIONS for a in table["Action"])
    for label in ("Defect", "Severity", "Location", "Action", "Status"):
        assert label in table.columns
    assert all(list(s) in ([], ["Needs review"]) for s in table["Status"]), "nothing is reviewed yet"

    # Reruns (any widget change) never classify or save the batch again.
    app.text_input(key="inspect_note").set_value("after the run").run()
    app.run()
    assert app.button(key="inspect_run").disabled
    store = Store(visionqc_home)
    assert len(store.list_batches()) == 1
    assert store.count() == 6
    assert app.session_state[upload.CURRENT_BATCH] == batch_id


@BOTH_BACKENDS
def test_batch_fields_are_saved_and_the_csv_has_every_row(app, tile_photos, visionqc_home):
    # The station and operator pick-lists fill from use: an earlier batch recorded these two.
    Store(visionqc_home).create_batch(
        station="Line 2 – Kamera A", operator="Zoë", note=None, source="cli", model_name=None, model_version=None
    )
    app.run()
    assert "Line 2 – Kamera A" in app.selectbox(key="inspect_station").options
    app.selectbox(key="inspect_station").set_value("Line 2 – Kamera A")
    if shared_store():  # the signed-in user is the operator: there is no pick-list to choose another
        operator = "Ana"
        assert not [s for s in app.selectbox if s.key == "inspect_operator"]
    else:
        operator = "Zoë"
        app.selectbox(key="inspect_operator").set_value(operator)
    app.text_input(key="inspect_lot").set_value("L-0042")
    app.text_input(key="inspect_note").set_value("night shift")
    batch_id = inspect(app, [(p.name, p.read_bytes(), "image/jpeg") for p in tile_photos(3, offset=20)])
    store = Store(visionqc_home)
    batch = store.batch(batch_id)
    assert (batch["station"], batch["operator"], batch["note"]) == ("Line 2 – Kamera A", operator, "night shift")
    assert batch["lot"] == "L-0042"
    assert any("Line 2 – Kamera A" in c.value for c in app.caption)

    button = [b for b in app.get("download_button") if b.label == "Download this batch as CSV"]
    assert button, "the batch CSV download is offered"
    data = store.batch_csv(batch_id)  # what the button's deferred callable returns
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert sorted(r["file_name"] for r in rows) == sorted(results_table(app).value["File"])
    assert {r["batch_id"] for r in rows} == {batch_id}

    assert [b for b in app.get("download_button") if b.label == "Download lot report (PDF)"]
    # What that button's deferred callable returns (it failed on PostgreSQL: a DuckDB-only aggregate).
    report = PdfReader(io.BytesIO(lot_report_pdf(lot_report_data(store, InspectionFilter(batches=(batch_id,))))))
    text = " ".join(page.extract_text() for page in report.pages)
    assert f"batch {batch_id}" in text and "Line 2 – Kamera A" in text and operator in text


@BOTH_BACKENDS
def test_bad_files_are_listed_with_reasons_and_the_rest_saved(app, tile_photos, visionqc_home):
    good, in_zip = tile_photos(2, offset=30)
    data = good.read_bytes()
    files = [
        (good.name, data, "image/jpeg"),
        ("cut-off.jpg", data[: len(data) // 3], "image/jpeg"),
        ("notes.png", b"shift notes, not a picture\n", "image/png"),
        ("evil.zip", make_zip({"../../escape.jpg": data, f"ok/{in_zip.name}": in_zip.read_bytes()}), "application/zip"),
    ]
    batch_id = inspect(app, files)
    assert metric(app, "Inspected") == 2
    assert metric(app, "Failed") == 3
    assert any("3 file(s) could not be inspected" in e.value for e in app.error)
    failures = table_with(app, "Reason")
    reasons = dict(zip(failures["File"], failures["Reason"], strict=True))
    assert "truncated" in reasons["cut-off.jpg"]
    assert "not an image" in reasons["notes.png"]
    assert "leaves the archive" in reasons["evil.zip/../../escape.jpg"]
    stored = Store(visionqc_home).batch_failures(batch_id)
    assert sorted(stored["file_name"]) == sorted(reasons)
    assert sorted(results_table(app).value["File"]) == sorted([good.name, f"evil.zip/ok/{in_zip.name}"])


@BOTH_BACKENDS
def test_selecting_a_row_shows_probabilities_and_a_correction_is_saved_as_a_review(
    app, tile_photos, visionqc_home, default_model_dir
):
    batch_id = inspect(app, [(p.name, p.read_bytes(), "image/jpeg") for p in tile_photos(3, offset=40)])
    store = Store(visionqc_home)
    rows = store.batch_rows(batch_id)
    click_row(app, 1)
    assert not app.exception
    target = int(rows.iloc[1]["inspection_id"])
    predicted = rows.iloc[1]["pred_defect"]
    assert any(c.value.startswith("Model predicted:") for c in app.caption)
    assert app.toggle(key=f"{DETAIL}_{target}_heatmap_on").value, "the photo shows where the model looked"
    assert list((visionqc_home / "heatmaps").rglob("*.npz")), "the heatmap is cached for the next look"
    defect_probs = table_with(app, "Probability")  # the first tab: defect type
    classes = [c.removesuffix(" ✔") for c in defect_probs["Class"]]
    assert sorted(classes) == sorted(read_card(default_model_dir).classes("defect"))
    assert f"{predicted} ✔" in list(defect_probs["Class"]), "the current label is marked"
    assert list(defect_probs["Probability"]) == sorted(defect_probs["Probability"], reverse=True)
    assert defect_probs["Probability"].sum() == pytest.approx(100, abs=1)

    new_defect = "crack" if predicted != "crack" else "blowhole"
    app.selectbox(key=f"{DETAIL}_{target}_defect").set_value(new_defect)
    app.selectbox(key=f"{DETAIL}_{target}_severity").set_value("high")
    app.text_input(key=f"{DETAIL}_{target}_note").set_value("visible crack at the edge")
    as_reviewer(app, "Ana")
    [save] = [b for b in app.button if b.label == "Save correction"]
    save.click().run()
    assert not app.exception
    # AppTest reruns the whole page (a browser reruns only the panel), so the panel stays closed: open it again.
    click_row(app, 1, "Defect")

    detail = store.inspection_detail(target)
    assert (detail["defect"], detail["severity"]) == (new_defect, "high")
    assert detail["pred_defect"] == predicted, "the model's prediction is kept"
    review = detail["reviews"].iloc[-1]
    assert (review["reviewer"], review["kind"], review["note"]) == ("Ana", "correct", "visible crack at the edge")
    assert review["previous"]["defect"] == predicted
    history = table_with(app, "Labels before")
    assert list(history["Who"]) == ["Ana"]
    table = results_table(app).value
    assert table.iloc[1]["Defect"] == new_defect
    assert list(table.iloc[1]["Status"]) == ["Corrected"]
    assert pd.isna(table.iloc[1]["Defect %"]), "no model percentage beside a person's label"


@pytest.mark.duckdb_only("a typed reviewer name: on a shared store the signed-in user reviews, nothing is typed")
def test_a_correction_without_a_name_is_refused(app, tile_photos, visionqc_home):
    batch_id = inspect(app, [(p.name, p.read_bytes(), "image/jpeg") for p in tile_photos(1, offset=50)])
    click_row(app, 0)
    [save] = [b for b in app.button if b.label == "Save correction"]
    assert any("Enter your name" in w.value for w in app.warning), "the form says a name is needed before saving"
    save.click().run()
    assert not Store(visionqc_home).batch_rows(batch_id)["reviewed"].any()


def test_without_a_model_the_page_says_why(visionqc_home, tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONQC_MODEL", str(tmp_path / "no-such-model"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert any("No model is loaded" in e.value for e in at.error)
    assert not at.file_uploader


@pytest.mark.duckdb_only("the DuckDB file's lock, held by another process")
def test_a_busy_database_is_a_message_not_a_crash(app, tile_photos, monkeypatch):
    import visionqc.ui.upload
    from visionqc.store import StoreBusyError

    def busy(*args, **kwargs):
        raise StoreBusyError("the database stayed locked by another VisionQC process for 60 s")

    monkeypatch.setattr(visionqc.ui.upload, "run_batch", busy)
    app.file_uploader(key="inspect_files_0").set_value(
        [(p.name, p.read_bytes(), "image/jpeg") for p in tile_photos(1, offset=60)]
    )
    app.run()
    app.button(key="inspect_run").click().run()
    assert not app.exception
    assert any("The database is busy:" in e.value and "locked" in e.value for e in app.error)
    assert upload.CURRENT_BATCH not in app.session_state, "no batch is shown as if it were done"
