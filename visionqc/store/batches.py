"""Batches: creating one, writing its chunks of inspections, duplicates and failures, and reading it back."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from visionqc.filters import InspectionFilter
from visionqc.store import counts
from visionqc.store.claims import claim_images, visible_holders
from visionqc.store.records import (
    DUPLICATE_SCHEMA,
    EMBEDDING_SCHEMA,
    FAILURE_SCHEMA,
    IMAGE_SCHEMA,
    INSPECTION_SCHEMA,
    DuplicateRecord,
    FailureRecord,
    InspectionRecord,
    arrow_table,
    utc_now,
)


class BatchesMixin:
    """The batch part of :class:`~visionqc.store.Store` (needs ``connect``, ``_write`` and ``search``)."""

    def create_batch(
        self,
        *,
        station: str | None,
        operator: str | None,
        note: str | None,
        source: str,
        model_name: str | None,
        model_version: str | None,
        batch_id: str | None = None,
        part_number: str | None = None,
        lot: str | None = None,
    ) -> str:
        if source not in ("app", "cli"):
            raise ValueError(f"source must be 'app' or 'cli', not {source!r}")
        now = utc_now()
        batch_id = batch_id or f"{now:%Y%m%d-%H%M%S}-{os.urandom(3).hex()}"

        def work(con: duckdb.DuckDBPyConnection) -> str:
            con.execute(
                "INSERT INTO batches (batch_id, created_at, station, operator, note, source, model_name, "
                "model_version, status, part_number, lot) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?)",
                [
                    *(batch_id, now, station or None, operator or None, note or None, source),
                    *(model_name, model_version, part_number or None, lot or None),
                ],
            )
            return batch_id

        return self._write(work)

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        with self.connect() as con:
            df = con.execute("SELECT * FROM batches WHERE batch_id = ?", [batch_id]).df()
        return None if df.empty else df.iloc[0].to_dict()

    def recorded_names(self, batch_id: str) -> set[str]:
        """File names the batch already holds (inspected, duplicate or failed): skipped when resuming."""
        with self.connect() as con:
            rows = con.execute(
                "SELECT file_name FROM inspections WHERE batch_id = ? UNION "
                "SELECT file_name FROM duplicates WHERE batch_id = ? UNION "
                "SELECT file_name FROM failures WHERE batch_id = ?",
                [batch_id, batch_id, batch_id],
            ).fetchall()
        return {r[0] for r in rows}

    def earlier_inspections(self, shas: Sequence[str]) -> dict[str, int]:
        """For each SHA-256 already inspected (and not deleted), the inspection that counts for it.

        A look-up to save classifying known images again; :meth:`write_chunk` is what guarantees it."""
        if not shas:
            return {}
        with self.connect() as con:
            return visible_holders(con, shas)

    def reserve_inspection_ids(self, count: int) -> list[int]:
        """Take ``count`` ids from the sequence (ids of a crashed chunk are simply never used)."""
        if count <= 0:
            return []
        return self._write(
            lambda con: [
                int(r[0])
                for r in con.execute("SELECT nextval('inspection_seq') FROM generate_series(1, ?)", [count]).fetchall()
            ]
        )

    def write_chunk(
        self,
        batch_id: str,
        inspections: Sequence[InspectionRecord] = (),
        duplicates: Sequence[DuplicateRecord] = (),
        failures: Sequence[FailureRecord] = (),
        *,
        second_opinion: bool = False,
    ) -> dict[int, int]:
        """Write one chunk of a batch in a single transaction: all of it lands, or none of it.

        Each inspection claims its image (:func:`~visionqc.store.claims.claim_images`). One whose image another
        inspection holds (another run wrote it first) is written as a duplicate of that inspection instead,
        and so is every duplicate of the chunk that pointed at it. Returns ``{inspection id written as a
        duplicate: the inspection holding its image}``.

        A ``second_opinion`` chunk (a re-inspection: images already inspected, classified again on purpose by
        another model version, in a batch of its own) claims nothing: its inspections are written beside the
        ones holding their images, which stay as they are, and marked ``second_opinion``. History shows them;
        the Dashboard and the review queue count each image once, so they leave them out.

        The written inspections (but second opinions) are counted into the Dashboard's roll-up
        (:mod:`~visionqc.store.counts`) in the same transaction.
        """
        if not (inspections or duplicates or failures):
            return {}
        images = list({r.sha256: r for r in reversed(inspections)}.values())  # first record of each SHA-256
        image_table = arrow_table(IMAGE_SCHEMA, images, first_seen=[r.created_at for r in images])
        inspection_table = arrow_table(
            INSPECTION_SCHEMA,
            inspections,
            batch_id=[batch_id] * len(inspections),
            probabilities=[json.dumps(r.probabilities) for r in inspections],
        )
        embedding_table = arrow_table(
            EMBEDDING_SCHEMA, inspections, vector=[np.asarray(r.embedding, dtype=np.float32) for r in inspections]
        )
        failure_table = arrow_table(FAILURE_SCHEMA, failures)

        def work(con: duckdb.DuckDBPyConnection) -> dict[int, int]:
            con.register("chunk_images", image_table)
            con.register("chunk_inspections", inspection_table)
            con.register("chunk_embeddings", embedding_table)
            con.register("chunk_failures", failure_table)
            lost = {} if second_opinion else claim_images(con, "chunk_inspections")
            con.execute("INSERT INTO images SELECT * FROM chunk_images ON CONFLICT DO NOTHING")
            columns = ", ".join(INSPECTION_SCHEMA.names)
            con.execute(
                f"INSERT INTO inspections ({columns}) SELECT {columns} FROM chunk_inspections "
                "WHERE inspection_id NOT IN (SELECT unnest(?::BIGINT[]))",
                [list(lost)],
            )
            if second_opinion:
                con.execute(
                    "UPDATE inspections SET second_opinion = true "
                    "WHERE inspection_id IN (SELECT inspection_id FROM chunk_inspections)"
                )
            counts.count(con, [r.inspection_id for r in inspections if r.inspection_id not in lost])
            con.execute(
                "INSERT INTO embeddings SELECT * FROM chunk_embeddings "
                "WHERE inspection_id NOT IN (SELECT unnest(?::BIGINT[]))",
                [list(lost)],
            )
            # The chunk's duplicates (pointing at the winner where theirs lost), then the inspections that lost.
            recorded = [
                DuplicateRecord(d.file_name, d.sha256, lost.get(d.inspection_id, d.inspection_id), d.created_at)
                for d in duplicates
            ]
            recorded += [
                DuplicateRecord(r.file_name, r.sha256, lost[r.inspection_id], r.created_at)
                for r in inspections
                if r.inspection_id in lost
            ]
            con.register("chunk_duplicates", arrow_table(DUPLICATE_SCHEMA, recorded))
            con.execute(
                "INSERT INTO duplicates SELECT nextval('duplicate_seq'), ?, file_name, sha256, inspection_id, "
                "created_at FROM chunk_duplicates",
                [batch_id],
            )
            con.execute(
                "INSERT INTO failures SELECT nextval('failure_seq'), ?, file_name, reason, created_at "
                "FROM chunk_failures",
                [batch_id],
            )
            return lost

        return self._write(work)

    def finish_batch(self, batch_id: str) -> None:
        self._write(
            lambda con: con.execute(
                "UPDATE batches SET status = 'complete', finished_at = ? WHERE batch_id = ?", [utc_now(), batch_id]
            )
        )

    # --- batches --------------------------------------------------------------------------------
    def list_batches(self) -> pd.DataFrame:
        """Every batch, newest first, with its counts."""
        with self.connect() as con:
            return con.execute(
                """SELECT b.*,
                    (SELECT count(*) FROM inspection_view i WHERE i.batch_id = b.batch_id) AS inspected,
                    (SELECT count(*) FROM duplicates d WHERE d.batch_id = b.batch_id) AS duplicates,
                    (SELECT count(*) FROM failures f WHERE f.batch_id = b.batch_id) AS failures
                FROM batches b ORDER BY b.created_at DESC"""
            ).df()

    def batch_rows(self, batch_id: str) -> pd.DataFrame:
        """The batch's inspections (effective labels), in the order they were inspected."""
        rows, _ = self.search(
            InspectionFilter(batches=(batch_id,)), sort="inspection_id", descending=False, page_size=0
        )
        return rows

    def batch_failures(self, batch_id: str) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(
                "SELECT file_name, reason, created_at FROM failures WHERE batch_id = ? ORDER BY failure_id",
                [batch_id],
            ).df()

    def batch_duplicates(self, batch_id: str) -> pd.DataFrame:
        """Files of the batch whose bytes were inspected before, with the earlier inspection."""
        with self.connect() as con:
            return con.execute(
                """SELECT d.file_name, d.sha256, d.inspection_id AS earlier_inspection_id,
                    i.file_name AS earlier_file_name, i.batch_id AS earlier_batch_id, i.created_at AS earlier_at
                FROM duplicates d LEFT JOIN inspections i USING (inspection_id)
                WHERE d.batch_id = ? ORDER BY d.duplicate_id""",
                [batch_id],
            ).df()

    def batch_summary(self, batch_id: str) -> dict[str, Any]:
        """Counts for the batch summary: by action (effective), needs review, duplicates, failures, and the
        photos marked unusable (counted on their own, in no other number)."""
        with self.connect() as con:
            by_action = dict(
                con.execute(
                    "SELECT action, count(*) FROM inspection_view WHERE batch_id = ? AND NOT unusable "
                    "GROUP BY action ORDER BY action",
                    [batch_id],
                ).fetchall()
            )
            needs_review, inspected, unusable = con.execute(
                "SELECT count(*) FILTER (WHERE needs_review AND NOT unusable), count(*) FILTER (WHERE NOT unusable), "
                "count(*) FILTER (WHERE unusable) FROM inspection_view WHERE batch_id = ?",
                [batch_id],
            ).fetchone()
            duplicates = con.execute("SELECT count(*) FROM duplicates WHERE batch_id = ?", [batch_id]).fetchone()[0]
            failures = con.execute("SELECT count(*) FROM failures WHERE batch_id = ?", [batch_id]).fetchone()[0]
        return {
            "inspected": int(inspected),
            "by_action": {k: int(v) for k, v in by_action.items()},
            "needs_review": int(needs_review),
            "unusable": int(unusable),
            "duplicates": int(duplicates),
            "failures": int(failures),
        }

    def batch_csv(self, batch_id: str, path: str | Path | None = None, timezone: str = "UTC") -> bytes | Path:
        return self.export_csv(
            InspectionFilter(batches=(batch_id,), timezone=timezone), path=path, sort="inspection_id", descending=False
        )
