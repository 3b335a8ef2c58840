"""The Dashboard's roll-up (visionqc.store.counts) on both backends: after every kind of write (ingest, a claim lost
to another run, corrections, confirmations, "not a part", deletes and restores, re-inspections as second opinions,
concurrent reviews) it holds exactly what a count over the raw rows gives, and the Dashboard answers the same from
it as from the rows, for every filter and time zone it is used with. Where it cannot be exact (a half-hour time
zone, a condition on a value it does not keep) the rows answer.
"""

from __future__ import annotations

import threading
from dataclasses import fields, replace
from datetime import date, datetime, timedelta

import pandas as pd
import pytest
from records import synthetic_record

from visionqc.filters import InspectionFilter, Period
from visionqc.store import Store
from visionqc.store.analytics import Source, comparison, dashboard_data, source_for
from visionqc.store.counts import TABLE, local_day_sql, whole_hour_zone
from visionqc.store.counts import source_for as counts_source
from visionqc.store.query import build_where
from visionqc.store.schema import SCHEMA_VERSION

pytestmark = pytest.mark.usefixtures("backend")

TODAY = date(2026, 3, 29)  # Europe moved its clocks on 03-29 01:00 UTC; New York on 03-08
NO_DEFECT = "free"
ROLLUP, RAW = Source("counts"), Source("inspections")
# Minutes past UTC midnight for the rows of each day: both sides of local midnights in UTC-5 .. UTC+13.
MINUTES = (10, 59, 60, 299, 300, 330, 719, 1020, 1379, 1380, 1439)
LABELS = (
    (NO_DEFECT, None, None, "Pass", False),
    ("crack", "high", "top", "Reject", False),
    ("crack", "medium", "edge", "Rework", True),
    ("dent", "low", None, "Hold", False),
    ("scratch", None, "edge", "Review", True),
    (NO_DEFECT, None, None, "Review", True),
)
STATIONS = (("Line 1", "Ana"), ("Line 2", "Bo"), (None, None))
MODELS = (("magnetic-tile", "1.0"), ("magnetic-tile", "2.0"), ("other", "1.0"))


def new_batch(store: Store, station, operator, model: str = "magnetic-tile", version: str = "1.0") -> str:
    return store.create_batch(
        station=station, operator=operator, note=None, source="cli", model_name=model, model_version=version
    )


def write(store: Store, rows: int, *, first_id: int | None = None, second_opinion_of: list | None = None) -> list:
    """``rows`` inspections over the 20 days up to TODAY, each batch a station and a model, as ingest writes them;
    returns the records written. ``second_opinion_of``: records to classify again (a re-inspection)."""
    written = []
    ids = store.reserve_inspection_ids(rows)
    for b, (station, operator) in enumerate(STATIONS):
        model, version = MODELS[b % len(MODELS)] if second_opinion_of is None else ("magnetic-tile", "3.0")
        batch = new_batch(store, station, operator, model, version)
        records = []
        for k, inspection_id in enumerate(ids):
            if k % len(STATIONS) != b:
                continue
            defect, severity, location, action, flagged = LABELS[(k * 7 + b) % len(LABELS)]
            day = TODAY - timedelta(days=k % 20)
            at = datetime(day.year, day.month, day.day) + timedelta(minutes=MINUTES[k % len(MINUTES)], seconds=k % 60)
            record = synthetic_record(
                inspection_id,
                created_at=at,
                defect=defect,
                severity=severity,
                location=location,
                action=action,
                needs_review=flagged,
                model_name=model,
                model_version=version,
                no_defect_label=NO_DEFECT,
            )
            if second_opinion_of is not None:
                record = replace(record, sha256=second_opinion_of[k % len(second_opinion_of)].sha256)
            records.append(record)
        store.write_chunk(batch, records, second_opinion=second_opinion_of is not None)
        store.finish_batch(batch)
        written += records
    return written


def stored_counts(store: Store) -> pd.DataFrame:
    """The roll-up's groups with a count, as a sorted frame."""
    with store.connect() as con:
        frame = con.execute(
            f"""SELECT hour, station, operator, model_name, model_version, no_defect_label, defect, severity,
                location, action, needs_review, reviewed, unusable, CAST(sum(n) AS BIGINT) AS n
            FROM {TABLE} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13 HAVING sum(n) <> 0"""
        ).df()
        negative = con.execute(f"SELECT count(*) FROM {TABLE} WHERE n < 0").fetchone()[0]
    assert negative == 0
    return _sorted(frame)


def counted_from_rows(store: Store) -> pd.DataFrame:
    """The same groups counted from the visible inspections but second opinions (written here, not with the code
    under test)."""
    with store.connect() as con:
        frame = con.execute(
            """SELECT date_trunc('hour', v.created_at) AS hour, b.station, b.operator, v.model_name, v.model_version,
                v.no_defect_label, v.defect, v.severity, v.location, v.action, v.needs_review, v.reviewed_at IS NOT NULL
                AS reviewed, v.unusable_reason IS NOT NULL AS unusable, count(*) AS n
            FROM inspection_view v LEFT JOIN batches b ON b.batch_id = v.batch_id
            WHERE NOT v.second_opinion
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13"""
        ).df()
    return _sorted(frame)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype(object).where(frame.notna(), None)
    frame["n"] = frame["n"].astype(int)
    frame["hour"] = pd.to_datetime(frame["hour"])
    keys = [c for c in frame.columns if c != "n"]
    return frame.sort_values(keys, key=lambda s: s.astype(str)).reset_index(drop=True)


def assert_counts_match(store: Store) -> None:
    stored, truth = stored_counts(store), counted_from_rows(store)
    with store.connect() as con:
        second_opinions = con.execute("SELECT count(*) FROM inspection_view WHERE second_opinion").fetchone()[0]
    assert int(truth["n"].sum()) == rows_matching(store, InspectionFilter()) - second_opinions
    pd.testing.assert_frame_equal(stored, truth, check_dtype=False)
    assert_history_totals_match(store)


def rows_matching(store: Store, f: InspectionFilter) -> int:
    """How many inspections match ``f``, counted over the rows (not with the code under test)."""
    where, params = build_where(f)
    with store.connect() as con:
        return int(con.execute(f"SELECT count(*) FROM inspection_view_all WHERE {where}", params).fetchone()[0])


def history_totals_cases():
    """History filters whose total the roll-up answers: every condition on a value it counts by."""
    yield InspectionFilter()
    for zone in ZONES:
        yield InspectionFilter(timezone=zone, date_from=date(2026, 3, 20), date_to=date(2026, 3, 28))
    yield InspectionFilter(timezone="Europe/Berlin", date_to=date(2026, 3, 29), defects=("crack", NO_DEFECT))
    yield InspectionFilter(defects=("scratch",), severities=(None, "medium"), locations=("edge",))
    yield InspectionFilter(actions=("Review", "Reject"), needs_review=True, reviewed=False)
    yield InspectionFilter(reviewed=True)
    yield InspectionFilter(unusable=True)
    yield InspectionFilter(unusable=False, defects=(None,))
    yield InspectionFilter(model_names=("magnetic-tile",), model_versions=("magnetic-tile v2.0", "other v1.0"))
    yield InspectionFilter(stations=("Line 1", None), operators=("Ana", None), date_from=date(2026, 3, 25))


def assert_history_totals_match(store: Store) -> None:
    """History's totals (``count``, and ``search``'s total beside a page) read from the roll-up equal a count
    over the rows, for every filter the roll-up answers; the page itself still comes from the rows."""
    for f in history_totals_cases():
        assert counts_source(f) == "counts", f
        truth = rows_matching(store, f)
        assert store.count(f) == truth, f
        rows, total = store.search(f, page_size=4)
        assert total == truth, f
        assert len(rows) == min(4, truth)


def assert_same_dashboard(store: Store, f: InspectionFilter, period: Period, **options) -> None:
    """The Dashboard from the roll-up equals the Dashboard from the rows, every number and frame."""
    assert source_for(f) == ROLLUP
    fast = dashboard_data(store, f, period, today=TODAY, source=ROLLUP, **options)
    slow = dashboard_data(store, f, period, today=TODAY, source=RAW, **options)
    assert fast.kpis == slow.kpis
    assert (fast.first_day, fast.last_day, fast.no_defect_labels) == (
        slow.first_day,
        slow.last_day,
        slow.no_defect_labels,
    )
    for frame in fields(fast):
        left, right = getattr(fast, frame.name), getattr(slow, frame.name)
        if isinstance(left, pd.DataFrame):
            pd.testing.assert_frame_equal(left.reset_index(drop=True), right.reset_index(drop=True), check_dtype=False)


ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Pacific/Auckland")


def dashboard_cases():
    yield InspectionFilter(), Period("7d")
    for zone in ZONES:
        yield InspectionFilter(timezone=zone), Period("30d")
        yield InspectionFilter(timezone=zone), Period("all")
    yield InspectionFilter(timezone="Europe/Berlin"), Period("custom", date(2026, 3, 20), date(2026, 3, 29))
    yield InspectionFilter(model_names=("magnetic-tile",), model_versions=("magnetic-tile v2.0",)), Period("30d")
    yield InspectionFilter(stations=("Line 1", None), operators=("Ana", None)), Period("30d")
    yield InspectionFilter(timezone="America/New_York", stations=("Line 2",)), Period("7d")
    base = InspectionFilter(timezone="Europe/Berlin")
    yield base.with_labels("defect", ["crack"]), Period("30d")
    yield base.with_labels("severity", [None, "high"]).with_labels("action", ["Reject", "Review"]), Period("30d")
    yield base.with_labels("location", ["edge"]).with_labels("defect", ["crack", "scratch"]), Period("all")


def assert_every_dashboard_matches(store: Store) -> None:
    for f, period in dashboard_cases():
        assert_same_dashboard(store, f, period)
    assert_same_dashboard(store, InspectionFilter(timezone="Europe/Berlin"), Period("30d"), include_no_defect=True)


# --- the roll-up follows every write -----------------------------------------------------------------------
def test_roll_up_follows_ingest_reviews_deletes_restores_and_reinspections(tmp_path):
    store = Store(tmp_path / "home")
    records = write(store, 240)
    assert_counts_match(store)
    assert_every_dashboard_matches(store)
    ids = [r.inspection_id for r in records]

    assert store.review(ids[0:30], "Ana", "correct", defect="crack", severity="low", location="top") == 30
    assert store.review(ids[20:50], "Bo", "confirm") == 30
    assert store.review(ids[40:60], "Bo", "correct", defect=NO_DEFECT) == 20
    assert store.mark_unusable(ids[55:75], "Ana", "not our part") == 20
    assert store.review(ids[70:72], "Ana", "correct", defect="dent", severity="high") == 2  # unusable no more
    assert_counts_match(store)

    assert store.soft_delete(ids[100:140], "Ana") == 40
    assert store.soft_delete(ids[100:110], "Ana") == 0  # already deleted: nothing changes
    assert store.review(ids[120:125], "Bo", "correct", defect="scratch") == 5  # a deleted row corrected: not counted
    assert_counts_match(store)
    assert store.restore(ids[100:130], "Bo") == 30
    assert_counts_match(store)

    # a re-inspection: second opinions on images already counted, in a batch of their own: History shows them, the
    # Dashboard (rows or roll-up) and the review queue count each image once
    before = dashboard_data(store, InspectionFilter(), Period("all"), today=TODAY, source=RAW).kpis
    waiting = store.review_queue(InspectionFilter())[1]
    second = write(store, 30, second_opinion_of=records[:60])
    assert len(second) == 30 and any(r.needs_review for r in second)
    assert store.count() == 230 + 30  # 10 of the first 240 stay deleted
    assert_counts_match(store)
    assert_every_dashboard_matches(store)
    for source in (RAW, ROLLUP):
        assert dashboard_data(store, InspectionFilter(), Period("all"), today=TODAY, source=source).kpis == before
    assert store.review_queue(InspectionFilter())[1] == waiting
    store.review([r.inspection_id for r in second[:5]], "Ana", "correct", defect="dent")  # a second opinion reviewed
    store.soft_delete([r.inspection_id for r in second[5:10]], "Ana")
    assert_counts_match(store)
    assert dashboard_data(store, InspectionFilter(), Period("all"), today=TODAY, source=ROLLUP).kpis == before


def test_a_claim_lost_to_another_run_is_counted_once(tmp_path):
    store = Store(tmp_path / "home")
    first = write(store, 9)
    batch = new_batch(store, "Line 1", "Ana")
    again = [replace(r, inspection_id=i) for r, i in zip(first, store.reserve_inspection_ids(9), strict=True)]
    lost = store.write_chunk(batch, again)
    assert len(lost) == 9  # every image was held: duplicates, not inspections
    assert store.count() == 9
    assert_counts_match(store)


def test_deleted_images_inspected_again_and_restores_refused(tmp_path):
    store = Store(tmp_path / "home")
    first = write(store, 12)
    store.soft_delete([r.inspection_id for r in first], "Ana")
    batch = new_batch(store, "Line 2", "Bo")
    again = [replace(r, inspection_id=i) for r, i in zip(first, store.reserve_inspection_ids(12), strict=True)]
    assert store.write_chunk(batch, again) == {}  # the claims of deleted inspections are taken over
    assert store.restore([r.inspection_id for r in first], "Ana") == 0  # the images are counted by the new ones
    assert store.count() == 12
    assert_counts_match(store)


def test_concurrent_reviews_keep_the_roll_up_exact(tmp_path):
    """Writers changing the same inspections at once: each reads the labels it replaces under a row lock
    (PostgreSQL) or loses a conflict and runs again (DuckDB), so what comes out of the roll-up is what went in."""
    store = Store(tmp_path / "home")
    ids = [r.inspection_id for r in write(store, 60)]
    errors: list[BaseException] = []
    labels = (("crack", "high"), ("dent", "low"), (NO_DEFECT, None), ("scratch", "medium"))

    def reviewer(k: int) -> None:
        try:
            for round_ in range(6):
                defect, severity = labels[(k + round_) % len(labels)]
                chosen = ids[(k * 7 + round_ * 3) % 20 :][:40]
                if round_ == 3:
                    store.soft_delete(chosen[:5], f"r{k}")
                elif round_ == 4:
                    store.restore(chosen[:10], f"r{k}")
                else:
                    store.review(chosen, f"r{k}", "correct", defect=defect, severity=severity)
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=reviewer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert_counts_match(store)


# --- the migration fills it from existing rows ----------------------------------------------------------------
def drop_second_opinions(con) -> None:
    """Undo migration 11's column (and the views over it, which the next migration makes again)."""
    for view in ("counted_inspections", "inspection_view", "inspection_view_all"):
        con.execute(f"DROP VIEW {view}")
    con.execute("ALTER TABLE inspections DROP COLUMN second_opinion")


def undo_migrations_12_to_14(con) -> None:
    """Undo migrations 12 to 14 (indexes, most of them PostgreSQL only, and the jobs' heartbeat columns)."""
    for index in (
        "inspections_defect_time",
        "inspection_counts_unusable",
        "users_folded_name",
        "tags_by_tag",
        "inspections_deleted",
        "inspections_file_name",
    ):
        con.execute(f"DROP INDEX IF EXISTS {index}")
    for column in ("host", "heartbeat_at"):
        con.execute(f"ALTER TABLE jobs DROP COLUMN IF EXISTS {column}")


def test_migration_fills_the_roll_up_from_the_rows(tmp_path):
    home = tmp_path / "home"
    store = Store(home)
    records = write(store, 90)
    ids = [r.inspection_id for r in records]
    store.review(ids[:10], "Ana", "correct", defect="dent")
    store.mark_unusable(ids[10:15], "Ana", "blurred")
    store.soft_delete(ids[15:25], "Ana")
    with store.connect() as con:  # the database as the release before the roll-up left it
        drop_second_opinions(con)
        con.execute(f"DROP TABLE {TABLE}")
        con.execute("DROP INDEX IF EXISTS inspections_newest")  # migration 10 (PostgreSQL only)
        undo_migrations_12_to_14(con)
        con.execute("DELETE FROM schema_version WHERE version > 8")
    assert Store(home, url=store.url).schema_version() == SCHEMA_VERSION
    assert_counts_match(store)
    assert_every_dashboard_matches(store)


def test_migration_marks_the_second_opinions_written_before_it(tmp_path):
    store = Store(tmp_path / "home")
    records = write(store, 60)
    batch = store.create_batch(station=None, operator="Ana", note="re-inspection of batch x with magnetic-tile v3",
                               source="app", model_name="magnetic-tile", model_version="3")  # fmt: skip
    again = [
        replace(r, inspection_id=i, model_version="3")
        for r, i in zip(records[:20], store.reserve_inspection_ids(20), strict=True)
    ]
    store.write_chunk(batch, again, second_opinion=True)
    with store.connect() as con:  # the database as the release before migration 11 left it: second opinions counted
        drop_second_opinions(con)
        con.execute("CREATE VIEW inspection_view AS SELECT * FROM inspections WHERE deleted_at IS NULL")
        con.execute(f"DELETE FROM {TABLE}")
        con.execute(
            f"""INSERT INTO {TABLE} SELECT md5(CAST(inspection_id AS VARCHAR)), date_trunc('hour', created_at),
            NULL, NULL, model_name, model_version, no_defect_label, pred_defect, pred_severity, pred_location,
            pred_action, needs_review, false, false, 1 FROM inspection_view"""
        )
        con.execute("DROP VIEW inspection_view")
        undo_migrations_12_to_14(con)
        con.execute("DELETE FROM schema_version WHERE version > 10")
    assert Store(tmp_path / "home", url=store.url).schema_version() == SCHEMA_VERSION
    second = store.search(InspectionFilter(batches=(batch,)), page_size=0)[0]
    assert len(second) == 20 and second["second_opinion"].all()
    assert store.search(InspectionFilter(), page_size=0)[0]["second_opinion"].sum() == 20
    assert_counts_match(store)
    assert_every_dashboard_matches(store)


# --- which source answers ----------------------------------------------------------------------------------
def test_roll_up_is_used_only_where_it_is_exact():
    assert counts_source(InspectionFilter()) == "counts"
    whole = InspectionFilter(
        timezone="America/New_York",
        date_from=date(2026, 3, 1),
        date_to=date(2026, 3, 9),
        defects=("crack", None),
        severities=("high",),
        locations=(None,),
        actions=("Reject",),
        model_names=("m",),
        model_versions=("m v1",),
        stations=("Line 1",),
        operators=(None,),
        needs_review=True,
        reviewed=False,
        unusable=False,
    )
    assert counts_source(whole) == "counts"
    for change in (
        {"timezone": "Asia/Kolkata"},  # +05:30: an hour's inspections can fall on two local days
        {"timezone": "Asia/Kathmandu"},
        {"timezone": "Australia/Lord_Howe"},  # a half-hour daylight-saving shift
        {"date_from": datetime(2026, 3, 1, 10, 30)},  # an instant, not a local day
        {"confidence_min": 0.5},
        {"confidence_max": 0.5},
        {"file_name": "tile"},
        {"tags_any": ("retrain",)},
        {"tags_all": ("retrain",)},
        {"tags_none": ("ignore",)},
        {"ids": (1, 2)},
        {"batches": ("b",)},
        {"deleted": "only"},
        {"deleted": "all"},
    ):
        assert counts_source(replace(whole, **change)) == "inspections", change


def test_whole_hour_zones():
    for zone in ("UTC", "Europe/Berlin", "Europe/Amsterdam", "America/New_York", "Pacific/Auckland", "Asia/Tokyo"):
        assert whole_hour_zone(zone), zone
    for zone in ("Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "Australia/Adelaide", "Australia/Lord_Howe"):
        assert not whole_hour_zone(zone), zone


def test_half_hour_zone_reads_the_rows_and_gets_the_day_right(tmp_path):
    """18:45 UTC is 00:15 the next day in Kolkata, but its hour (18:00 UTC) is 23:30 the day before: the roll-up
    would put it on the wrong day, so the Dashboard reads the rows there."""
    store = Store(tmp_path / "home")
    batch = new_batch(store, "Line 1", "Ana")
    (inspection_id,) = store.reserve_inspection_ids(1)
    store.write_chunk(
        batch, [synthetic_record(inspection_id, created_at=datetime(2026, 3, 27, 18, 45), defect="crack")]
    )
    kolkata = InspectionFilter(timezone="Asia/Kolkata")
    assert source_for(kolkata) == RAW
    data = dashboard_data(store, kolkata, Period("7d"), today=TODAY)
    assert data.daily.set_index("day").loc[date(2026, 3, 28), "inspected"] == 1
    wrong = dashboard_data(store, kolkata, Period("7d"), today=TODAY, source=ROLLUP)
    assert wrong.daily.set_index("day").loc[date(2026, 3, 27), "inspected"] == 1  # why the rule exists


def test_station_comparison_matches(tmp_path):
    store = Store(tmp_path / "home")
    ids = [r.inspection_id for r in write(store, 120)]
    store.review(ids[:20], "Ana", "correct", defect="crack", severity="high")
    store.mark_unusable(ids[20:30], "Ana", "empty")
    f = InspectionFilter(timezone="Europe/Berlin", stations=("Line 1", None))
    for by in ("station", "operator"):
        fast = comparison(store, f, date(2026, 3, 10), TODAY, by, source=ROLLUP)
        slow = comparison(store, f, date(2026, 3, 10), TODAY, by, source=RAW)
        assert not fast.empty
        pd.testing.assert_frame_equal(fast, slow, check_dtype=False)


def test_postgresql_only_statements_run_on_postgresql_only(tmp_path, backend):
    """Migrations 9 to 12 carry indexes for PostgreSQL's planner, marked so DuckDB skips them."""
    store = Store(tmp_path / "home")
    with store.connect() as con:
        if backend == "postgresql":
            names = {
                r[0]
                for r in con.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()").fetchall()
            }
        else:
            names = {r[0] for r in con.execute("SELECT index_name FROM duckdb_indexes()").fetchall()}
    wanted = {
        "inspection_counts_hour",
        "inspections_newest",
        "inspections_second_opinions",
        "inspections_defect_time",
        "inspection_counts_unusable",
    }
    assert (names >= wanted) if backend == "postgresql" else not (names & wanted)


def test_a_defect_filter_pages_and_totals_like_the_rows(tmp_path):
    """A defect filter with a value condition (History's common filter; on PostgreSQL read from migration 12's
    index, a count and a page): the same total and the same rows, in order, as sorting every match."""
    store = Store(tmp_path / "home")
    ids = [r.inspection_id for r in write(store, 150)]
    store.review(ids[:12], "Ana", "correct", defect="crack", severity="high")  # effective defect: the review's
    store.review(ids[12:30], "Ana", "correct", defect="dent")
    store.soft_delete(ids[30:40], "Ana")
    f = InspectionFilter(
        timezone="Europe/Berlin", date_from=date(2026, 3, 12), defects=("crack", "dent"), confidence_max=0.99
    )
    assert counts_source(f) == "inspections"
    every, total = store.search(f, page_size=0)
    assert total == rows_matching(store, f) == len(every) > 20
    assert not set(every["inspection_id"]) & set(ids[30:40])
    for sort, descending in (("confidence", True), ("created_at", True), ("created_at", False)):
        whole = every.sort_values([sort, "inspection_id"], ascending=not descending)["inspection_id"].tolist()
        for page in (0, 1, 3):
            rows, page_total = store.search(f, sort=sort, descending=descending, page=page, page_size=7)
            assert page_total == total
            assert rows["inspection_id"].tolist() == whole[page * 7 : page * 7 + 7], (sort, page)


def test_local_days_spelled_out_are_the_days_the_database_gives(tmp_path):
    """The Dashboard's roll-up query spells out a zone's offsets over the days it scans (counts.local_day_sql)
    instead of converting every row through the zone: every 15 minutes of two years, inside the span and on both
    sides of it, get the same local day as the database's own conversion, in zones with and without daylight
    saving, half-hour offsets and a half-hour daylight-saving shift included."""
    store = Store(tmp_path / "home")
    start, end = datetime(2025, 2, 1), datetime(2026, 12, 1)  # the span; the rows run from 2025 to 2026
    with store.connect() as con:
        for zone in (*ZONES, "Asia/Kolkata", "Australia/Lord_Howe"):
            fast = local_day_sql(zone, start, end)
            wrong, rows = con.execute(
                f"""SELECT count(*) FILTER (WHERE fast IS DISTINCT FROM slow), count(*) FROM (
                    SELECT {fast} AS fast, CAST(timezone(?, timezone('UTC', created_at)) AS DATE) AS slow
                    FROM generate_series(TIMESTAMP '2025-01-01', TIMESTAMP '2026-12-31 23:45:00', INTERVAL '15 minutes')
                        AS g(created_at)) days""",
                [zone, zone],
            ).fetchone()
            assert (wrong, rows) == (0, 730 * 96), zone
