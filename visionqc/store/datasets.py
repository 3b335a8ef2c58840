"""Datasets in the store: named, versioned, immutable lists of labelled images, and the reviewed inspections
they are made from.

A dataset is one ``datasets`` row and its ``dataset_items`` (image by SHA-256 and path under the data folder,
defect, severity, location, where it came from), written in one transaction and never changed: creating a
dataset under an existing name makes the next version. Building the item lists (filters, merges, archives)
is :mod:`visionqc.datasets`; this module only stores and reads them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from visionqc.filters import InspectionFilter
from visionqc.store.query import build_where
from visionqc.store.records import utc_now

# Photos a person reviewed as "not a part / unusable image" (not our part, blurred, empty ...): the review outcome
# of Store.mark_unusable, kept in the view's ``unusable`` column. A dataset from reviews leaves them out or keeps
# them as an explicit reject class (visionqc.datasets.building).
NOT_A_PART_SQL = "v.unusable"

ITEM_COLUMNS = ("sha256", "path", "file_name", "defect", "severity", "location", "inspection_id", "origin")
_ITEM_TYPES = (pa.string(), pa.string(), pa.string(), pa.string(), pa.string(), pa.string(), pa.int64(), pa.string())
_NEW_IMAGE_COLUMNS = ("sha256", "width", "height", "format", "byte_size", "path", "thumb_path")


def dataset_id(name: str, version: int) -> str:
    return f"{name}@{version}"


class DatasetsMixin:
    """The dataset part of :class:`~visionqc.store.Store` (needs ``connect`` and ``_write``)."""

    def review_items(self, f: InspectionFilter) -> pd.DataFrame:
        """The inspections ``f`` selects with their effective labels, image path (relative to the data folder),
        the model's no-defect class and whether a person marked them "not a part" (``not_a_part``)."""
        where, params = build_where(f)
        with self.connect() as con:
            return con.execute(
                f"""SELECT v.inspection_id, v.sha256, im.path, v.file_name, v.defect, v.severity, v.location,
                    v.no_defect_label, v.reviewed, ({NOT_A_PART_SQL}) AS not_a_part
                FROM (SELECT * FROM inspection_view_all WHERE {where}) v JOIN images im USING (sha256)
                ORDER BY v.inspection_id""",
                params,
            ).df()

    def create_dataset(
        self,
        name: str,
        items: pd.DataFrame,
        *,
        source: str,
        created_by: str | None,
        no_defect_class: str,
        description: str | None = None,
        recipe: dict[str, Any] | None = None,
        citation: str | None = None,
        new_images: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        """Store ``items`` (columns :data:`ITEM_COLUMNS`) as the next version of ``name``, in one transaction
        (with the rows of ``new_images``, images copied into the image folder for it). Returns the dataset row."""
        if items.empty:
            raise ValueError("a dataset needs at least one image")
        table = pa.table(
            {
                "item": pa.array(range(len(items)), pa.int32()),
                **{c: pa.array(_column(items, c), t) for c, t in zip(ITEM_COLUMNS, _ITEM_TYPES, strict=True)},
            }
        )
        images = pa.table({c: [img.get(c) for img in new_images] for c in _NEW_IMAGE_COLUMNS}) if new_images else None
        now = utc_now()

        def work(con: duckdb.DuckDBPyConnection) -> str:
            version = con.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM datasets WHERE name = ?", [name]
            ).fetchone()
            ident = dataset_id(name, int(version[0]))
            con.execute(
                "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    ident, name, int(version[0]), now, created_by, source, description,
                    json.dumps(recipe or {}), no_defect_class, citation, len(items),
                ],
            )  # fmt: skip
            con.register("new_items", table)
            con.execute("INSERT INTO dataset_items SELECT ?, * FROM new_items", [ident])
            if images is not None:
                con.register("new_images", images)
                con.execute("INSERT INTO images SELECT *, ? FROM new_images ON CONFLICT DO NOTHING", [now])
            return ident

        return self.dataset(self._write(work))

    def datasets(self) -> pd.DataFrame:
        """Every dataset, newest first, with ``class_counts`` ({defect: images})."""
        with self.connect() as con:
            rows = con.execute("SELECT * FROM datasets ORDER BY created_at DESC, name, version DESC").df()
            # Counted per (dataset, class) and gathered here: plain SQL both engines run (a map aggregate is
            # DuckDB's alone).
            counts = con.execute(
                "SELECT dataset_id, defect, count(*) FROM dataset_items GROUP BY dataset_id, defect "
                "ORDER BY dataset_id, defect"
            ).fetchall()
        by_dataset: dict[str, dict[str, int]] = {}
        for ident, defect, n in counts:
            by_dataset.setdefault(ident, {})[defect] = int(n)
        rows["class_counts"] = [by_dataset.get(ident, {}) for ident in rows["dataset_id"]]
        rows["recipe"] = [json.loads(r) if isinstance(r, str) else {} for r in rows["recipe"]]
        return rows

    def dataset(self, ref: str) -> dict[str, Any] | None:
        """A dataset by id (``name@version``) or by name (its newest version); ``None`` if there is none."""
        name, _, version = ref.partition("@")
        with self.connect() as con:
            if version:
                df = con.execute("SELECT * FROM datasets WHERE dataset_id = ?", [ref]).df()
            else:
                df = con.execute("SELECT * FROM datasets WHERE name = ? ORDER BY version DESC LIMIT 1", [name]).df()
            if df.empty:
                return None
            row = df.iloc[0].to_dict()
            counts = con.execute(
                "SELECT defect, count(*) FROM dataset_items WHERE dataset_id = ? GROUP BY defect ORDER BY defect",
                [row["dataset_id"]],
            ).fetchall()
        row["recipe"] = json.loads(row["recipe"]) if isinstance(row.get("recipe"), str) else {}
        row["class_counts"] = {d: int(n) for d, n in counts}
        return row

    def dataset_items(self, ident: str) -> pd.DataFrame:
        """The dataset's items in order (``item``, then :data:`ITEM_COLUMNS`)."""
        with self.connect() as con:
            return con.execute(
                f"SELECT item, {', '.join(ITEM_COLUMNS)} FROM dataset_items WHERE dataset_id = ? ORDER BY item",
                [ident],
            ).df()


def _column(items: pd.DataFrame, column: str) -> list:
    if column not in items:
        return [None] * len(items)
    values = items[column].tolist()  # None, NaN or pandas' NA (items read back from the store) mean "no value"
    if column == "inspection_id":
        return [None if pd.isna(v) else int(v) for v in values]
    return [None if pd.isna(v) else str(v) for v in values]
