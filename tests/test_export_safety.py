"""Exports cannot attack the person who opens them (issue 15): real photos whose names, and a zip's entries,
start with every character a spreadsheet evaluates, inspected by the real model with a station, operator,
note, tags and review notes that do too; every CSV the product writes is read back, cell by cell."""

from __future__ import annotations

import csv
import io
import zipfile

import pytest
from pypdf import PdfReader

from visionqc.filters import InspectionFilter, Period
from visionqc.intake.uploads import iter_named_bytes
from visionqc.model.predict import Predictor
from visionqc.reporting import dashboard, exports
from visionqc.reporting.lot_report import batch_report_data, lot_report_pdf
from visionqc.safetext import FORMULA_STARTS, formula_safe, from_formula_safe, printable
from visionqc.store import Store
from visionqc.store.analytics import dashboard_data
from visionqc.store.ingest import run_batch

DANGEROUS_NAMES = [
    '=HYPERLINK("http://evil.example","open me").jpg',
    "+SUM(1,2).jpg",
    "-2+3.jpg",
    "@SUM(A1).jpg",
    "\tcmd.jpg",
    "\rcmd.jpg",
    "'=already-quoted.jpg",
]
STATION = "=cmd|' /C calc'!A0"
OPERATOR = "+Zoë"
NOTE = "@night shift"


@pytest.fixture(scope="module")
def home(tmp_path_factory, tile_photos, default_model_dir):
    """One batch of real tiles under hostile names (plain files and inside a zip named like a formula)."""
    home = tmp_path_factory.mktemp("safety") / "visionqc-data"
    photos = tile_photos(len(DANGEROUS_NAMES) + 3, offset=11)
    named = [(name, path.read_bytes()) for name, path in zip(DANGEROUS_NAMES, photos, strict=False)]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i, path in enumerate(photos[len(DANGEROUS_NAMES) :]):
            zf.writestr(f'=HYPERLINK("http://evil.example","open me")-{i}.jpg', path.read_bytes())
    named.append(("-evil.zip", archive.getvalue()))
    store = Store(home)
    result = run_batch(
        store,
        Predictor(default_model_dir),
        list(iter_named_bytes(named)),
        station=STATION,
        operator=OPERATOR,
        note=NOTE,
        lot="=1+1",
    )
    assert result.inspected == len(photos)
    ids = result.inspection_ids
    store.add_tags(ids[:3], ["-retrain", "=tag"])
    store.review(ids[:2], "=Reviewer", "confirm", note="+looks fine")
    return home


def cells(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf"), "UTF-8 with BOM stays"
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def assert_no_formula(rows: list[list[str]], where: str) -> None:
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            assert not (cell.startswith(FORMULA_STARTS) and not is_number(cell)), (where, r, c, cell)


def test_safe_text_rules_round_trip():
    for name in [*DANGEROUS_NAMES, "plain.jpg", "'", "''x", "-", "=", "", "a=b"]:
        safe = formula_safe(name)
        assert not safe.startswith(FORMULA_STARTS)
        assert from_formula_safe(safe) == name
    assert formula_safe("plain.jpg") == "plain.jpg" and formula_safe("=1") == "'=1"
    assert printable("a\x00b\x1b[31mc\u202ed\ne") == "ab[31mcd e"


def test_history_and_batch_csv_neutralise_every_user_text(home):
    store = Store(home)
    batch_id = store.list_batches()["batch_id"].iloc[0]
    for where, data in (
        ("history", store.export_csv(InspectionFilter())),
        ("batch", store.batch_csv(batch_id)),
    ):
        rows = cells(data)
        assert_no_formula(rows, where)
        header, body = rows[0], rows[1:]
        column = {name: [r[header.index(name)] for r in body] for name in header}
        names = {from_formula_safe(n) for n in column["file_name"]}
        assert set(DANGEROUS_NAMES) <= names, "the original names are kept, escaped"
        assert {from_formula_safe(s) for s in column["station"]} == {STATION}
        assert {from_formula_safe(o) for o in column["operator"]} == {OPERATOR}
        assert {from_formula_safe(n) for n in column["note"]} == {NOTE}
        assert "'=1+1" in column["lot"]
        assert any(t.startswith("'-retrain") for t in column["tags"])
        assert "'=Reviewer" in column["reviewed_by"]
        assert all(is_number(v) for v in column["confidence"]), "numbers stay numbers"


def test_dashboard_chart_csvs_and_report_zip_are_safe(home):
    store = Store(home)
    data = dashboard_data(store, period=Period("all"))
    for section in dashboard.sections(data):
        assert_no_formula(cells(exports.frame_csv(section.frame)), section.key)
    blob = exports.report_zip(data)
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        for name in archive.namelist():
            if name.endswith(".csv"):
                assert_no_formula(cells(archive.read(name)), name)
        html = archive.read("report.html").decode("utf-8")
    assert "<script" not in html.lower()


def test_station_text_is_escaped_in_the_html_report(tmp_path, home):
    # The ESC character in the filter is written on every exported chart: before charts were made printable it
    # made the PNG renderer (vl-convert) abort the whole process.
    store = Store(home)
    flt = InspectionFilter(stations=('<script>alert("x")</script>\x1b',))
    html = zipfile.ZipFile(io.BytesIO(exports.report_zip(dashboard_data(store, flt, Period("all"))))).read(
        "report.html"
    )
    text = html.decode("utf-8")
    assert "<script>" not in text and "&lt;script&gt;" in text and "\x1b" not in text


def test_lot_report_pdf_prints_names_without_control_characters(home):
    store = Store(home)
    batch_id = store.list_batches()["batch_id"].iloc[0]
    pdf = PdfReader(io.BytesIO(lot_report_pdf(batch_report_data(store, batch_id))))
    text = "\n".join(page.extract_text() for page in pdf.pages)
    assert STATION in text, "the station is printed as it was typed"
    assert "\r" not in text.replace("\r\n", "\n") and "\t" not in text


def test_markdown_in_user_text_is_shown_as_typed():
    from visionqc.ui.text import literal

    hostile = "[open me](http://evil.example) :red[x] **b** $a$ file_01.jpg"
    escaped = literal(hostile)
    assert "](" not in escaped and ":red[" not in escaped and "**" not in escaped and "$a$" not in escaped
    unescaped = escaped.replace("\\", "")
    assert unescaped == hostile, "only backslashes were added: the text reads as typed"
    assert literal(None) == "—"


def test_a_dataset_export_escapes_formula_names_and_train_reads_them_back_exactly(tmp_path, labelled_folder):
    """Class names an archive may carry (=crack, +free, -uneven, @x) are escaped in labels.csv, and `train`
    reads the exported dataset back with the original names (the reader undoes the escape)."""
    from visionqc import cli
    from visionqc.datasets.archive import import_dataset
    from visionqc.datasets.export import export_dataset
    from visionqc.model.card import read_card
    from visionqc.training.datasets import LABELS_CSV, load_dataset

    folder = labelled_folder(tmp_path / "parts", 3, ["crack", "free", "uneven"])
    originals = {"crack": "=crack", "free": "+free", "uneven": "-uneven"}
    for plain, hostile in originals.items():
        (folder / plain).rename(folder / hostile)
    store = Store(tmp_path / "home")
    import_dataset(store, "parts", folder, by="ana")
    out = export_dataset(store, "parts", tmp_path / "export")
    rows = cells((out / LABELS_CSV).read_bytes())
    assert_no_formula(rows, "labels.csv")
    assert any(row[0].startswith("'=crack/") for row in rows[1:]), "the escaped name is in the file"
    dataset = load_dataset(out)
    assert set(dataset.class_counts()) >= set(originals.values())
    model = tmp_path / "model"
    argv = ["train", str(out), "--out", str(model), "--views", "1", "--no-phase2", "--repeats", "0", "--quiet"]
    assert cli.main([*argv, "--epochs", "3", "--no-export"]) == 0
    assert set(read_card(model).classes("defect")) >= set(originals.values())


def test_a_class_that_is_not_a_folder_name_is_refused_on_export(tmp_path):
    from visionqc.datasets.checks import DatasetProblem
    from visionqc.datasets.export import class_folder

    assert class_folder("=crack") == "=crack"
    for bad in ("..", "a/b", "..\\x", ""):
        with pytest.raises(DatasetProblem):
            class_folder(bad)
