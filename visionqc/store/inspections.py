"""Reading inspections: History pages, counts, one inspection in detail, embeddings, filter options, the
Explore map sample, the review queue and the CSV export. Every selection goes through :func:`build_where`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from visionqc.csvfile import write_csv
from visionqc.filters import InspectionFilter
from visionqc.labels import is_missing
from visionqc.store import counts
from visionqc.store.query import DISTINCT_COLUMNS, EXPORT_COLUMNS, build_where, clean_tags, order_by, rows_sql

EXPORT_CHUNK_ROWS = 50_000


class InspectionsMixin:
    """The read side of :class:`~visionqc.store.Store` (needs ``connect`` and ``home``)."""

    def count(self, f: InspectionFilter = InspectionFilter()) -> int:
        """How many inspections match ``f``: from the Dashboard's roll-up when it answers ``f`` exactly
        (:func:`visionqc.store.counts.source_for`), else counted over the rows."""
        where, params = build_where(f)
        with self.connect() as con:
            return _total(con, f, where, params)

    def search(
        self,
        f: InspectionFilter = InspectionFilter(),
        sort: str = "created_at",
        descending: bool = True,
        page: int = 0,
        page_size: int = 50,
    ) -> tuple[pd.DataFrame, int]:
        """One page of matching inspections and the total number of matches.

        ``page`` counts from 0; ``page_size=0`` returns every match. Only the page's rows leave DuckDB.
        Besides the ``inspection_view`` columns, each row has ``station``, ``operator``, ``tags`` (a sorted
        list), ``image_file`` and ``thumb_file`` (absolute paths as strings).
        """
        where, params = build_where(f)
        order = order_by(sort, descending)
        row_order = order_by(sort, descending, prefix="v.")
        with self.connect() as con:
            total = _known_total(con, f)
            page_sql = f"SELECT inspection_id FROM inspection_view_all WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"
            postgres = getattr(con, "engine", "duckdb") == "postgresql"
            if total is None and page_size > 0 and postgres and not _plain(f) and not f.defects:
                # PostgreSQL, a narrowing filter no index serves: its matches once, counted and sorted in the same
                # pass (not a count, then a sort); materialised, so PostgreSQL does not walk the newest-first
                # index (migration 10) looking for a few matches among a million rows. A defect filter is read
                # from its own index (migration 12): there a count and a page, each from the index, cost less.
                picked = "inspection_id" if sort == "inspection_id" else f"inspection_id, {sort}"
                page_sql = (
                    f"WITH matches AS MATERIALIZED (SELECT {picked} FROM inspection_view_all WHERE {where}) "
                    f"SELECT inspection_id, count(*) OVER () FROM matches ORDER BY {order} LIMIT ? OFFSET ?"
                )
            elif total is None:
                total = _count(con, where, params)
            if page_size > 0:
                # Sort only ids first, then fetch the page's full rows by id: only one page is materialised.
                found = con.execute(page_sql, [*params, int(page_size), int(page) * int(page_size)]).fetchall()
                ids = [r[0] for r in found]
                if total is None:  # a page past the end has no row to carry the total
                    total = int(found[0][1]) if found else _count(con, where, params)
                by_id = "inspection_id IN (SELECT unnest(?::BIGINT[]))"
                rows = con.execute(rows_sql(by_id, by_id, row_order), [ids, ids]).df()
            else:
                rows = con.execute(rows_sql(where, "TRUE", row_order), params).df()
        for column in ("image_file", "thumb_file"):
            rows[column] = [None if v is None or pd.isna(v) else str(self.home / v) for v in rows[column]]
        return rows, total

    def inspection_ids(self, f: InspectionFilter = InspectionFilter()) -> list[int]:
        """The ids of every inspection matching ``f``, ascending: what a bulk action fixes as its selection (only
        the ids leave the database, not the rows a History page shows)."""
        where, params = build_where(f)
        with self.connect() as con:
            rows = con.execute(
                f"SELECT inspection_id FROM inspection_view_all WHERE {where} ORDER BY inspection_id", params
            ).fetchall()
        return [int(r[0]) for r in rows]

    def inspection_detail(self, inspection_id: int) -> dict[str, Any] | None:
        """Everything about one inspection: effective and predicted labels, probabilities per task,
        image and thumbnail paths, batch, tags, review history (oldest first) and later duplicates."""
        with self.connect() as con:
            df = con.execute(
                """SELECT v.*, b.station, b.operator, b.note AS batch_note, im.path AS image_file,
                    im.thumb_path AS thumb_file, im.width, im.height, im.format, im.byte_size
                FROM inspection_view_all v LEFT JOIN batches b USING (batch_id) LEFT JOIN images im USING (sha256)
                WHERE v.inspection_id = ?""",
                [int(inspection_id)],
            ).df()
            if df.empty:
                return None
            reviews = con.execute(
                "SELECT review_id, created_at, reviewer, kind, defect, severity, location, action, note, previous, "
                "unusable_reason "
                "FROM reviews WHERE inspection_id = ? ORDER BY review_id",
                [int(inspection_id)],
            ).df()
            tags = [
                r[0]
                for r in con.execute(
                    "SELECT tag FROM tags WHERE inspection_id = ? ORDER BY tag", [int(inspection_id)]
                ).fetchall()
            ]
            duplicates = con.execute(
                "SELECT batch_id, file_name, created_at FROM duplicates WHERE inspection_id = ? ORDER BY duplicate_id",
                [int(inspection_id)],
            ).df()
        detail = {k: (None if is_missing(v) else v) for k, v in df.iloc[0].to_dict().items()}
        detail["probabilities"] = json.loads(detail["probabilities"]) if detail.get("probabilities") else {}
        detail["image_file"] = self.absolute(detail.get("image_file"))
        detail["thumb_file"] = self.absolute(detail.get("thumb_file"))
        reviews["previous"] = [json.loads(p) if isinstance(p, str) else None for p in reviews["previous"]]
        detail["reviews"] = reviews
        detail["tags"] = tags
        detail["duplicates"] = duplicates
        return detail

    def embeddings(
        self, f: InspectionFilter = InspectionFilter(), limit: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(inspection_ids, vectors float32 [n, d])`` of matching inspections, oldest first."""
        where, params = build_where(f)
        sql = (
            "SELECT e.inspection_id, e.vector FROM embeddings e JOIN inspection_view_all v USING (inspection_id) "
            f"WHERE {where} ORDER BY e.inspection_id"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params = [*params, int(limit)]
        with self.connect() as con:
            table = con.sql(sql, params=params).to_arrow_table()
        return table.column("inspection_id").to_numpy(), _vectors(table)

    def distinct_values(self, column: str) -> list[Any]:
        """Sorted distinct non-null values of a filterable column (for filter options)."""
        return self.filter_values((column,))[column]

    def filter_values(self, columns: Sequence[str] | None = None) -> dict[str, list[Any]]:
        """:meth:`distinct_values` of each of ``columns`` (default: every filterable column), the inspections'
        labels read together (a page's filters ask for them all: one query, not one scan each).

        The inspections' values come from the roll-up (:mod:`visionqc.store.counts`: the visible inspections
        counted by those values, kept exact by every write) plus the few second opinions it leaves out, never
        from the rows: on PostgreSQL a scan of a million rows took ~0.5 s per column, paid again after any
        write by any station."""
        columns = list(DISTINCT_COLUMNS) if columns is None else list(dict.fromkeys(columns))
        for column in columns:
            if column not in DISTINCT_COLUMNS:
                raise ValueError(f"no filter options for {column!r}; choose one of {', '.join(DISTINCT_COLUMNS)}")
        labels = [c for c in columns if DISTINCT_COLUMNS[c][1] == "inspection_view"]
        found: dict[str, list[Any]] = {c: [] for c in columns}
        with self.connect() as con:
            if labels:
                dims = ", ".join(LABEL_DIMENSIONS)
                each = " UNION ALL ".join(
                    f"SELECT '{c}', {DISTINCT_COLUMNS[c][0]} FROM combos WHERE {DISTINCT_COLUMNS[c][0]} IS NOT NULL "
                    f"GROUP BY 2"
                    for c in labels
                )
                rows = con.execute(
                    f"""WITH combos AS (
                        SELECT {dims} FROM {counts.TABLE} WHERE n > 0 GROUP BY {dims}
                        UNION SELECT {dims} FROM inspection_view WHERE second_opinion
                    ) {each}"""
                ).fetchall()
                for column, value in rows:
                    found[column].append(value)
            for column in columns:
                if column not in labels:
                    name, table = DISTINCT_COLUMNS[column]
                    found[column] = [
                        r[0]
                        for r in con.execute(f"SELECT DISTINCT {name} FROM {table} WHERE {name} IS NOT NULL").fetchall()
                    ]
        return {column: sorted(values) for column, values in found.items()}

    def export_csv(
        self,
        f: InspectionFilter = InspectionFilter(),
        path: str | Path | None = None,
        sort: str = "created_at",
        descending: bool = True,
    ) -> bytes | Path:
        """Every matching row as CSV through the one writer (:func:`visionqc.csvfile.write_csv`): the batch's
        station, operator, note, part number and lot, effective and reviewed labels, confidences to 4 places,
        times in ISO 8601 in the filter's time zone. Returns the bytes, or writes ``path`` and returns it.
        Tags are joined with ``;``. Rows leave DuckDB in chunks, so a million-row export streams."""
        where, params = build_where(f)
        columns = ", ".join(f"{table}.{c}" for table, c in EXPORT_COLUMNS)
        order = order_by(sort, descending, prefix="v.")
        query = f"""SELECT {columns},
                coalesce(array_to_string(tg.tags, ';'), '') AS tags
            FROM (SELECT * FROM inspection_view_all WHERE {where}) v
            LEFT JOIN batches b ON b.batch_id = v.batch_id
            LEFT JOIN (SELECT inspection_id, array_agg(tag ORDER BY tag) AS tags FROM tags GROUP BY inspection_id) tg
                ON tg.inspection_id = v.inspection_id
            ORDER BY {order}"""
        names = [name for _, name in EXPORT_COLUMNS] + ["tags"]
        with self.connect() as con:
            reader = con.sql(query, params=params).to_arrow_reader(EXPORT_CHUNK_ROWS)
            chunks = (batch.to_pandas() for batch in reader)
            return write_csv(chunks, path, timezone=f.timezone, columns=names)

    def report_summary(self, f: InspectionFilter) -> dict[str, Any]:
        """What a lot report's header and counts need, for the inspections of ``f``: counts by action and the
        photos marked unusable (counted apart), open reviews, the batches, stations, operators, part numbers,
        lots and models involved, and the first and last inspection time (naive UTC)."""
        where, params = build_where(f)
        scope = f"(SELECT * FROM inspection_view_all WHERE {where}) v LEFT JOIN batches b ON b.batch_id = v.batch_id"
        # array_agg, not DuckDB's list: PostgreSQL has no list aggregate, and a DISTINCT aggregate there orders
        # only by its own argument (not by position).
        model = "(v.model_name || ' ' || v.model_version)"
        with self.connect() as con:
            by_action = con.execute(
                f"SELECT v.action, count(*) FROM {scope} WHERE NOT v.unusable GROUP BY 1 ORDER BY 1", params
            ).fetchall()
            row = con.execute(
                f"""SELECT count(*) FILTER (WHERE NOT v.unusable), count(*) FILTER (WHERE v.unusable),
                    count(*) FILTER (WHERE NOT v.unusable AND v.needs_review AND NOT v.reviewed),
                    count(*) FILTER (WHERE v.reviewed AND NOT v.unusable),
                    min(v.created_at), max(v.created_at),
                    array_agg(DISTINCT v.batch_id ORDER BY v.batch_id),
                    array_agg(DISTINCT b.station ORDER BY b.station) FILTER (WHERE b.station IS NOT NULL),
                    array_agg(DISTINCT b.operator ORDER BY b.operator) FILTER (WHERE b.operator IS NOT NULL),
                    array_agg(DISTINCT b.part_number ORDER BY b.part_number) FILTER (WHERE b.part_number IS NOT NULL),
                    array_agg(DISTINCT b.lot ORDER BY b.lot) FILTER (WHERE b.lot IS NOT NULL),
                    array_agg(DISTINCT {model} ORDER BY {model}) FILTER (WHERE v.model_name IS NOT NULL),
                    array_agg(DISTINCT b.note ORDER BY b.note) FILTER (WHERE b.note IS NOT NULL)
                FROM {scope}""",
                params,
            ).fetchone()
        keys = ("batches", "stations", "operators", "part_numbers", "lots", "models", "notes")
        return {
            "inspected": int(row[0]),
            "unusable": int(row[1]),
            "open_reviews": int(row[2]),
            "reviewed": int(row[3]),
            "first_at": row[4],
            "last_at": row[5],
            "by_action": {str(a) if a is not None else "—": int(n) for a, n in by_action},
            **{k: list(v or []) for k, v in zip(keys, row[6:], strict=True)},
        }

    # --- Explore and the review queue -----------------------------------------------------------------
    def map_points(self, f: InspectionFilter, max_points: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, int]:
        """A deterministic sample of at most ``max_points`` matching inspections with their embeddings.

        Returns ``(rows DataFrame with MAP_COLUMNS + thumb_file, vectors float32 [n, d], total matches)``.
        The sample is "the rows with the smallest hash(id + seed)" (Knuth's multiplicative hash, plain integer
        arithmetic both engines compute alike; it spreads consecutive ids evenly over the range): stable as new
        rows arrive, and it never loads more than ``max_points`` embeddings however large the store is.
        """
        where, params = build_where(f)
        columns = ", ".join(f"v.{c}" for c in MAP_COLUMNS)
        sql = f"""
            WITH chosen AS (
                SELECT inspection_id, sha256 FROM inspection_view_all WHERE {where}
                ORDER BY ((inspection_id + ?) * 2654435761) % 4294967296, inspection_id LIMIT ?
            )
            SELECT {columns}, im.thumb_path AS thumb_file, e.vector
            FROM chosen c
            JOIN inspection_view_all v ON v.inspection_id = c.inspection_id
            JOIN embeddings e ON e.inspection_id = c.inspection_id
            LEFT JOIN images im ON im.sha256 = c.sha256
            ORDER BY v.inspection_id"""
        with self.connect() as con:
            total = _count(con, where, params)
            table = con.sql(sql, params=[*params, int(seed), int(max_points)]).to_arrow_table()
        rows = table.drop(["vector"]).to_pandas()
        vectors = _vectors(table)
        rows["thumb_file"] = [None if not isinstance(v, str) else str(self.absolute(v)) for v in rows["thumb_file"]]
        return rows, vectors, total

    def defects_of(self, f: InspectionFilter) -> pd.DataFrame:
        """``inspection_id`` and effective ``defect`` of every matching inspection, oldest first."""
        where, params = build_where(f)
        with self.connect() as con:
            return con.execute(
                f"SELECT inspection_id, defect FROM inspection_view_all WHERE {where} ORDER BY inspection_id", params
            ).df()

    def review_queue(
        self, f: InspectionFilter, confidence_below: float = 0.6, skip: Sequence[int] = (), limit: int = 1
    ) -> tuple[list[int], int]:
        """Inspections waiting for a person, most uncertain first -> (the next ``limit`` ids, how many wait).

        Waiting = not yet reviewed, not a re-inspection's second opinion (its image is counted by the inspection
        holding it), and flagged needs-review or with defect confidence under ``confidence_below``. Ordered by
        confidence, lowest first; ids in ``skip`` (skipped this session) are left out of the ids but still counted.
        """
        where, params = build_where(f)
        waiting = f"({where}) AND NOT reviewed AND NOT second_opinion AND (needs_review OR confidence < ?)"
        params = [*params, float(confidence_below)]
        with self.connect() as con:
            total = _count(con, waiting, params)
            ids = [
                int(r[0])
                for r in con.execute(
                    f"SELECT inspection_id FROM inspection_view_all WHERE {waiting} "
                    "AND inspection_id NOT IN (SELECT unnest(?::BIGINT[])) "
                    "ORDER BY confidence ASC NULLS FIRST, inspection_id LIMIT ?",
                    [*params, [int(i) for i in skip], int(limit)],
                ).fetchall()
            ]
        return ids, total


# Columns of the Explore map sample (besides the thumbnail path).
MAP_COLUMNS = (
    "inspection_id",
    "file_name",
    "created_at",
    "batch_id",
    "defect",
    "severity",
    "action",
    "confidence",
    "needs_review",
    "reviewed",
    "outlier_score",
    "ood_score",
)


def _plain(f: InspectionFilter) -> bool:
    """Whether ``f`` keeps every row of some days (no condition on a row's values): most rows match."""
    return set(f.changed_fields()) <= {"date_from", "date_to", "timezone", "deleted"}


def _rollup_total(con, f: InspectionFilter) -> int | None:
    """How many inspections match ``f``, read from the roll-up (:mod:`visionqc.store.counts`) when it answers
    every condition of ``f`` exactly and ``f`` has no defect condition (on PostgreSQL an index answers that
    faster; on DuckDB both take a few ms); else None. Exact: every write changes the roll-up in its own transaction,
    so one statement sees both as of the same commit. A few hundred thousand narrow rows at most, where a count
    over the rows reads a million wide ones (PostgreSQL reads every column of the rows it scans)."""
    if f.defects or counts.source_for(f) != "counts":  # a defect filter: counted from its index (migration 12)
        return None
    source = counts.Source("counts")
    where, params = source.condition(f)
    # The roll-up counts each image once; History also shows a re-inspection's second opinions (migration 11):
    # those the filter matches are added, counted over their few rows (a partial index on PostgreSQL).
    row_where, row_params = build_where(f)
    return int(
        con.execute(
            f"SELECT (SELECT {source.tally()} FROM {source.relation} WHERE {where}) + "
            f"(SELECT count(*) FROM inspection_view_all WHERE second_opinion AND ({row_where}))",
            [*params, *row_params],
        ).fetchall()[0][0]
    )


# The inspections' columns their filter options are made of (DISTINCT_COLUMNS over inspection_view), all on the roll-up.
LABEL_DIMENSIONS = ("defect", "severity", "location", "action", "model_name", "model_version")
TAG_FIELDS = {"tags_all", "tags_any", "tags_none"}
DELETED_IDS = "(SELECT inspection_id FROM inspections WHERE deleted_at IS NOT NULL)"


def _tag_total(con, f: InspectionFilter) -> int | None:
    """How many inspections match ``f`` when it narrows by tags alone, counted from the tags and the few
    soft-deleted inspections (indexes of their own on PostgreSQL, migration 13); else None. A count over the rows
    would read every matching inspection for its ``deleted_at`` (half a second for 50,000 tagged ones of a million
    on PostgreSQL). The tag conditions are History's own (:func:`build_where`), applied to the ids from the tags."""
    changed = set(f.changed_fields())
    if not changed & TAG_FIELDS or not changed <= TAG_FIELDS | {"deleted", "timezone"}:
        return None
    shown = {"hide": f" AND inspection_id NOT IN {DELETED_IDS}", "only": f" AND inspection_id IN {DELETED_IDS}"}

    def carrying(tags: list[str], where: str = "TRUE", params: Sequence[Any] = ()) -> int:
        """How many inspections ``f`` shows carry one of ``tags`` and meet ``where``."""
        sql = (
            "SELECT count(*) FROM (SELECT DISTINCT inspection_id FROM tags WHERE tag = ANY(?::VARCHAR[])) c "
            f"WHERE {where}{shown.get(f.deleted, '')}"
        )
        return int(con.execute(sql, [tags, *params]).fetchall()[0][0])

    if tags := clean_tags([*f.tags_all, *f.tags_any]):  # every match carries one of these
        return carrying(tags, *build_where(replace(f, deleted="all")))  # deleted="all": the tag conditions alone
    # "None of" alone: every shown inspection but those carrying one of the tags.
    rest = _rollup_total(con, InspectionFilter(deleted=f.deleted, timezone=f.timezone))
    return None if rest is None else rest - carrying(clean_tags(f.tags_none))


def _known_total(con, f: InspectionFilter) -> int | None:
    """How many inspections match ``f`` without counting its rows: from the roll-up or the tags; else None."""
    total = _rollup_total(con, f)
    return _tag_total(con, f) if total is None else total


def _total(con, f: InspectionFilter, where: str, params: list) -> int:
    """How many inspections match ``f`` (``where``, ``params``: its clause): without counting rows when possible."""
    total = _known_total(con, f)
    return _count(con, where, params) if total is None else total


def _count(con, where: str, params: list) -> int:
    """How many inspections match a WHERE clause (the result is fully read, so the connection can go on)."""
    return int(con.execute(f"SELECT count(*) FROM inspection_view_all WHERE {where}", params).fetchall()[0][0])


def _vectors(table) -> np.ndarray:
    """The ``vector`` list column of an Arrow table as float32 [rows, d] (zero rows: [0, 0])."""
    if table.num_rows == 0:
        return np.zeros((0, 0), dtype=np.float32)
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.float32, copy=False).reshape(table.num_rows, -1)
