"""Importing a labelled archive or folder as a dataset: any layout ``train`` reads (class folders with an optional
labels CSV, a CSV manifest, COCO JSON, images with masks or Pascal VOC boxes), checked before anything is kept.

Checks, each a clear message and nothing stored: an empty archive, a class folder without images, fewer than
two classes, a class with a single image, and every file that cannot be read as an image (listed with its
reason; ``skip_unreadable`` imports the rest instead). The images are copied into the content-addressed image
folder, so the dataset stays whole when the upload is gone.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from visionqc.datasets.building import check_items, save_checked
from visionqc.datasets.checks import DatasetProblem
from visionqc.intake.imaging import IMAGE_EXTENSIONS, ImageDecodeError, decode_image, thumbnail_jpeg
from visionqc.intake.uploads import UploadFailure, is_zip_name, unpack_zip
from visionqc.store import Store
from visionqc.store.datasets import ITEM_COLUMNS
from visionqc.store.images import store_image_files
from visionqc.store.ingest import sha256_hex
from visionqc.training.datasets import Dataset, DatasetError, load_dataset, read_citation

DATA_SUFFIXES = frozenset({".csv", ".json", ".xml", ".md", ".txt"})
MAX_LISTED = 20  # unreadable files named in one message

Progress = Callable[[int, int], None]


def is_dataset_file(name: str) -> bool:
    suffix = PurePosixPath(name).suffix.lower()
    return suffix in IMAGE_EXTENSIONS or suffix in DATA_SUFFIXES


@contextmanager
def unpacked(archive: bytes, archive_name: str):
    """A zip of a labelled dataset unpacked (safely: intake's zip checks) into a temporary folder; yields the
    dataset's root (the single top folder when the archive wraps everything in one)."""
    with tempfile.TemporaryDirectory(prefix="visionqc-import-") as tmp:
        root = Path(tmp) / "data"
        refused = []
        written = 0
        for entry in unpack_zip(archive, archive_name, accept=is_dataset_file):
            if isinstance(entry, UploadFailure):
                if not entry.reason.startswith("skipped"):
                    refused.append(f"{entry.name}: {entry.reason}")
                continue
            target = root / entry.name.removeprefix(f"{archive_name}/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(entry.data)
            written += 1
        if refused:
            raise DatasetProblem(f"{archive_name} could not be unpacked safely: " + "; ".join(refused[:MAX_LISTED]))
        if not written:
            raise DatasetProblem(f"{archive_name} is empty: it holds no images or label files")
        children = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        yield children[0] if len(children) == 1 and children[0].is_dir() else root


def write_uploaded_folder(files: list[tuple[str, bytes]], destination: Path) -> Path:
    """Files of an uploaded folder (relative names, as the browser sends them) written under ``destination``;
    names leaving the folder are refused."""
    for name, data in files:
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts:
            raise DatasetProblem(f"refused: {name} leaves the uploaded folder")
        if not is_dataset_file(name):
            continue
        target = destination.joinpath(*path.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    children = [p for p in destination.iterdir() if not p.name.startswith(".")] if destination.is_dir() else []
    if not children:
        raise DatasetProblem("the uploaded folder holds no images or label files")
    return children[0] if len(children) == 1 and children[0].is_dir() else destination


def empty_classes(root: Path) -> list[str]:
    """Class folders (directly under ``root``, or under ``root/images``) that hold no image."""
    base = root / "images" if (root / "images").is_dir() else root
    if not base.is_dir():
        return []
    return sorted(
        d.name
        for d in base.iterdir()
        if d.is_dir()
        and not d.name.startswith((".", "__"))
        and d.name not in ("masks", "boxes", "annotations")
        and not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in d.iterdir() if p.is_file())
    )


def read_labelled(path: Path) -> Dataset:
    """The labelled dataset at ``path`` (any layout ``train`` reads), with the structural checks."""
    if path.is_dir():
        empty = empty_classes(path)
        if empty:
            raise DatasetProblem(f"class folder(s) without images: {', '.join(empty)}")
    try:
        return load_dataset(path)
    except DatasetError as exc:
        raise DatasetProblem(str(exc)) from None


@dataclass
class _Checked:
    """One readable image of the dataset: what pass 1 learnt, so pass 2 only writes files."""

    sample: int
    sha256: str
    image_format: str
    width: int
    height: int
    byte_size: int
    thumb: bytes


def _read_all(dataset: Dataset, progress: Progress | None) -> tuple[list[_Checked], list[str]]:
    """Pass 1: decode every image (nothing is written); the unreadable ones with their reason."""
    readable, unreadable = [], []
    for n, sample in enumerate(dataset.samples):
        try:
            data = sample.path.read_bytes()
            decoded = decode_image(data, draft_size=(256, 256))
            readable.append(
                _Checked(n, sha256_hex(data), decoded.format, decoded.width, decoded.height, len(data),
                         thumbnail_jpeg(decoded.image))
            )  # fmt: skip
        except (OSError, ImageDecodeError) as exc:
            unreadable.append(f"{dataset.key(sample)} ({getattr(exc, 'strerror', None) or exc})")
        if progress is not None:
            progress(n + 1, len(dataset.samples))
    return readable, unreadable


def _listed(problems: list[str]) -> str:
    more = len(problems) - MAX_LISTED
    return "; ".join(problems[:MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")


def import_dataset(
    store: Store,
    name: str,
    path: str | Path,
    *,
    by: str | None,
    skip_unreadable: bool = False,
    progress: Progress | None = None,
    origin: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Import the labelled dataset at ``path`` (a folder, CSV manifest, COCO JSON or zip) as the next version of
    ``name``. Returns the stored dataset and its warnings; raises :class:`DatasetProblem` and stores nothing when
    the data is not usable."""
    path = Path(path)
    if path.is_file() and is_zip_name(path.name):
        with unpacked(path.read_bytes(), path.name) as root:
            return import_dataset(
                store, name, root, by=by, skip_unreadable=skip_unreadable, progress=progress, origin=path.name
            )
    dataset = read_labelled(path)
    readable, unreadable = _read_all(dataset, progress)
    if unreadable and not skip_unreadable:
        raise DatasetProblem(f"{len(unreadable)} file(s) cannot be read as images: {_listed(unreadable)}")
    source = origin or path.name
    rows = [
        {"sha256": c.sha256, "path": None, "file_name": dataset.key(dataset.samples[c.sample]),
         "defect": dataset.samples[c.sample].defect, "severity": dataset.samples[c.sample].severity,
         "location": dataset.samples[c.sample].location, "inspection_id": None, "origin": f"import {source}"}
        for c in readable
    ]  # fmt: skip
    items = pd.DataFrame(rows, columns=list(ITEM_COLUMNS))
    kept = ~items["sha256"].duplicated(keep="last")
    items = items[kept].reset_index(drop=True)
    checked = [c for c, keep in zip(readable, kept, strict=True) if keep]
    check_items(name, items, dataset.no_defect_class)  # before a single file is written
    images = []
    for n, c in enumerate(checked):  # pass 2: copy into the content-addressed image folder
        data = dataset.samples[c.sample].path.read_bytes()
        image_path, thumb_path = store_image_files(store.images, c.sha256, data, c.image_format, lambda c=c: c.thumb)
        items.loc[n, "path"] = image_path
        images.append(
            {"sha256": c.sha256, "width": c.width, "height": c.height, "format": c.image_format,
             "byte_size": c.byte_size, "path": image_path, "thumb_path": thumb_path}
        )  # fmt: skip
    dataset_row, warnings = save_checked(
        store,
        name,
        items,
        dataset.no_defect_class,
        source="import",
        created_by=by,
        description=f"imported from {source} ({dataset.format})",
        recipe={"path": str(path) if origin is None else origin, "format": dataset.format},
        citation=read_citation(path) if path.is_dir() else None,
        new_images=images,
    )
    if unreadable:
        warnings = [f"{len(unreadable)} unreadable file(s) left out: {_listed(unreadable)}", *warnings]
    if len(rows) > len(items):
        warnings.append(f"{len(rows) - len(items)} image(s) appeared twice (same bytes) and are kept once")
    return dataset_row, warnings
