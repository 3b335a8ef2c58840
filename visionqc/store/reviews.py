"""Writing what people decide: reviews (the append-only audit trail), tags, and Explore's scores."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from visionqc.actions import ActionPolicy, check_action
from visionqc.store import counts
from visionqc.store.claims import restorable, take_claims
from visionqc.store.query import clean_tags
from visionqc.store.records import utc_now

REVIEW_KINDS = ("correct", "confirm", "unusable", "delete", "restore")


class ReviewsMixin:
    """The review and tag part of :class:`~visionqc.store.Store` (needs ``connect`` and ``_write``)."""

    def review(
        self,
        ids: Iterable[int],
        reviewer: str,
        kind: str,
        *,
        defect: Any = ...,
        severity: Any = ...,
        location: Any = ...,
        action: str | None = None,
        note: str | None = None,
        reason: str | None = None,
        policy: ActionPolicy | None = None,
    ) -> int:
        """Record a review of each inspection in ``ids``; returns how many rows it changed.

        ``kind``: ``"correct"`` sets the labels given (a label left out keeps its effective value;
        ``None`` clears it; correcting to the no-defect class clears severity and location);
        ``"confirm"`` accepts the effective labels (this is "mark reviewed"; a photo marked unusable stays so);
        ``"unusable"`` marks "not a part / unusable image" with ``reason`` (e.g. "not our part"): its labels
        and action are cleared and it leaves every quality figure, until a ``"correct"`` gives it labels
        again; ``"delete"`` soft-deletes; ``"restore"`` undoes a soft delete (not for an inspection whose image
        was inspected again after the deletion: it stays deleted, so the image is counted once). Every review is
        appended to ``reviews`` with the labels before it (``previous``); the prediction columns are never
        changed. When ``action`` is not
        given and the labels changed (or the row was waiting for review), the action is derived by
        ``policy`` (default :class:`visionqc.actions.ActionPolicy`).
        """
        if kind not in REVIEW_KINDS:
            raise ValueError(f"review kind must be one of {', '.join(REVIEW_KINDS)}, not {kind!r}")
        reviewer = (reviewer or "").strip()
        if not reviewer:
            raise ValueError("a review needs the reviewer's name")
        if action is not None:
            check_action(action)
        reason = (reason or "").strip() or None
        if kind == "unusable" and reason is None:
            raise ValueError("say why the image is unusable (e.g. not our part, blurred, empty)")
        id_list = sorted({int(i) for i in ids})
        if not id_list:
            return 0
        change = _Change(kind, defect, severity, location, action, policy or ActionPolicy(), reason)
        now = utc_now()

        def work(con: duckdb.DuckDBPyConnection) -> int:
            counts.lock(con, id_list)  # what is read next decides the audit trail and the roll-up's change
            current = con.execute(
                "SELECT inspection_id, no_defect_label, defect, severity, location, action, reviewed_by, "
                "reviewed_at, deleted_at, unusable_reason FROM inspection_view_all WHERE inspection_id IN "
                "(SELECT unnest(?::BIGINT[])) ORDER BY inspection_id",
                [id_list],
            ).fetchall()
            if kind == "restore":  # an image inspected again after the deletion stays counted once
                allowed = restorable(con, id_list)
                current = [row for row in current if row[0] in allowed]
            reviews = [r for r in (change.apply(row) for row in current) if r is not None]
            if not reviews:
                return 0
            con.register("review_rows", _review_table(reviews))
            con.execute(
                "INSERT INTO reviews (review_id, inspection_id, created_at, reviewer, kind, defect, severity, "
                "location, action, note, previous, unusable_reason) SELECT nextval('review_seq'), inspection_id, "
                "?, ?, kind, defect, severity, location, action, ?, previous, unusable_reason FROM review_rows "
                "ORDER BY inspection_id",
                [now, reviewer, note or None],
            )
            changed_ids = [r[0] for r in reviews]
            # The Dashboard's roll-up: out with the old values, in with the new.
            with counts.recounting(con, changed_ids):
                if kind in ("correct", "confirm", "unusable"):
                    con.execute(
                        """UPDATE inspections SET rev_defect = r.defect, rev_severity = r.severity,
                            rev_location = r.location, rev_action = r.action, reviewed_at = ?, reviewed_by = ?,
                            unusable_reason = r.unusable_reason
                        FROM review_rows r WHERE inspections.inspection_id = r.inspection_id""",
                        [now, reviewer],
                    )
                else:
                    con.execute(
                        "UPDATE inspections SET deleted_at = ? WHERE inspection_id IN (SELECT unnest(?::BIGINT[]))",
                        [now if kind == "delete" else None, changed_ids],
                    )
                    if kind == "restore":
                        take_claims(con, changed_ids, now)
            return len(reviews)

        return self._write(work)

    def mark_unusable(self, ids: Iterable[int], reviewer: str, reason: str, note: str | None = None) -> int:
        """ "Not a part / unusable image": the photos leave every quality figure; the audit trail keeps why."""
        return self.review(ids, reviewer, "unusable", reason=reason, note=note)

    def mark_reviewed(self, ids: Iterable[int], reviewer: str, note: str | None = None) -> int:
        return self.review(ids, reviewer, "confirm", note=note)

    def soft_delete(self, ids: Iterable[int], reviewer: str, note: str | None = None) -> int:
        """Hide rows from every view; recorded in the audit trail and undone by :meth:`restore`."""
        return self.review(ids, reviewer, "delete", note=note)

    def restore(self, ids: Iterable[int], reviewer: str, note: str | None = None) -> int:
        return self.review(ids, reviewer, "restore", note=note)

    def review_history(self, inspection_id: int) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(
                "SELECT * FROM reviews WHERE inspection_id = ? ORDER BY review_id", [int(inspection_id)]
            ).df()

    # --- tags -----------------------------------------------------------------------------------
    def add_tags(self, ids: Iterable[int], tags: Iterable[str]) -> int:
        """Tag every inspection in ``ids`` with every tag; returns the number of new (row, tag) pairs."""
        id_list = sorted({int(i) for i in ids})
        tag_list = clean_tags(tags)
        if not id_list or not tag_list:
            return 0

        def work(con: duckdb.DuckDBPyConnection) -> int:
            before = con.execute("SELECT count(*) FROM tags").fetchone()[0]
            con.execute(
                """INSERT INTO tags (inspection_id, tag, created_at)
                SELECT i.id, t.tag, ? FROM (SELECT unnest(?::BIGINT[]) AS id) i, (SELECT unnest(?::VARCHAR[]) AS tag) t
                WHERE i.id IN (SELECT inspection_id FROM inspections)
                ON CONFLICT DO NOTHING""",
                [utc_now(), id_list, tag_list],
            )
            return int(con.execute("SELECT count(*) FROM tags").fetchone()[0] - before)

        return self._write(work)

    def remove_tags(self, ids: Iterable[int], tags: Iterable[str]) -> int:
        """Remove the tags from every inspection in ``ids``; returns the number of (row, tag) pairs removed."""
        id_list = sorted({int(i) for i in ids})
        tag_list = clean_tags(tags)
        if not id_list or not tag_list:
            return 0

        def work(con: duckdb.DuckDBPyConnection) -> int:
            result = con.execute(
                "DELETE FROM tags WHERE inspection_id IN (SELECT unnest(?::BIGINT[])) "
                "AND tag IN (SELECT unnest(?::VARCHAR[]))",
                [id_list, tag_list],
            ).fetchone()
            return int(result[0]) if result else 0

        return self._write(work)

    def set_outlier_scores(self, ids: Sequence[int], scores: Sequence[float]) -> None:
        """Store Explore's outlier score per inspection."""
        table = pa.table({"inspection_id": pa.array(ids, pa.int64()), "score": pa.array(scores, pa.float64())})

        def work(con: duckdb.DuckDBPyConnection) -> None:
            con.register("outlier_scores", table)
            con.execute(
                "UPDATE inspections SET outlier_score = s.score FROM outlier_scores s "
                "WHERE inspections.inspection_id = s.inspection_id"
            )

        self._write(work)

    def set_near_duplicates(
        self, scored_ids: Sequence[int], ids: Sequence[int], of: Sequence[int], similarity: Sequence[float]
    ) -> None:
        """Store Explore's near-duplicate pairs: ``ids[i]`` is most like the earlier ``of[i]``.

        Every inspection in ``scored_ids`` that is not in ``ids`` loses an earlier mark: one transaction.
        """
        scored = pa.table({"inspection_id": pa.array(scored_ids, pa.int64())})
        pairs = pa.table(
            {
                "inspection_id": pa.array(ids, pa.int64()),
                "of": pa.array(of, pa.int64()),
                "similarity": pa.array(similarity, pa.float64()),
            }
        )

        def work(con: duckdb.DuckDBPyConnection) -> None:
            con.register("scored_ids", scored)
            con.register("near_pairs", pairs)
            con.execute(
                "UPDATE inspections SET near_duplicate_of = NULL, near_duplicate_similarity = NULL "
                "WHERE inspection_id IN (SELECT inspection_id FROM scored_ids)"
            )
            con.execute(
                "UPDATE inspections SET near_duplicate_of = p.of, near_duplicate_similarity = p.similarity "
                "FROM near_pairs p WHERE inspections.inspection_id = p.inspection_id"
            )

        self._write(work)


@dataclass(frozen=True)
class _Change:
    """What one review call asks for; :meth:`apply` turns an inspection's current labels into its review row."""

    kind: str
    defect: Any
    severity: Any
    location: Any
    action: str | None
    policy: ActionPolicy
    reason: str | None = None

    def apply(self, row: tuple) -> tuple | None:
        """``(id, kind, defect, severity, location, action, previous JSON)``, or ``None`` when nothing changes
        (deleting a deleted row, restoring a visible one)."""
        iid, no_defect, cur_defect, cur_sev, cur_loc, cur_action, by, at, deleted_at, unusable = row
        if (self.kind == "delete" and deleted_at is not None) or (self.kind == "restore" and deleted_at is None):
            return None
        if self.kind == "confirm" and unusable is not None:
            return None  # confirming never turns an unusable photo back into a part: a correction does
        previous = {
            "defect": cur_defect,
            "severity": cur_sev,
            "location": cur_loc,
            "action": cur_action,
            "reviewed_by": by,
            "reviewed_at": at.isoformat() if at else None,
            "deleted_at": deleted_at.isoformat() if deleted_at else None,
            "unusable_reason": unusable,
        }
        labels = (cur_defect, cur_sev, cur_loc)
        action = cur_action
        # Deleting or restoring keeps the photo's unusable mark; a correction or confirmation clears it.
        reason = unusable if self.kind in ("delete", "restore") else (self.reason if self.kind == "unusable" else None)
        if self.kind == "unusable":
            labels, action = (None, None, None), None
        elif self.kind == "correct":
            new_defect = cur_defect if self.defect is ... else self.defect
            new_sev = cur_sev if self.severity is ... else self.severity
            new_loc = cur_loc if self.location is ... else self.location
            if new_defect == no_defect:
                new_sev = new_loc = None
            changed = (new_defect, new_sev, new_loc) != labels
            labels = (new_defect, new_sev, new_loc)
            if self.action is not None:
                action = self.action
            elif changed or cur_action == "Review" or unusable is not None:
                action = self.policy.decide(new_defect, new_sev, False, new_defect != no_defect)
        elif self.kind == "confirm":
            if self.action is not None:
                action = self.action
            elif cur_action == "Review":
                action = self.policy.decide(cur_defect, cur_sev, False, cur_defect != no_defect)
        return (iid, self.kind, *labels, action, json.dumps(previous), reason)


def _review_table(reviews: list[tuple]) -> pa.Table:
    columns = ("inspection_id", "kind", "defect", "severity", "location", "action", "previous", "unusable_reason")
    schema = pa.schema(
        [pa.field(c, pa.string(), metadata={"sql_type": "JSON"} if c == "previous" else None) for c in columns[1:]]
    ).insert(0, pa.field("inspection_id", pa.int64()))
    return pa.table({c: [r[i] for r in reviews] for i, c in enumerate(columns)}, schema=schema)
