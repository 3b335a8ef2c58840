"""Datasets from reviewed inspections (with History's filters) and merges of stored datasets.

The labels are the effective ones (the latest review, else the prediction). Photos a person marked "not a
part" are left out, or kept as the explicit reject class :data:`~visionqc.actions.NOT_A_PART_CLASS`. When the
same image (by SHA-256) comes from several sources, the last source wins: put the reviewed production images
last so a person's correction beats an older label.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from datetime import date, datetime
from typing import Any

import pandas as pd

from visionqc.actions import NOT_A_PART_CLASS
from visionqc.datasets.checks import DatasetProblem, check_classes, check_label
from visionqc.filters import InspectionFilter
from visionqc.store import Store
from visionqc.store.datasets import ITEM_COLUMNS

NOT_A_PART_CHOICES = {
    "leave out": "Leave them out",
    "reject class": f"Keep them as a reject class ({NOT_A_PART_CLASS})",
}


def review_items(store: Store, f: InspectionFilter, not_a_part: str = "leave out") -> tuple[pd.DataFrame, str]:
    """Items (columns :data:`ITEM_COLUMNS`) of the inspections ``f`` selects, and their no-defect class."""
    if not_a_part not in NOT_A_PART_CHOICES:
        raise ValueError(f"not_a_part must be one of {list(NOT_A_PART_CHOICES)}, not {not_a_part!r}")
    rows = store.review_items(f)
    if rows.empty:
        raise DatasetProblem("no inspections match these filters (reviewed ones only, unless you allow others)")
    no_defect = Counter(rows["no_defect_label"].dropna()).most_common()
    if len(no_defect) > 1:
        names = ", ".join(n for n, _ in no_defect)
        raise DatasetProblem(
            f"the selection mixes models whose defect-free class differs ({names}); filter by model first"
        )
    marked = rows["not_a_part"].fillna(False).astype(bool)
    if not_a_part == "leave out":
        rows = rows[~marked]
    else:
        rows = rows.copy()
        rows.loc[marked, ["defect", "severity", "location"]] = [NOT_A_PART_CLASS, None, None]
    if rows.empty:
        raise DatasetProblem("every selected inspection is marked 'not a part', and those are left out")
    rows = rows.drop_duplicates("sha256", keep="last")
    items = rows.assign(origin=[f"inspection {i}" for i in rows["inspection_id"]])
    return items[list(ITEM_COLUMNS)].reset_index(drop=True), no_defect[0][0]


def merged(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """One item list from several; an image (SHA-256) present twice keeps its last label."""
    items = pd.concat([p[list(ITEM_COLUMNS)] for p in parts], ignore_index=True)
    return items.drop_duplicates("sha256", keep="last").reset_index(drop=True)


def _stored_parts(store: Store, refs: list[str]) -> tuple[list[pd.DataFrame], list[dict[str, Any]]]:
    parts, rows = [], []
    for ref in refs:
        row = store.dataset(ref)
        if row is None:
            raise DatasetProblem(f"there is no dataset {ref!r}")
        parts.append(store.dataset_items(row["dataset_id"]))
        rows.append(row)
    return parts, rows


def _common_no_defect(names: list[str]) -> str:
    distinct = list(dict.fromkeys(names))
    if len(distinct) > 1:
        raise DatasetProblem(
            f"the datasets disagree on the defect-free class ({', '.join(distinct)}); merge datasets that agree"
        )
    return distinct[0]


def check_items(name: str, items: pd.DataFrame, no_defect_class: str) -> list[str]:
    """Refuse an unusable name, class names that cannot be folders, and class counts a model cannot learn
    from (:func:`~visionqc.datasets.checks.check_classes`); returns the warnings."""
    problem = check_label((name or "").strip())
    if problem:
        raise DatasetProblem(f"dataset name: {problem}")
    if "@" in name:
        raise DatasetProblem("dataset name: '@' separates a name from its version; leave it out")
    for label in items["defect"].unique():
        problem = check_label(str(label))
        if problem:
            raise DatasetProblem(problem)
    check = check_classes(items["defect"].value_counts().to_dict(), no_defect_class)
    check.raise_errors()
    return check.warnings


def save_checked(
    store: Store, name: str, items: pd.DataFrame, no_defect_class: str, **fields: Any
) -> tuple[dict[str, Any], list[str]]:
    """Check the name, class names and counts (:func:`check_items`), then store the dataset. Returns its row
    and the warnings."""
    warnings = check_items(name, items, no_defect_class)
    row = store.create_dataset(name.strip(), items, no_defect_class=no_defect_class, **fields)
    return row, warnings


def create_from_reviews(
    store: Store,
    name: str,
    f: InspectionFilter,
    *,
    by: str | None,
    not_a_part: str = "leave out",
    include: list[str] = (),
) -> tuple[dict[str, Any], list[str]]:
    """A new dataset (version) from the inspections ``f`` selects, plus the stored datasets in ``include``
    (e.g. the original training set) with the reviewed images winning where both hold an image."""
    items, no_defect = review_items(store, f, not_a_part)
    parts, rows = _stored_parts(store, list(include))
    no_defect = _common_no_defect([*(r["no_defect_class"] for r in rows), no_defect])
    recipe = {"filter": _filter_json(f), "not_a_part": not_a_part, "include": [r["dataset_id"] for r in rows]}
    described = f"{len(items)} reviewed inspection(s)" + "".join(f" + {r['dataset_id']}" for r in rows)
    return save_checked(
        store,
        name,
        merged([*parts, items]),
        no_defect,
        source="merge" if rows else "reviews",
        created_by=by,
        description=described,
        recipe=recipe,
        citation="; ".join(r["citation"] for r in rows if isinstance(r.get("citation"), str)) or None,
    )


def merge_datasets(store: Store, name: str, refs: list[str], *, by: str | None) -> tuple[dict[str, Any], list[str]]:
    """A new dataset from stored ones; where they share an image the later one's label wins."""
    if len(refs) < 2:
        raise DatasetProblem("choose at least two datasets to merge")
    parts, rows = _stored_parts(store, refs)
    return save_checked(
        store,
        name,
        merged(parts),
        _common_no_defect([r["no_defect_class"] for r in rows]),
        source="merge",
        created_by=by,
        description=" + ".join(r["dataset_id"] for r in rows),
        recipe={"include": [r["dataset_id"] for r in rows]},
        citation="; ".join(r["citation"] for r in rows if isinstance(r.get("citation"), str)) or None,
    )


def _filter_json(f: InspectionFilter) -> dict[str, Any]:
    """The filter's narrowing fields, JSON-ready (dates as ISO text), for the dataset's recipe."""
    out = {}
    for key, value in asdict(f).items():
        if key in f.changed_fields():
            out[key] = value.isoformat() if isinstance(value, date | datetime) else value
    return out
