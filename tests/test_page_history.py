"""The History page through Streamlit's AppTest, over a real store filled by the real ingest and shipped model.

Every filter is set through its widget and the page's rows are compared with an expectation computed here in
pandas from the raw rows (not with the store's query builder), so the page, the filter widgets and the SQL are
checked together.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from apptest import BOTH_BACKENDS, as_reviewer, open_app
from streamlit.testing.v1 import AppTest

from visionqc.filters import InspectionFilter
from visionqc.intake.uploads import UploadFile
from visionqc.model.predict import Predictor
from visionqc.store import Store
from visionqc.store.ingest import run_batch
from visionqc.ui import history

REVIEWER = "Chris"  # the signed-in lead on PostgreSQL
TIMEOUT = 180
UMLAUT_NAME = "Prüfteil-ä-001.jpg"
TAGS = {0: ["retrain", "edge"], 1: ["retrain"], 2: ["edge"], 3: ["ignore"]}  # row position -> tags


@pytest.fixture(scope="module")
def seeded_home(tmp_path_factory, tile_photos, default_model_dir) -> Path:
    """30 real inspections in two batches (stations Line 1 / Line 2), some tagged, one corrected, one confirmed."""
    home = tmp_path_factory.mktemp("history") / "visionqc-data"
    store = Store(home)
    predictor = Predictor(default_model_dir)
    files = tile_photos(30, offset=60)
    uploads = [UploadFile(UMLAUT_NAME if i == 0 else p.name, p.read_bytes()) for i, p in enumerate(files)]
    run_batch(store, predictor, uploads[:18], station="Line 1", operator="Ana")
    run_batch(store, predictor, uploads[18:], station="Line 2", operator="Bo")
    ids = [int(i) for i in all_rows(store)["inspection_id"]]
    for position, tags in TAGS.items():
        store.add_tags([ids[position]], tags)
    store.review([ids[4]], "Ana", "correct", defect="crack", severity="high", location="top")
    store.mark_reviewed([ids[5]], "Bo")
    return home


def all_rows(store: Store) -> pd.DataFrame:
    rows, _ = store.search(InspectionFilter(), sort="inspection_id", descending=False, page_size=0)
    return rows


# `home` (tests/conftest.py) is a private copy of the seeded store. The page runs on PostgreSQL too
# (`BOTH_BACKENDS`) for a representative subset, the suite's time budget: every kind of filter SQL (dates, text,
# tags), sorting and paging, the detail, bulk writes and the CSV export.


@pytest.fixture
def rows(home) -> pd.DataFrame:
    return all_rows(Store(home))


@pytest.fixture
def app(home) -> AppTest:
    return open_app("pages/2_History.py", reviewer=REVIEWER, timeout=TIMEOUT)


def total_shown(at: AppTest) -> int:
    for md in at.markdown:
        match = re.match(r"\*\*([\d,]+) inspections? match", md.value)
        if match:
            return int(match.group(1).replace(",", ""))
    raise AssertionError("the page shows no match count")


def table_key(at: AppTest) -> str:
    """The results table's key: it carries the ids shown, so ticks never move to other images."""
    return at.session_state[f"{history.HISTORY_TABLE}_key"]


def table(at: AppTest) -> pd.DataFrame:
    return at.dataframe(key=table_key(at)).value


def shown_names(at: AppTest) -> list[str]:
    return sorted(table(at)["File"])


def expect(rows: pd.DataFrame, mask) -> list[str]:
    return sorted(rows[mask]["file_name"])


def has_tag(rows: pd.DataFrame, tag: str) -> pd.Series:
    return rows["tags"].map(lambda tags: tag in list(tags))


def check(at: AppTest, expected: list[str]) -> None:
    at.run()
    assert not at.exception, at.exception
    assert total_shown(at) == len(expected)
    assert shown_names(at) == expected


@BOTH_BACKENDS
def test_without_filters_every_inspection_is_listed(app, rows):
    assert len(rows) == 30
    check(app, sorted(rows["file_name"]))
    shown = table(app)
    assert all(url.startswith("data:image/jpeg;base64,") for url in shown["Image"])
    assert shown["Defect %"].dropna().between(0, 100).all() and shown["Defect %"].isna().sum() == 1  # the corrected row
    corrected = shown[shown["File"] == rows.iloc[4]["file_name"]].iloc[0]
    assert corrected["Defect"] == "crack" and corrected["Reviewed by"] == "Ana"
    assert list(corrected["Status"]) == ["Corrected"]
    confirmed = shown[shown["File"] == rows.iloc[5]["file_name"]].iloc[0]
    assert list(confirmed["Status"]) == ["Confirmed"] and confirmed["Defect %"] > 0


def test_filter_by_defect_types(app, rows):
    chosen = sorted(rows["defect"].unique())[:2]
    app.multiselect(key="history_f_defects").set_value(chosen)
    check(app, expect(rows, rows["defect"].isin(chosen)))


def test_filter_by_severity_including_none(app, rows):
    app.multiselect(key="history_f_severities").set_value(["—"])
    check(app, expect(rows, rows["severity"].isna()))
    present = sorted(rows["severity"].dropna().unique())
    app.multiselect(key="history_f_severities").set_value([present[0], "—"])
    check(app, expect(rows, rows["severity"].isna() | (rows["severity"] == present[0])))


def test_filter_by_location(app, rows):
    common = rows["location"].dropna().value_counts().index[0]
    app.multiselect(key="history_f_locations").set_value([common])
    check(app, expect(rows, rows["location"] == common))


def test_filter_by_action(app, rows):
    common = rows["action"].value_counts().index[0]
    app.multiselect(key="history_f_actions").set_value([common])
    check(app, expect(rows, rows["action"] == common))


def test_filter_by_confidence_range(app, rows):
    low, high = 30, int(rows["confidence"].median() * 100)
    app.slider(key="history_f_confidence").set_value((low, high))
    check(app, expect(rows, (rows["confidence"] >= low / 100) & (rows["confidence"] <= high / 100)))


@BOTH_BACKENDS
def test_filter_by_date_range(app, rows):
    today = datetime.now(UTC).date()
    app.date_input(key="history_f_date_from").set_value(today - timedelta(days=1))
    app.date_input(key="history_f_date_to").set_value(today)
    check(app, sorted(rows["file_name"]))
    app.date_input(key="history_f_date_from").set_value(today + timedelta(days=1))
    app.date_input(key="history_f_date_to").set_value(today + timedelta(days=2))
    check(app, [])


def test_filter_by_needs_review_and_reviewed(app, rows):
    app.radio(key="history_f_needs_review").set_value("Yes")
    check(app, expect(rows, rows["needs_review"]))
    app.radio(key="history_f_needs_review").set_value("No")
    check(app, expect(rows, ~rows["needs_review"]))
    app.radio(key="history_f_needs_review").set_value("Any")
    app.radio(key="history_f_reviewed").set_value("Yes")
    check(app, sorted([rows.iloc[4]["file_name"], rows.iloc[5]["file_name"]]))
    app.radio(key="history_f_reviewed").set_value("No")
    check(app, expect(rows, ~rows["reviewed"]))


def test_filter_by_batch(app, rows):
    second = rows.iloc[-1]["batch_id"]
    app.multiselect(key="history_f_batches").set_value([second])
    check(app, expect(rows, rows["batch_id"] == second))
    assert total_shown(app) == 12


@BOTH_BACKENDS
def test_filter_by_file_name_text_is_case_insensitive(app, rows):
    app.text_input(key="history_f_file_name").set_value("PRÜFTEIL")
    check(app, [UMLAUT_NAME])


def test_tags_all_of_is_and(app, rows):
    app.multiselect(key="history_f_tags_all").set_value(["retrain", "edge"])
    check(app, expect(rows, has_tag(rows, "retrain") & has_tag(rows, "edge")))
    assert total_shown(app) == 1


def test_tags_any_of_is_or(app, rows):
    app.multiselect(key="history_f_tags_any").set_value(["retrain", "edge"])
    check(app, expect(rows, has_tag(rows, "retrain") | has_tag(rows, "edge")))
    assert total_shown(app) == 3


def test_tags_none_of_is_not(app, rows):
    app.multiselect(key="history_f_tags_none").set_value(["edge", "ignore"])
    check(app, expect(rows, ~has_tag(rows, "edge") & ~has_tag(rows, "ignore")))
    assert total_shown(app) == 27  # untagged rows are kept


@BOTH_BACKENDS
def test_tag_boxes_combine_with_and(app, rows):
    app.multiselect(key="history_f_tags_all").set_value(["retrain"])
    app.multiselect(key="history_f_tags_none").set_value(["edge"])
    check(app, [rows.iloc[1]["file_name"]])
    assert any("None of" in (m.help or "") for m in app.multiselect if m.key == "history_f_tags_none")


def test_clear_filters_resets_every_filter(app, rows):
    app.multiselect(key="history_f_tags_all").set_value(["retrain"])
    app.multiselect(key="history_f_stations").set_value(["Line 2"])
    app.multiselect(key="history_f_operators").set_value(["Bo"])
    app.radio(key="history_f_reviewed").set_value("No")
    app.text_input(key="history_f_file_name").set_value("nothing-matches-this")
    check(app, [])
    app.button(key="history_f_clear").click()
    check(app, sorted(rows["file_name"]))
    # The widgets show the empty values too, and the next unrelated click keeps them empty.
    assert app.multiselect(key="history_f_tags_all").value == []
    assert app.multiselect(key="history_f_operators").value == []
    assert app.text_input(key="history_f_file_name").value == ""
    assert app.radio(key="history_f_reviewed").value == "Any"
    app.radio(key="history_order").set_value("Ascending")
    check(app, sorted(rows["file_name"]))


def test_filter_by_station_and_operator(app, rows):
    app.multiselect(key="history_f_operators").set_value(["Bo"])
    check(app, expect(rows, rows["operator"] == "Bo"))
    assert total_shown(app) == 12
    app.multiselect(key="history_f_stations").set_value(["Line 1"])
    check(app, [])


@BOTH_BACKENDS
def test_server_side_sorting_and_paging(app, rows):
    app.selectbox(key="history_sort").set_value("File name")
    app.radio(key="history_order").set_value("Ascending")
    app.selectbox(key="history_page_size").set_value(25)
    app.run()
    names = sorted(rows["file_name"])
    assert total_shown(app) == 30
    assert list(table(app)["File"]) == names[:25], "only one page of rows is on the page"
    app.number_input(key="history_page").set_value(2)
    app.run()
    assert list(table(app)["File"]) == names[25:]
    # Changing the filter goes back to page 1.
    app.radio(key="history_order").set_value("Descending")
    app.run()
    assert app.number_input(key="history_page").value == 1
    assert list(table(app)["File"]) == names[::-1][:25]


def select(app: AppTest, positions: list[int], cells: list | None = None) -> None:
    app.session_state[table_key(app)] = {"selection": {"rows": positions, "columns": [], "cells": cells or []}}
    app.run()
    assert not app.exception, app.exception


@BOTH_BACKENDS
def test_detail_view_shows_probabilities_and_review_history(app, rows):
    app.selectbox(key="history_sort").set_value("File name")
    app.radio(key="history_order").set_value("Ascending")
    app.run()
    corrected = rows.iloc[4]
    position = list(table(app)["File"]).index(corrected["file_name"])
    select(app, [], cells=[[position, "Defect"]])  # a click on any cell opens the side panel
    assert any(c.value.startswith("Model predicted:") for c in app.caption)
    defect_probs = next(df.value for df in app.dataframe if "Probability" in df.value.columns)
    assert len(defect_probs) == 6 and defect_probs["Probability"].sum() == pytest.approx(100, abs=1)
    assert "crack ✔" in list(defect_probs["Class"])
    history = next(df.value for df in app.dataframe if "Labels before" in df.value.columns)
    assert list(history["Who"]) == ["Ana"] and list(history["What"]) == ["corrected"]
    assert history.iloc[0]["Labels after"].startswith("crack · high · top")


@BOTH_BACKENDS
def test_bulk_tag_untag_review_and_soft_delete(app, home):
    store = Store(home)
    select(app, [0, 1, 2])
    ids = [int(i) for i in store.search(InspectionFilter(), page_size=3)[0]["inspection_id"]]
    as_reviewer(app, "Chris")
    app.run()
    assert any(m.value.startswith("**Selected — 3 images:") for m in app.markdown), "the images are named first"
    app.text_input(key="history_bulk_add").set_value("shift-report, line-2")
    app.button(key="history_bulk_add_tags_btn").click().run()
    assert any("Tagged 3 inspection(s)" in s.value for s in app.success)
    assert store.count(InspectionFilter(tags_all=("shift-report", "line-2"))) == 3

    app.multiselect(key="history_bulk_remove").set_value(["line-2"])
    app.button(key="history_bulk_remove_tags_btn").click().run()
    assert store.count(InspectionFilter(tags_any=("line-2",))) == 0
    assert store.count(InspectionFilter(tags_any=("shift-report",))) == 3

    app.button(key="history_bulk_review_btn").click().run()
    assert store.count(InspectionFilter(ids=ids, reviewed=True)) == 3
    assert all(store.inspection_detail(i)["reviewed_by"] == "Chris" for i in ids)

    app.button(key="history_bulk_delete_btn").click().run()
    assert any("Tick" in e.value for e in app.error), "deleting needs an explicit confirmation"
    assert store.count() == 30
    app.text_input(key="history_bulk_why").set_value("blurred photos")
    app.checkbox(key="history_bulk_confirm_delete").check()
    app.button(key="history_bulk_delete_btn").click().run()
    assert not app.exception
    assert store.count() == 27 and total_shown(app) == 27
    assert any("Deleted 3 inspection(s)" in s.value for s in app.success)
    assert store.count(InspectionFilter(deleted="only")) == 3
    trail = store.inspection_detail(ids[0])["reviews"]
    assert list(trail["kind"])[-1] == "delete" and list(trail["note"])[-1] == "blurred photos"

    # Deleted rows can be shown and restored.
    app.radio(key="history_f_deleted").set_value("Only deleted").run()
    assert total_shown(app) == 3 and sorted(table(app)["File"]) == sorted(
        store.search(InspectionFilter(ids=ids, deleted="all"), page_size=0)[0]["file_name"]
    )
    select(app, [0, 1, 2])
    app.button(key="history_bulk_restore_btn").click().run()
    assert any("Restored 3 inspection(s)" in s.value for s in app.success)
    assert store.count() == 30 and total_shown(app) == 0
    assert list(store.inspection_detail(ids[0])["reviews"]["kind"])[-1] == "restore"


@BOTH_BACKENDS
def test_csv_export_is_the_whole_filtered_set_in_utf8_with_bom(app, home, rows):
    app.selectbox(key="history_page_size").set_value(25)
    app.multiselect(key="history_f_tags_none").set_value(["ignore"])
    app.run()
    assert total_shown(app) == 29 and len(table(app)) == 25
    [button] = [b for b in app.get("download_button") if b.label.startswith("Download all")]
    assert button.label == "Download all 29 matching inspections as CSV"
    # The button's data is a deferred callable: it exports the filter the page shows, which it keeps here.
    data = Store(home).export_csv(app.session_state["history_filter"])
    assert data.startswith(b"\xef\xbb\xbf")
    exported = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    names = sorted(r["file_name"] for r in exported)
    assert names == expect(rows, ~has_tag(rows, "ignore")), "every page, not only the first"
    assert UMLAUT_NAME in names
    by_name = {r["file_name"]: r for r in exported}
    assert by_name[UMLAUT_NAME]["tags"] == "edge;retrain"
    assert by_name[rows.iloc[4]["file_name"]]["defect"] == "crack"
    assert by_name[rows.iloc[4]["file_name"]]["pred_defect"] == rows.iloc[4]["pred_defect"]


def unescaped(element) -> str:
    """An element's Markdown as read: user text there (file names) is escaped."""
    return element.value.replace("\\", "")


def test_ticks_never_move_to_other_images_when_a_filter_changes(app, home, rows):
    """The trust bug: ticks stayed on row *positions* after a filter change and tagged unrelated images."""
    store = Store(home)
    as_reviewer(app, "Chris")
    select(app, [0, 1, 2])
    ticked = list(table(app)["File"][:3])
    assert any(ticked[0] in unescaped(m) for m in app.markdown if m.value.startswith("**Selected"))
    app.multiselect(key="history_f_batches").set_value([rows.iloc[-1]["batch_id"]]).run()
    assert not any(m.value.startswith("**Selected") for m in app.markdown), "no bulk action on the new rows"
    assert any("ticks were cleared" in i.value and ticked[0] in unescaped(i) for i in app.info)
    assert not [b for b in app.button if b.key == "history_bulk_add_tags_btn"]
    # Ticking on the new rows acts on exactly those images.
    select(app, [1])
    target = table(app).iloc[1]["File"]
    app.text_input(key="history_bulk_add").set_value("checked")
    app.button(key="history_bulk_add_tags_btn").click().run()
    tagged, _ = store.search(InspectionFilter(tags_all=("checked",)), page_size=0)
    assert list(tagged["file_name"]) == [target]


def test_bulk_mark_unusable_keeps_the_reason_in_the_audit_trail(app, home, rows):
    store = Store(home)
    as_reviewer(app, "Chris")
    app.selectbox(key="history_sort").set_value("File name")
    app.radio(key="history_order").set_value("Ascending").run()
    select(app, [0, 1])
    names = list(table(app)["File"][:2])
    app.selectbox(key="history_bulk_unusable_reason").set_value("not our part")
    app.button(key="history_bulk_unusable_btn").click().run()
    assert not app.exception
    marked, _ = store.search(InspectionFilter(unusable=True), page_size=0)
    assert sorted(marked["file_name"]) == sorted(names)
    assert set(marked["unusable_reason"]) == {"not our part"} and marked["defect"].isna().all()
    trail = store.inspection_detail(int(marked.iloc[0]["inspection_id"]))["reviews"]
    assert (trail.iloc[-1]["kind"], trail.iloc[-1]["unusable_reason"]) == ("unusable", "not our part")
    assert trail.iloc[-1]["previous"]["defect"] is not None, "the labels before are kept"
    app.radio(key="history_f_unusable").set_value("Only").run()
    assert shown_names(app) == sorted(names)
    assert all(list(s) == ["Unusable"] for s in table(app)["Status"])


def test_cli_history_export_matches_the_page_csv(app, home, tmp_path):
    """`python -m visionqc history` with the same filters writes the very bytes the page's CSV button gives."""
    from visionqc import cli

    today = datetime.now(UTC).date()
    app.multiselect(key="history_f_stations").set_value(["Line 2"])
    app.multiselect(key="history_f_tags_none").set_value(["ignore"])
    app.date_input(key="history_f_date_from").set_value(today - timedelta(days=1))
    app.run()
    assert not app.exception, app.exception
    page_filter = app.session_state["history_filter"]
    page_csv = Store(home).export_csv(page_filter)  # what the page's download button hands the browser
    out = tmp_path / "history.csv"
    argv = ["history", "--station", "Line 2", "--not-tag", "ignore", "--from", str(today - timedelta(days=1))]
    assert cli.main([*argv, "--timezone", page_filter.timezone, "--out", str(out)]) == 0
    assert out.read_bytes() == page_csv
    rows = list(csv.DictReader(io.StringIO(page_csv.decode("utf-8-sig"))))
    assert rows and {r["station"] for r in rows} == {"Line 2"}
    with pytest.raises(SystemExit) as refused:  # a bad day is argparse's message and exit code 2
        cli.main(["history", "--from", "yesterday", "--out", str(out)])
    assert refused.value.code == 2
