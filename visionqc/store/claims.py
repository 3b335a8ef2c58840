"""Exactly once per image: which inspection counts for each image content (SHA-256), enforced by a key.

Ingest looks up earlier inspections before classifying, so a file seen before is not classified again;
but two runs (two ``inspect`` processes, two app sessions) can both look before either writes. The
``image_claims`` table closes that gap: its primary key is the image's SHA-256, and a chunk of new
inspections claims its images inside the transaction that writes them (:func:`claim_images`). Whichever
transaction commits first wins; the loser's copy of the image becomes a duplicate of the winner, in the
same transaction, so every file is accounted for exactly once and no image is counted twice.

Deleting an inspection does not touch its claim: a claim held by a soft-deleted inspection is free to be
taken over, which is how a deleted image may be inspected again, and restoring a deleted inspection takes
its claim back only when no visible inspection holds the image meanwhile (:func:`restorable`).

The statements are standard SQL that PostgreSQL runs as well: there ``INSERT ... ON CONFLICT DO NOTHING``
waits for a concurrent insert of the same key and the takeover ``UPDATE`` re-checks its condition on the
newest row, so the same rule holds without the retry that DuckDB's optimistic transactions need.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import duckdb


def claim_images(con: duckdb.DuckDBPyConnection, chunk: str) -> dict[int, int]:
    """Claim the image of every inspection in the registered table ``chunk`` (``inspection_id``, ``sha256``,
    ``created_at``) for that inspection; returns ``{inspection id that lost: inspection id that holds the
    image}``. Run it in the transaction that writes the chunk, and write only the winners."""
    con.execute(
        f"""INSERT INTO image_claims
        SELECT sha256, min(inspection_id), min(created_at) FROM {chunk} GROUP BY sha256 ORDER BY sha256
        ON CONFLICT DO NOTHING"""
    )
    # An image whose inspection was deleted may be inspected again: take the claim over.
    con.execute(
        f"""UPDATE image_claims SET inspection_id = c.inspection_id, claimed_at = c.created_at
        FROM (SELECT sha256, min(inspection_id) AS inspection_id, min(created_at) AS created_at
              FROM {chunk} GROUP BY sha256) c
        WHERE image_claims.sha256 = c.sha256 AND image_claims.inspection_id <> c.inspection_id
          AND image_claims.inspection_id IN (SELECT inspection_id FROM inspections WHERE deleted_at IS NOT NULL)"""
    )
    rows = con.execute(
        f"""SELECT c.inspection_id, k.inspection_id FROM {chunk} c JOIN image_claims k USING (sha256)
        WHERE k.inspection_id <> c.inspection_id"""
    ).fetchall()
    return {int(lost): int(winner) for lost, winner in rows}


def visible_holders(con: duckdb.DuckDBPyConnection, shas: Sequence[str]) -> dict[str, int]:
    """For each SHA-256 held by a visible (not deleted) inspection, that inspection's id."""
    rows = con.execute(
        """SELECT k.sha256, k.inspection_id FROM image_claims k JOIN inspections i USING (inspection_id)
        WHERE k.sha256 IN (SELECT unnest(?::VARCHAR[])) AND i.deleted_at IS NULL""",
        [sorted(set(shas))],
    ).fetchall()
    return {sha: int(i) for sha, i in rows}


def restorable(con: duckdb.DuckDBPyConnection, ids: Sequence[int]) -> set[int]:
    """Of the inspections ``ids``, those that may be visible: no other visible inspection holds their image.

    When several of them show the same image, only one may come back: the one holding the claim, else
    the earliest."""
    rows = con.execute(
        """SELECT i.inspection_id, i.sha256, k.inspection_id, holder.deleted_at IS NULL
        FROM inspections i LEFT JOIN image_claims k USING (sha256)
        LEFT JOIN inspections holder ON holder.inspection_id = k.inspection_id
        WHERE i.inspection_id IN (SELECT unnest(?::BIGINT[]))
        ORDER BY i.inspection_id""",
        [sorted({int(i) for i in ids})],
    ).fetchall()
    chosen: dict[str, int] = {}
    for inspection_id, sha, holder, holder_visible in rows:
        if holder is not None and holder != inspection_id and holder_visible:
            continue  # the image was inspected again after this inspection was deleted
        if holder == inspection_id or sha not in chosen:
            chosen[sha] = inspection_id
    return set(chosen.values())


def take_claims(con: duckdb.DuckDBPyConnection, ids: Sequence[int], now: datetime) -> None:
    """Make the (restored) inspections ``ids`` hold their images; :func:`restorable` chose them."""
    id_list = sorted({int(i) for i in ids})
    con.execute(
        """INSERT INTO image_claims SELECT sha256, inspection_id, ? FROM inspections
        WHERE inspection_id IN (SELECT unnest(?::BIGINT[])) ON CONFLICT DO NOTHING""",
        [now, id_list],
    )
    con.execute(
        """UPDATE image_claims SET inspection_id = i.inspection_id, claimed_at = ?
        FROM inspections i
        WHERE i.inspection_id IN (SELECT unnest(?::BIGINT[])) AND image_claims.sha256 = i.sha256
          AND image_claims.inspection_id <> i.inspection_id""",
        [now, id_list],
    )
