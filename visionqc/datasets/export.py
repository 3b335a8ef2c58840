"""A stored dataset as files ``python -m visionqc train`` reads: class folders, ``labels.csv`` (severity and
location), ``dataset.json`` (its name, version and no-defect class) and ``SOURCE.md`` (its citation).

Every image is named ``<defect>/<item:05d>-<file name>``: unique within the dataset, and the item number leads
back from a model card's test files to the dataset's items (:func:`item_of`). Images are hard links into the
image folder when the export lies on the same disk (no copy), else copies.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from visionqc.csvfile import write_csv
from visionqc.datasets.checks import DatasetProblem
from visionqc.store import Store
from visionqc.training.datasets import DATASET_FILE, LABELS_CSV

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def export_name(item: int, file_name: str) -> str:
    base = _UNSAFE.sub("_", PurePosixPath(str(file_name).replace("\\", "/")).name).strip("._") or "image"
    return f"{int(item):05d}-{base[-80:]}"


def class_folder(defect: str) -> str:
    """A class name as a folder of the export; a name that is not one path component (``..``, ``a/b``) is refused:
    class names come from labelled archives and model cards, both hostile until checked."""
    name = str(defect)
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise DatasetProblem(f"the class name {name!r} cannot be a folder name; rename the class")
    return name


def item_of(key: str) -> int | None:
    """The item number of an exported image path (``crack/00012-x.jpg`` -> 12), ``None`` for other paths."""
    match = re.match(r"^(\d{5,})-", PurePosixPath(key).name)
    return int(match.group(1)) if match else None


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def resolve(store: Store, ref: str) -> dict[str, Any]:
    row = store.dataset(ref)
    if row is None:
        known = ", ".join(store.datasets()["dataset_id"].head(10)) or "none yet"
        raise DatasetProblem(f"there is no dataset {ref!r} (datasets: {known})")
    return row


def export_dataset(store: Store, ref: str, out_dir: str | Path) -> Path:
    """Write dataset ``ref`` (``name`` = newest version, or ``name@version``) to the new folder ``out_dir``."""
    row = resolve(store, ref)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetProblem(f"{out} already exists and is not empty; export into a new folder")
    items = store.dataset_items(row["dataset_id"])
    missing = [p for p in items["path"] if not (store.home / p).is_file()]
    if missing:
        raise DatasetProblem(f"{len(missing)} image(s) of {row['dataset_id']} are missing from the image folder")
    out.mkdir(parents=True, exist_ok=True)
    labels = []
    for item in items.itertuples(index=False):
        relative = f"{class_folder(item.defect)}/{export_name(item.item, item.file_name)}"
        _place(store.home / item.path, out / relative)
        labels.append((relative, _text(item.severity), _text(item.location)))
    # Through the one CSV writer: a class named like a formula (=crack) is escaped for spreadsheets, and the
    # reader (visionqc.training.datasets) undoes the escape, so train reads back the exact names.
    write_csv(pd.DataFrame(labels, columns=["image", "severity", "location"], dtype=object), out / LABELS_CSV)
    meta = {
        "name": row["name"],
        "version": int(row["version"]),
        "dataset_id": row["dataset_id"],
        "no_defect_class": row["no_defect_class"],
        "class_counts": row["class_counts"],
        "description": _text(row.get("description")),
    }
    (out / DATASET_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    citation = _text(row.get("citation"))
    if citation:
        (out / "SOURCE.md").write_text(f"# {row['dataset_id']}\n\n{citation}\n", encoding="utf-8")
    return out


def export_zip(store: Store, ref: str) -> bytes:
    """The export as a zip (stored, not compressed: photos do not shrink), one folder named after the dataset."""
    row = resolve(store, ref)
    folder = row["dataset_id"].replace("@", "-v")
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="visionqc-export-") as tmp:
        root = export_dataset(store, row["dataset_id"], Path(tmp) / folder)
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    archive.write(path, PurePosixPath(folder, path.relative_to(root).as_posix()).as_posix())
    return buffer.getvalue()


def items_for_files(items: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The items a list of exported image paths (a model card's ``test_files``) names, in the dataset's order."""
    wanted = {n for n in (item_of(k) for k in keys) if n is not None}
    return items[items["item"].isin(wanted)]


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None
