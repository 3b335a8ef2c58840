"""Store: migrations, effective labels, reviews and audit trail, tags, every History filter, paging and
sorting, CSV export, transactions and the cross-process lock. Real DuckDB files in a temporary folder;
rows are written through ``Store.write_chunk`` (the path ingest uses) so each test controls its labels.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import threading
from datetime import date, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import psycopg
import pytest

from visionqc.csvfile import UTF8_BOM
from visionqc.filters import InspectionFilter
from visionqc.store import DuplicateRecord, FailureRecord, InspectionRecord, Store, StoreBusyError, StoreError
from visionqc.store.query import DISTINCT_COLUMNS, build_where
from visionqc.store.schema import MIGRATIONS, SCHEMA_VERSION

pytestmark = pytest.mark.usefixtures("backend")  # every test on DuckDB and on PostgreSQL
T0 = datetime(2026, 3, 10, 12, 0, 0)  # naive UTC


def record(
    inspection_id: int,
    file_name: str,
    defect: str = "crack",
    severity: str | None = "high",
    location: str | None = "edge",
    conf: float = 0.9,
    *,
    action: str | None = None,
    needs_review: bool = False,
    created_at: datetime = T0,
    model_name: str = "magnetic-tile",
) -> InspectionRecord:
    if defect == "free":
        severity = location = None
    action = action or ("Review" if needs_review else "Pass" if defect == "free" else "Reject")
    sha = f"{inspection_id:064x}"
    return InspectionRecord(
        inspection_id=inspection_id,
        sha256=sha,
        file_name=file_name,
        created_at=created_at,
        model_name=model_name,
        model_version="1.0",
        no_defect_label="free",
        pred_defect=defect,
        pred_defect_conf=conf,
        pred_severity=severity,
        pred_severity_conf=None if severity is None else 0.8,
        pred_location=location,
        pred_location_conf=None if location is None else 0.7,
        pred_action=action,
        probabilities={"defect": {defect: conf, "other": 1 - conf}},
        ood_score=0.1,
        needs_review=needs_review,
        review_reason="low confidence: defect" if needs_review else None,
        embedding=np.full(1280, inspection_id, dtype=np.float32),
        width=640,
        height=480,
        format="JPEG",
        byte_size=1234,
        path=f"images/{sha[:2]}/{sha}.jpg",
        thumb_path=f"thumbs/{sha[:2]}/{sha}.jpg",
    )


def add_batch(store: Store, records: list[InspectionRecord], station: str = "Line 1") -> str:
    batch_id = store.create_batch(
        station=station, operator="Ana", note=None, source="app", model_name="magnetic-tile", model_version="1.0"
    )
    ids = store.reserve_inspection_ids(len(records))
    for r, i in zip(records, ids, strict=True):
        r.inspection_id = i
        r.sha256 = f"{i:064x}"
        r.path, r.thumb_path = f"images/00/{r.sha256}.jpg", f"thumbs/00/{r.sha256}.jpg"
    store.write_chunk(batch_id, records)
    store.finish_batch(batch_id)
    return batch_id


def ids_of(store: Store, f: InspectionFilter) -> list[int]:
    rows, total = store.search(f, sort="inspection_id", descending=False, page_size=0)
    assert total == len(rows)
    return rows["inspection_id"].tolist()


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "home")


@pytest.fixture
def seeded(store):
    """Ten inspections over two batches/stations with known labels; ids 1..10 in this order."""
    a = add_batch(
        store,
        [
            record(0, "tile_01.jpg", "crack", "high", "edge", 0.95, created_at=T0),
            record(0, "tile_02.jpg", "crack", "low", "center", 0.60, created_at=T0 + timedelta(hours=1)),
            record(0, "Tile_03.JPG", "free", conf=0.99, created_at=T0 + timedelta(days=1)),
            record(
                0,
                "tile_04.jpg",
                "blowhole",
                "medium",
                "corner",
                0.40,
                needs_review=True,
                created_at=T0 + timedelta(days=2),
            ),
            record(0, "100%_tile.jpg", "fray", "medium", "edge", 0.75, created_at=T0 + timedelta(days=3)),
            record(0, "tile_06.jpg", "free", conf=0.85, created_at=T0 + timedelta(days=4), model_name="other-model"),
        ],
        station="Line 1",
    )
    b = add_batch(
        store,
        [
            record(0, "Prüfung.jpg", "crack", "medium", "edge", 0.70, created_at=T0 + timedelta(days=5)),
            record(0, "b_2.jpg", "uneven", "low", "center", 0.50, needs_review=True, created_at=T0 + timedelta(days=6)),
            record(0, "b_3.jpg", "free", conf=0.91, created_at=T0 + timedelta(days=7)),
            # 23:30 UTC on day 8 is already day 9 in Berlin (UTC+1 in March)
            record(0, "b_4.jpg", "break", "high", "corner", 0.88, created_at=datetime(2026, 3, 18, 23, 30)),
        ],
        station="Line 2",
    )
    return store, a, b


# --- migrations --------------------------------------------------------------------------------
def test_new_store_is_migrated_to_the_latest_schema_once(tmp_path, backend):
    store = Store(tmp_path / "home")
    assert store.schema_version() == SCHEMA_VERSION
    if backend == "duckdb":
        db = tmp_path / "home" / "visionqc.duckdb"
        before = (db.stat().st_mtime_ns, db.read_bytes())
        Store(tmp_path / "home")  # reopening an up-to-date file applies nothing and writes nothing
        assert (db.stat().st_mtime_ns, db.read_bytes()) == before
        assert (tmp_path / "home" / "visionqc.duckdb").is_file()
    else:
        before = store.data_version()
        Store(tmp_path / "home")  # no write transaction on the server either
        assert store.data_version() == before
        assert not (tmp_path / "home" / "visionqc.duckdb").exists()  # the folder keeps only the images
        with store.connect() as con:  # the indexes PostgreSQL's planner needs (the file-name one from pg_trgm)
            indexes = {r[0] for r in con.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()").fetchall()}  # fmt: skip
        assert {"inspections_newest", "inspections_defect_time", "tags_by_tag", "inspections_file_name"} <= indexes
    with store.connect() as con:
        versions = [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]
        listed = con.execute(
            "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    tables = {name for name, kind in listed if kind == "BASE TABLE"}
    views = {name for name, kind in listed if kind == "VIEW"}
    assert versions == [version for version, _ in MIGRATIONS] and versions[-1] == SCHEMA_VERSION
    assert {"batches", "images", "inspections", "embeddings", "reviews", "tags", "failures", "duplicates"} <= tables
    assert {"datasets", "dataset_items", "jobs"} <= tables
    assert {"inspection_view", "inspection_view_all"} <= views


# The schema as released in version 1, written out by hand: a file made by the first release.
VERSION_1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL);
INSERT INTO schema_version VALUES (1, TIMESTAMP '2026-01-01 00:00:00');
CREATE TABLE batches (batch_id VARCHAR PRIMARY KEY, created_at TIMESTAMP NOT NULL, station VARCHAR, operator VARCHAR,
    note VARCHAR, source VARCHAR NOT NULL, model_name VARCHAR, model_version VARCHAR, status VARCHAR NOT NULL);
CREATE TABLE images (sha256 VARCHAR PRIMARY KEY, width INTEGER, height INTEGER, format VARCHAR, byte_size BIGINT,
    path VARCHAR, thumb_path VARCHAR, first_seen TIMESTAMP NOT NULL);
CREATE TABLE inspections (inspection_id BIGINT PRIMARY KEY, batch_id VARCHAR NOT NULL, sha256 VARCHAR NOT NULL,
    file_name VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, model_name VARCHAR, model_version VARCHAR,
    no_defect_label VARCHAR, pred_defect VARCHAR, pred_defect_conf DOUBLE, pred_severity VARCHAR,
    pred_severity_conf DOUBLE, pred_location VARCHAR, pred_location_conf DOUBLE, pred_action VARCHAR,
    probabilities JSON, ood_score DOUBLE, needs_review BOOLEAN, review_reason VARCHAR, duplicate_of BIGINT,
    rev_defect VARCHAR, rev_severity VARCHAR, rev_location VARCHAR, rev_action VARCHAR, reviewed_at TIMESTAMP,
    reviewed_by VARCHAR, outlier_score DOUBLE, deleted_at TIMESTAMP);
CREATE TABLE embeddings (inspection_id BIGINT PRIMARY KEY, vector FLOAT[]);
CREATE TABLE reviews (review_id BIGINT PRIMARY KEY, inspection_id BIGINT NOT NULL, created_at TIMESTAMP NOT NULL,
    reviewer VARCHAR NOT NULL, kind VARCHAR NOT NULL, defect VARCHAR, severity VARCHAR, location VARCHAR,
    action VARCHAR, note VARCHAR, previous JSON);
CREATE TABLE tags (inspection_id BIGINT NOT NULL, tag VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (inspection_id, tag));
CREATE TABLE failures (failure_id BIGINT PRIMARY KEY, batch_id VARCHAR NOT NULL, file_name VARCHAR NOT NULL,
    reason VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL);
CREATE SEQUENCE inspection_seq START 1;
CREATE SEQUENCE review_seq START 1;
CREATE SEQUENCE failure_seq START 1;
INSERT INTO batches VALUES ('old', TIMESTAMP '2026-01-02 08:00:00', 'Line 9', 'Bo', NULL, 'cli', 'magnetic-tile', '0.9',
    'complete');
INSERT INTO images VALUES ('aa', 10, 10, 'JPEG', 100, 'images/aa/aa.jpg', 'thumbs/aa/aa.jpg', TIMESTAMP '2026-01-02');
INSERT INTO inspections (inspection_id, batch_id, sha256, file_name, created_at, model_name, model_version,
    no_defect_label, pred_defect, pred_defect_conf, pred_severity, pred_action, needs_review, probabilities,
    rev_defect, rev_severity, rev_action, reviewed_at, reviewed_by)
VALUES (nextval('inspection_seq'), 'old', 'aa', 'old.jpg', TIMESTAMP '2026-01-02 08:00:01', 'magnetic-tile', '0.9',
    'free', 'crack', 0.8, 'low', 'Hold', false, '{"defect": {"crack": 0.8, "free": 0.2}}',
    'fray', 'high', 'Reject', TIMESTAMP '2026-01-03', 'Bo');
INSERT INTO reviews VALUES (nextval('review_seq'), 1, TIMESTAMP '2026-01-03', 'Bo', 'correct', 'fray', 'high', NULL,
    'Reject', NULL, '{"defect": "crack"}');
INSERT INTO tags VALUES (1, 'retrain', TIMESTAMP '2026-01-03');
"""


@pytest.mark.duckdb_only("a file made by the first release")
def test_version_1_file_is_migrated_and_keeps_its_rows(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    con = duckdb.connect(str(home / "visionqc.duckdb"))
    con.execute(VERSION_1)
    con.close()

    store = Store(home)
    assert store.schema_version() == SCHEMA_VERSION
    batch = store.batch("old")
    assert batch["finished_at"] == datetime(2026, 1, 2, 8, 0)  # backfilled for complete batches
    rows, total = store.search()
    assert total == 1
    row = rows.iloc[0]
    assert (row["defect"], row["severity"], row["action"], row["pred_defect"]) == ("fray", "high", "Reject", "crack")
    assert row["reviewed"] and list(row["tags"]) == ["retrain"]
    assert store.inspection_detail(1)["reviews"]["kind"].tolist() == ["correct"]
    # The migrated file works for new writes: sequences continue, duplicates table exists.
    batch_id = add_batch(store, [record(0, "new.jpg")])
    assert ids_of(store, InspectionFilter(batches=(batch_id,))) == [2]
    store.write_chunk(batch_id, duplicates=[DuplicateRecord("again.jpg", "aa", 1)])
    assert store.batch_duplicates(batch_id)["earlier_inspection_id"].tolist() == [1]


@pytest.mark.duckdb_only("files on disk")
def test_newer_or_foreign_files_are_refused(tmp_path):
    newer = tmp_path / "newer"
    Store(newer)
    with duckdb.connect(str(newer / "visionqc.duckdb")) as con:
        con.execute("INSERT INTO schema_version VALUES (?, ?)", [SCHEMA_VERSION + 1, T0])
    with pytest.raises(StoreError, match="newer"):
        Store(newer)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with duckdb.connect(str(foreign / "visionqc.duckdb")) as con:
        con.execute("CREATE TABLE sales (x INTEGER)")
    with pytest.raises(StoreError, match="not a VisionQC database"):
        Store(foreign)


# --- writes are transactions --------------------------------------------------------------------
def test_a_failing_chunk_writes_nothing(store):
    batch_id = add_batch(store, [record(0, "first.jpg")])
    clash = record(1, "clash.jpg")  # inspection id 1 already exists: the insert fails mid-transaction
    clash.sha256 = "ff" * 32
    with pytest.raises((duckdb.ConstraintException, psycopg.errors.UniqueViolation)):
        store.write_chunk(batch_id, [clash], failures=[FailureRecord("bad.jpg", "corrupt")])
    with store.connect() as con:
        counts = con.execute(
            "SELECT (SELECT count(*) FROM inspections), (SELECT count(*) FROM images), "
            "(SELECT count(*) FROM embeddings), (SELECT count(*) FROM failures)"
        ).fetchone()
    assert counts == (1, 1, 1, 0)


def test_every_timestamp_is_naive_utc(store):
    before = datetime.utcnow().replace(microsecond=0) - timedelta(seconds=1)
    batch_id = add_batch(store, [record(0, "a.jpg")])
    created = store.batch(batch_id)["created_at"]
    assert created.tzinfo is None and before <= created <= before + timedelta(minutes=1)


# --- effective labels and the audit trail --------------------------------------------------------
def test_effective_labels_follow_the_latest_review_and_keep_the_prediction(seeded):
    store, _, _ = seeded
    detail = store.inspection_detail(1)
    assert (detail["defect"], detail["severity"], detail["action"], detail["reviewed"]) == (
        "crack",
        "high",
        "Reject",
        False,
    )

    assert store.review([1], "Ana", "correct", severity="low", note="small crack") == 1
    detail = store.inspection_detail(1)
    assert (detail["defect"], detail["severity"], detail["location"]) == ("crack", "low", "edge")
    assert detail["action"] == "Hold"  # derived by the default action policy: low severity -> Hold
    assert detail["reviewed_by"] == "Ana" and detail["reviewed"]

    store.review([1], "Ben", "correct", defect="free")
    detail = store.inspection_detail(1)
    assert (detail["defect"], detail["severity"], detail["location"], detail["action"]) == ("free", None, None, "Pass")
    assert not detail["is_defect"]
    # the original prediction is never overwritten
    assert (detail["pred_defect"], detail["pred_severity"], detail["pred_action"]) == ("crack", "high", "Reject")
    history = detail["reviews"]
    assert history["reviewer"].tolist() == ["Ana", "Ben"]
    assert history["previous"].iloc[0]["severity"] == "high" and history["previous"].iloc[0]["reviewed_by"] is None
    assert history["previous"].iloc[1]["severity"] == "low"
    assert history["note"].iloc[0] == "small crack"


def test_confirm_marks_reviewed_and_settles_review_actions(seeded):
    store, _, _ = seeded
    assert store.mark_reviewed([4, 5], "Ana") == 2
    four, five = store.inspection_detail(4), store.inspection_detail(5)
    assert four["reviewed"] and four["defect"] == "blowhole"
    assert four["pred_action"] == "Review" and four["action"] == "Rework"  # medium severity once confirmed
    assert five["action"] == "Reject"  # a concrete predicted action is kept as is
    assert ids_of(store, InspectionFilter(reviewed=True)) == [4, 5]
    with pytest.raises(ValueError, match="review kind"):
        store.review([1], "Ana", "approve")
    with pytest.raises(ValueError, match="reviewer"):
        store.review([1], "  ", "confirm")
    with pytest.raises(ValueError, match="unknown action"):
        store.review([1], "Ana", "correct", action="Scrap")


def test_soft_delete_hides_rows_everywhere_and_restore_brings_them_back(seeded):
    store, _, _ = seeded
    assert store.soft_delete([2, 3], "Ana", note="blurred") == 2
    assert store.soft_delete([2], "Ana") == 0  # already deleted: nothing to record
    assert store.count() == 8
    assert 2 not in ids_of(store, InspectionFilter())
    assert ids_of(store, InspectionFilter(deleted="only")) == [2, 3]
    assert store.count(InspectionFilter(deleted="all")) == 10
    with store.connect() as con:
        assert con.execute("SELECT count(*) FROM inspection_view").fetchone()[0] == 8
    assert store.restore([2], "Ben") == 1
    assert store.count() == 9
    kinds = store.inspection_detail(2)["reviews"]["kind"].tolist()
    assert kinds == ["delete", "restore"]


# --- filters ------------------------------------------------------------------------------------
def test_each_filter_on_its_own(seeded):
    store, _, batch_b = seeded
    f = InspectionFilter
    assert ids_of(store, f(defects=("crack",))) == [1, 2, 7]
    assert ids_of(store, f(defects=("crack", "break"))) == [1, 2, 7, 10]
    assert ids_of(store, f(severities=("medium",))) == [4, 5, 7]
    assert ids_of(store, f(severities=(None,))) == [3, 6, 9]  # defect-free rows have no severity ("—")
    assert ids_of(store, f(locations=("corner", None))) == [3, 4, 6, 9, 10]
    assert ids_of(store, f(actions=("Review",))) == [4, 8]
    assert ids_of(store, f(confidence_min=0.6, confidence_max=0.88)) == [2, 5, 6, 7, 10]  # inclusive bounds
    assert ids_of(store, f(needs_review=True)) == [4, 8]
    assert ids_of(store, f(needs_review=False)) == [1, 2, 3, 5, 6, 7, 9, 10]
    assert ids_of(store, f(batches=(batch_b,))) == [7, 8, 9, 10]
    assert ids_of(store, f(stations=("Line 1",))) == list(range(1, 7))
    assert ids_of(store, f(model_names=("other-model",))) == [6]
    assert ids_of(store, f(file_name="TILE_0")) == [1, 2, 3, 4, 6]  # case-insensitive substring
    assert ids_of(store, f(file_name="100%")) == [5]  # % is a character, not a wildcard
    assert ids_of(store, f(file_name="prüf")) == [7]
    assert ids_of(store, f(file_name="b_")) == [8, 9, 10]  # _ is a character, not "any one character"
    assert ids_of(store, f(file_name="e_0")) == [1, 2, 3, 4, 6]
    assert ids_of(store, f(file_name="%")) == [5] and ids_of(store, f(file_name="\\")) == []
    assert ids_of(store, f(ids=[9, 2, 99])) == [2, 9]
    # date range: inclusive calendar days in the given time zone
    assert ids_of(store, f(date_from=date(2026, 3, 11), date_to=date(2026, 3, 12))) == [3, 4]
    assert ids_of(store, f(date_from=date(2026, 3, 18), date_to=date(2026, 3, 18))) == [10]
    berlin = f(date_from=date(2026, 3, 19), date_to=date(2026, 3, 19), timezone="Europe/Berlin")
    assert ids_of(store, berlin) == [10]
    assert ids_of(store, f(date_from=datetime(2026, 3, 10, 12, 30))) == list(range(2, 11))
    # conditions combine with AND
    assert ids_of(store, f(defects=("crack",), stations=("Line 2",))) == [7]
    # the ids alone, as a bulk action fixes its selection
    assert store.inspection_ids(f(defects=("crack",))) == [1, 2, 7] and len(store.inspection_ids()) == 10


def test_filters_see_effective_labels_after_a_review(seeded):
    store, _, _ = seeded
    store.review([3], "Ana", "correct", defect="crack", severity="low", location="center")
    assert ids_of(store, InspectionFilter(defects=("crack",))) == [1, 2, 3, 7]
    assert ids_of(store, InspectionFilter(severities=(None,))) == [6, 9]
    assert ids_of(store, InspectionFilter(reviewed=False)) == [1, 2, 4, 5, 6, 7, 8, 9, 10]


def test_tag_filters_all_any_none(seeded):
    store, _, _ = seeded
    assert store.add_tags([1, 2], ["a"]) == 2
    assert store.add_tags([1, 3], ["b", " b "]) == 2  # tags are trimmed and de-duplicated
    assert store.add_tags([5], "c") == 1
    assert store.add_tags([1], ["a"]) == 0  # already there
    assert store.add_tags([999], ["a"]) == 0  # no such inspection
    f = InspectionFilter
    assert ids_of(store, f(tags_all=("a", "b"))) == [1]
    assert ids_of(store, f(tags_any=("a", "b"))) == [1, 2, 3]
    assert ids_of(store, f(tags_none=("a",))) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert ids_of(store, f(tags_all=("a",), tags_none=("b",))) == [2]
    assert ids_of(store, f(tags_any=("b", "c"), tags_none=("a",))) == [3, 5]
    assert ids_of(store, f(tags_all=("a", "zzz"))) == []
    assert ids_of(store, f(tags_all=(" a ", "b"))) == [1]  # trimmed like stored tags
    assert ids_of(store, f(tags_any=("A",))) == []  # case-sensitive
    rows, _ = store.search(f(ids=[1]))
    assert list(rows.iloc[0]["tags"]) == ["a", "b"]
    # Totals counted from the tags (not the rows) leave deleted inspections out, or keep only them, as asked.
    store.soft_delete([2, 4], "Ana")
    assert ids_of(store, f(tags_any=("a", "c"))) == [1, 5]
    assert ids_of(store, f(tags_none=("b",))) == [5, 6, 7, 8, 9, 10]
    assert ids_of(store, f(tags_all=("a",), deleted="only")) == [2]
    assert ids_of(store, f(tags_none=("a",), deleted="only")) == [4]
    assert ids_of(store, f(tags_any=("a", "b"), tags_none=("b",), deleted="all")) == [2]
    rows, total = store.search(f(tags_any=("a", "b", "c")), page_size=2)
    assert (rows["inspection_id"].tolist(), total) == ([5, 3], 3)  # newest first, one page of the three
    assert store.remove_tags([1, 2, 3], ["a"]) == 2
    assert ids_of(store, f(tags_any=("a",))) == []
    assert store.distinct_values("tag") == ["b", "c"]


def test_build_where_is_parameterised(seeded):
    store, _, _ = seeded
    hostile = "x' OR 1=1; DROP TABLE inspections; --"
    sql, params = build_where(InspectionFilter(file_name=hostile, defects=(hostile,), tags_any=(hostile,)))
    assert hostile not in sql and "DROP" not in sql
    assert hostile in params
    assert store.search(InspectionFilter(file_name=hostile))[1] == 0
    assert store.count() == 10
    with pytest.raises(ValueError):
        build_where(InspectionFilter(deleted="maybe"))
    with pytest.raises(ValueError, match="time zone"):
        build_where(InspectionFilter(date_from=date(2026, 1, 1), timezone="Mars/Olympus"))


# --- paging, sorting, detail ---------------------------------------------------------------------
def test_paging_returns_disjoint_pages_with_the_full_total(seeded):
    store, _, _ = seeded
    seen = []
    for page in range(4):
        rows, total = store.search(InspectionFilter(), sort="created_at", descending=True, page=page, page_size=3)
        assert total == 10
        seen.extend(rows["inspection_id"].tolist())
    assert seen == [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    rows, total = store.search(InspectionFilter(defects=("crack",)), page=5, page_size=3)
    assert rows.empty and total == 3


@pytest.mark.parametrize("sort", ["created_at", "confidence", "inspection_id", "severity"])
def test_pages_of_a_narrowing_filter_carry_its_total(seeded, sort):
    """A filter on row values (counted in the same pass as the page on PostgreSQL) pages like the whole list."""
    store, _, _ = seeded
    narrowing = InspectionFilter(defects=("crack", "free", "fray"), confidence_min=0.5)
    everything, total = store.search(narrowing, sort=sort, page_size=0)
    assert total == len(everything) == 7  # ids 1, 2, 3, 5, 6, 7, 9
    pages = [store.search(narrowing, sort=sort, page=p, page_size=3) for p in range(3)]
    assert [(len(rows), t) for rows, t in pages] == [(3, 7), (3, 7), (1, 7)]
    ids = [i for rows, _ in pages for i in rows["inspection_id"].tolist()]
    assert ids == everything["inspection_id"].tolist()


def test_sorting_by_whitelisted_columns_only(seeded):
    store, _, _ = seeded
    rows, _ = store.search(sort="confidence", descending=False)
    assert rows["confidence"].tolist() == sorted(rows["confidence"].tolist())
    rows, _ = store.search(sort="confidence", descending=True, page_size=2)
    assert rows["inspection_id"].tolist() == [3, 1]
    rows, _ = store.search(sort="severity", descending=False)
    assert rows["severity"].isna().tolist() == [False] * 7 + [True] * 3  # missing values last either way
    rows, _ = store.search(sort="file_name", descending=False, page_size=1)
    assert rows.iloc[0]["file_name"] == "100%_tile.jpg"
    for bad in ("created_at; DROP TABLE inspections", "probabilities", "1"):
        with pytest.raises(ValueError, match="cannot sort"):
            store.search(sort=bad)


def test_search_rows_carry_station_paths_and_tags(seeded):
    store, _, batch_b = seeded
    rows, _ = store.search(InspectionFilter(ids=[7]))
    row = rows.iloc[0]
    assert row["station"] == "Line 2" and row["operator"] == "Ana" and row["batch_id"] == batch_b
    assert row["thumb_file"] == str(store.home / "thumbs" / row["sha256"][:2] / f"{row['sha256']}.jpg")
    assert list(row["tags"]) == []


def test_inspection_detail(seeded):
    store, _, _ = seeded
    store.add_tags([2], ["retrain"])
    detail = store.inspection_detail(2)
    assert detail["probabilities"] == {"defect": {"crack": 0.6, "other": pytest.approx(0.4)}}
    assert detail["image_file"] == store.home / "images" / detail["sha256"][:2] / f"{detail['sha256']}.jpg"
    assert detail["tags"] == ["retrain"] and detail["reviews"].empty
    assert (detail["width"], detail["height"], detail["station"]) == (640, 480, "Line 1")
    assert store.inspection_detail(12345) is None


def test_distinct_values_for_filter_options(seeded):
    store, _, _ = seeded
    assert store.distinct_values("defect") == ["blowhole", "break", "crack", "fray", "free", "uneven"]
    assert store.distinct_values("severity") == ["high", "low", "medium"]
    assert store.distinct_values("station") == ["Line 1", "Line 2"]
    assert store.distinct_values("model_name") == ["magnetic-tile", "other-model"]
    with pytest.raises(ValueError):
        store.distinct_values("probabilities; DROP TABLE tags")


def test_filter_values_follow_reviews_deletions_and_second_opinions(seeded):
    """The inspections' filter options come from the roll-up plus the second opinions: the same as the rows say
    after a correction brings a new label, a deletion takes away the last of one, and a re-inspection by another
    model version adds its own."""
    store, _, _ = seeded
    store.review([3], "Ana", "correct", defect="dent", severity="low", location="center")
    store.soft_delete([10], "Ana")  # the only "break" (and the only "corner" but 4's)
    again = store.create_batch(station="Line 1", operator="Ana", note="re-inspection of batch x with m v9",
                               source="app", model_name="magnetic-tile", model_version="9")  # fmt: skip
    second = record(0, "tile_01.jpg", "scratch", "low", "center")
    second.model_version = "9"
    [second.inspection_id] = store.reserve_inspection_ids(1)
    store.write_chunk(again, [second], second_opinion=True)
    values = store.filter_values()
    assert set(values) == set(DISTINCT_COLUMNS)
    with store.connect() as con:
        for column, (name, table) in DISTINCT_COLUMNS.items():
            rows = con.execute(f"SELECT DISTINCT {name} FROM {table} WHERE {name} IS NOT NULL").fetchall()
            assert values[column] == sorted(r[0] for r in rows), column
    assert "dent" in values["defect"] and "scratch" in values["defect"] and "break" not in values["defect"]
    assert values["model_version"] == ["magnetic-tile v1.0", "magnetic-tile v9", "other-model v1.0"]
    assert store.filter_values(("tag", "defect")) == {"tag": [], "defect": values["defect"]}
    with pytest.raises(ValueError, match="no filter options"):
        store.filter_values(("defect", "pred_defect_conf"))


def test_embeddings_live_in_their_own_table(seeded):
    store, _, _ = seeded
    ids, vectors = store.embeddings(InspectionFilter(defects=("crack",)))
    assert ids.tolist() == [1, 2, 7]
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    rows, _ = store.search()
    assert "vector" not in rows.columns and "embedding" not in rows.columns


# --- CSV ----------------------------------------------------------------------------------------
def test_csv_export_is_the_whole_filtered_set_in_utf8_with_bom(seeded, tmp_path):
    store, _, _ = seeded
    store.add_tags([7], ["retrain", "Prüfer"])
    store.review([2], "Zoë", "correct", severity="high")
    data = store.export_csv(InspectionFilter(defects=("crack",)), sort="inspection_id", descending=False)
    assert data.startswith(UTF8_BOM)
    assert data[3:].decode("utf-8")  # valid UTF-8 after the BOM
    assert "Prüfung.jpg".encode() in data
    frame = pd.read_csv(io.BytesIO(data), encoding="utf-8-sig")
    assert frame.columns[0] == "inspection_id"  # the BOM does not leak into the first header
    assert frame["inspection_id"].tolist() == [1, 2, 7]
    assert frame["file_name"].tolist() == ["tile_01.jpg", "tile_02.jpg", "Prüfung.jpg"]
    second = frame.set_index("inspection_id").loc[2]
    assert (second["severity"], second["pred_severity"], second["reviewed_by"]) == ("high", "low", "Zoë")
    assert frame.set_index("inspection_id").loc[7, "tags"] == "Prüfer;retrain"
    # What a shift report needs: where, who, which lot, what a person set, and times with their zone.
    for column in ("station", "operator", "note", "lot", "part_number", "batch_id", "model_version", "rev_severity"):
        assert column in frame.columns, column
    assert second["rev_severity"] == "high"
    assert all(str(t).endswith("+00:00") for t in frame["created_at"])
    assert frame["confidence"].map(lambda v: len(f"{v}".split(".")[-1]) <= 4).all()
    berlin = pd.read_csv(
        io.BytesIO(store.export_csv(InspectionFilter(defects=("crack",), timezone="Europe/Berlin"))),
        encoding="utf-8-sig",
    )
    assert all(str(t)[-6:] in ("+01:00", "+02:00") for t in berlin["created_at"])

    target = tmp_path / "export.csv"
    assert store.export_csv(InspectionFilter(), path=target) == target
    written = target.read_bytes()
    assert written.startswith(UTF8_BOM) and written.count(UTF8_BOM) == 1
    assert len(pd.read_csv(target, encoding="utf-8-sig")) == 10  # every row, not one page


def test_csv_quotes_awkward_file_names(store):
    name = 'a,"quoted"; name.jpg'
    add_batch(store, [record(0, name)])
    frame = pd.read_csv(io.BytesIO(store.export_csv()), encoding="utf-8-sig")
    assert frame["file_name"].tolist() == [name]


def test_batch_summary_failures_and_csv(seeded):
    store, batch_a, _ = seeded
    store.write_chunk(batch_a, failures=[FailureRecord("broken.jpg", "truncated image")])
    summary = store.batch_summary(batch_a)
    assert summary == {
        "inspected": 6,
        "by_action": {"Pass": 2, "Reject": 3, "Review": 1},
        "needs_review": 1,
        "unusable": 0,
        "duplicates": 0,
        "failures": 1,
    }
    assert store.batch_failures(batch_a)[["file_name", "reason"]].values.tolist() == [["broken.jpg", "truncated image"]]
    frame = pd.read_csv(io.BytesIO(store.batch_csv(batch_a)), encoding="utf-8-sig")
    assert frame["inspection_id"].tolist() == [1, 2, 3, 4, 5, 6]
    assert store.batch_rows(batch_a)["inspection_id"].tolist() == [1, 2, 3, 4, 5, 6]
    batches = store.list_batches()
    assert batches.set_index("batch_id").loc[batch_a, "failures"] == 1


def test_report_summary_names_the_batches_stations_operators_and_models(seeded):
    """What a lot report's header shows. Was DuckDB-only SQL (the ``list`` aggregate, ``ORDER BY 1`` in a
    DISTINCT aggregate): a lot report from a PostgreSQL store failed."""
    store, batch_a, batch_b = seeded
    store.mark_unusable([10], "Ana", "blurred")
    summary = store.report_summary(InspectionFilter())
    assert (summary["inspected"], summary["unusable"], summary["open_reviews"]) == (9, 1, 2)
    assert summary["batches"] == sorted([batch_a, batch_b])
    assert (summary["stations"], summary["operators"]) == (["Line 1", "Line 2"], ["Ana"])
    assert summary["models"] == ["magnetic-tile 1.0", "other-model 1.0"]
    assert (summary["lots"], summary["notes"]) == ([], [])
    assert (summary["first_at"], summary["last_at"]) == (T0, datetime(2026, 3, 18, 23, 30))
    one_station = store.report_summary(InspectionFilter(stations=("Line 2",)))
    assert (one_station["batches"], one_station["models"]) == ([batch_b], ["magnetic-tile 1.0"])


# --- the cross-process lock ---------------------------------------------------------------------
HOLD_LOCK = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    con.execute("SELECT count(*) FROM inspections").fetchall()
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    """
)


@pytest.mark.duckdb_only("the file lock")
def test_waits_for_another_process_holding_the_file(seeded):
    store, _, _ = seeded
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(store.db_path), "1.5"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert store.add_tags([1], ["while-locked"]) == 1  # waits with back-off, then writes
    finally:
        holder.wait(timeout=30)
    assert ids_of(store, InspectionFilter(tags_all=("while-locked",))) == [1]


@pytest.mark.duckdb_only("the file lock")
def test_gives_up_with_a_clear_message_when_the_lock_is_held_too_long(seeded):
    store, _, _ = seeded
    impatient = Store(store.home, lock_timeout=0.3)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(store.db_path), "3"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreBusyError, match="locked by another VisionQC process"):
            impatient.count()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert store.count() == 10


HOLD_LOCK_FILE = textwrap.dedent(
    """
    import fcntl, sys
    with open(sys.argv[1], "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.readline()  # until the test says so
    """
)


@pytest.mark.duckdb_only("the file lock")
def test_a_process_holding_the_lock_file_keeps_the_database_to_itself_until_it_lets_go(seeded):
    """Every VisionQC process holds visionqc.duckdb.lock from opening the file until it has closed it
    (visionqc/store/filelock.py): while another holds it, this one waits, however free DuckDB's own lock is."""
    store, _, _ = seeded
    impatient = Store(store.home, lock_timeout=0.3)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK_FILE, str(store.db_path) + ".lock"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreBusyError, match="locked by another VisionQC process"):
            impatient.add_tags([1], ["while-locked"])
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
    assert impatient.add_tags([1], ["after"]) == 1
    assert ids_of(store, InspectionFilter(tags_all=("while-locked",))) == []


@pytest.mark.duckdb_only("the lock file")
def test_two_spellings_of_one_data_folder_share_this_process_s_lock(seeded, tmp_path):
    """A store opened through a symlink, while another store of the same folder has a connection open in this
    process, reads at once: one lock per file, however its path is spelled, so the process never locks itself out."""
    store, _, _ = seeded
    link = tmp_path / "same-folder"
    link.symlink_to(store.home, target_is_directory=True)
    through_link = Store(link, lock_timeout=1)
    with store.connect():
        assert through_link.count() == store.count() == 10


def test_review_rows_are_json_for_the_audit_trail(seeded):
    store, _, _ = seeded
    store.review([8], "Ana", "correct", defect="crack", severity="high", location="edge", action="Hold")
    with store.connect() as con:
        row = con.execute("SELECT kind, action, previous FROM reviews WHERE inspection_id = 8").fetchone()
    assert row[0] == "correct" and row[1] == "Hold"
    assert json.loads(row[2])["action"] == "Review"


def test_threads_of_one_process_write_concurrently_without_losing_a_review(seeded):
    """Streamlit serves each browser session on its own thread; their writes conflict and are retried."""
    store, _, _ = seeded
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(8):
                target = [1 + (n + i) % 3]  # overlapping rows: real write conflicts
                store.review(target, f"reviewer {n}", "correct", severity=("low", "medium", "high")[i % 3])
                store.add_tags(target, [f"t{n}-{i}"])
        except BaseException as exc:  # collected, so a failing thread fails the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    with store.connect() as con:
        assert con.execute("SELECT count(*) FROM reviews").fetchone()[0] == 32
        assert con.execute("SELECT count(*) FROM tags").fetchone()[0] == 32


def test_data_version_moves_with_every_commit_of_any_process(seeded):
    """The app's read cache is keyed on it (visionqc.ui.cached): a read changes nothing, a commit by this or
    another process (a station writing to the same database) changes it."""
    store, _, _ = seeded
    before = store.data_version()
    store.search(InspectionFilter(), page_size=5)
    assert store.data_version() == before
    store.add_tags([1], ["checked"])
    after_write = store.data_version()
    assert after_write != before
    code = "import sys; from visionqc.store import Store; Store(sys.argv[1]).soft_delete([2], 'other station')"
    subprocess.run([sys.executable, "-c", code, str(store.home)], check=True, timeout=120)
    assert store.data_version() != after_write
