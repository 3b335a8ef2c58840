"""Dataset readers: every labelled-data layout we accept becomes one list of :class:`Sample`.

Accepted layouts (:func:`load_dataset` recognises them from the path):

* **class folders** ``<root>/<defect>/*.jpg``, optionally with ``<root>/labels.csv`` (columns ``image``,
  ``severity``, ``location``) for the other tasks;
* **CSV manifest** ``manifest.csv`` with columns ``image`` (path relative to the CSV), ``defect`` and optional
  ``severity`` and ``location``;
* **COCO JSON** as CarDD ships it (``annotations/instances_train2017.json`` beside ``train2017/``): the
  image's defect is the category with the largest annotated area; severity and location come from the
  annotations' polygons (or boxes);
* **class folders with masks** ``<root>/images/<defect>/x.jpg`` + ``<root>/masks/<defect>/x.png``
  (white = defect), as Magnetic-tile ships;
* **class folders with Pascal VOC boxes** ``<root>/images/<defect>/x.jpg`` + ``<root>/boxes/<defect>/x.xml``,
  as NEU-DET ships;
* **defect-probability labels** ``<root>/labels.csv`` with columns ``image``, ``defect_probability``, ``type``,
  as the elpv solar-cell set ships (:func:`read_defect_probability_csv`): four ordered defect levels, split
  stratified by level and type.

Where masks, polygons or boxes exist, severity and location are derived from the defect region:
severity from its share of the image area (:data:`DEFAULT_SEVERITY_THRESHOLDS`), location from the
3x3 grid cell holding the centre of the defect area. Severity and location stay ``None`` for
defect-free images, and for defect images without a usable region; training masks their loss.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from visionqc.intake.imaging import IMAGE_EXTENSIONS, ImageDecodeError, decode_image
from visionqc.safetext import from_formula_safe

SEVERITY_CLASSES = ["low", "medium", "high"]
# Row-major 3x3 grid over the image; the defect's centre falls in exactly one cell.
LOCATION_CLASSES = [
    "top-left",
    "top",
    "top-right",
    "left",
    "center",
    "right",
    "bottom-left",
    "bottom",
    "bottom-right",
]
# Severity = share of the image area covered by the defect: low < 0.3 % <= medium < 3 % <= high.
# Chosen from the Magnetic-tile masks (388 defect images): the defect share has quartiles 0.15 %, 0.46 %
# and 15 %, so these cuts split the defects roughly into thirds (143 / 105 / 140) and every defect type
# except "uneven" spans at least two severities: severity is then not just the defect type in disguise.
DEFAULT_SEVERITY_THRESHOLDS = (0.003, 0.03)
# Class names that mean "no defect" when the caller does not say which class that is.
NO_DEFECT_NAMES = frozenset(
    {"free", "ok", "good", "normal", "pass", "clean", "none", "no_defect", "no-defect", "defect_free", "defect-free"}
)
# Added to the defect classes when a dataset has no defect-free images: the card needs a no-defect class.
SYNTHETIC_NO_DEFECT = "no_defect"
LABELS_CSV = "labels.csv"
# Beside class folders, written by `python -m visionqc dataset export`: names the no-defect class (whatever it is
# called) and the dataset, so an exported dataset trains exactly as it is stored.
DATASET_FILE = "dataset.json"


class DatasetError(ValueError):
    """The data folder or file does not have a layout we can read; ``str(err)`` says what is wrong."""


@dataclass(frozen=True)
class Sample:
    path: Path
    defect: str
    severity: str | None = None
    location: str | None = None
    area_share: float | None = None  # share of the image covered by the defect, when a region is known
    group: str | None = None  # a second stratification key beside the defect class (elpv: the cell type)


@dataclass
class Dataset:
    root: Path
    format: str  # "class-folders", "csv-manifest", "coco", "masks", "voc", "defect-probability"
    samples: list[Sample]
    defect_classes: list[str]
    no_defect_class: str
    severity_thresholds: tuple[float, float] | None = None
    severity_classes: list[str] = field(default_factory=list)
    location_classes: list[str] = field(default_factory=list)
    group_by: str | None = None  # what Sample.group holds (elpv: "type"); None when no sample has a group
    # The parts look the same flipped and turned by quarter turns (solar cells): training may then use the 8
    # symmetries as augmentation and test-time augmentation (TrainConfig.augmentation "auto").
    symmetric: bool = False

    @property
    def tasks(self) -> dict[str, list[str]]:
        """Task -> ordered classes; severity and location only when some sample carries them."""
        tasks = {"defect": self.defect_classes}
        if self.severity_classes:
            tasks["severity"] = self.severity_classes
        if self.location_classes:
            tasks["location"] = self.location_classes
        return tasks

    @property
    def has_no_defect_images(self) -> bool:
        return any(s.defect == self.no_defect_class for s in self.samples)

    def key(self, sample: Sample) -> str:
        """The sample's path relative to the dataset root (POSIX), used to record splits in model cards."""
        try:
            return sample.path.relative_to(self.root).as_posix()
        except ValueError:
            return sample.path.as_posix()

    def class_counts(self) -> dict[str, int]:
        counts = Counter(s.defect for s in self.samples)
        return {c: counts.get(c, 0) for c in self.defect_classes}

    def subset(self, indices) -> Dataset:
        return Dataset(
            root=self.root,
            format=self.format,
            samples=[self.samples[i] for i in indices],
            defect_classes=self.defect_classes,
            no_defect_class=self.no_defect_class,
            severity_thresholds=self.severity_thresholds,
            severity_classes=self.severity_classes,
            location_classes=self.location_classes,
            group_by=self.group_by,
            symmetric=self.symmetric,
        )

    def strata(self) -> np.ndarray:
        """The key splits are stratified on: the defect class index, combined with the sample's group (elpv:
        mono/poly) when the dataset has groups. Without groups it is exactly ``labels("defect")``, so every
        split made before groups existed is reproduced unchanged."""
        labels = self.labels("defect")
        if self.group_by is None:
            return labels
        groups = sorted({s.group or "" for s in self.samples})
        index = {g: i for i, g in enumerate(groups)}
        return labels * len(groups) + np.array([index[s.group or ""] for s in self.samples], dtype=np.int64)

    @property
    def split_method(self) -> str:
        """How :meth:`strata` stratifies, in words (for the model card)."""
        by = f"defect class and {self.group_by}" if self.group_by else "defect class"
        return f"stratified by {by} (visionqc.training.datasets.stratified_split)"

    def labels(self, task: str) -> np.ndarray:
        """Class indices for one task; -1 where the sample has no label for it (masked in the loss)."""
        classes = self.tasks[task]
        index = {c: i for i, c in enumerate(classes)}
        values = [getattr(s, task) for s in self.samples]
        return np.array([index[v] if v is not None else -1 for v in values], dtype=np.int64)


# --- severity and location from a defect region ------------------------------------------------------


def severity_from_share(share: float, thresholds: tuple[float, float] = DEFAULT_SEVERITY_THRESHOLDS) -> str:
    low, high = thresholds
    if share < low:
        return "low"
    return "medium" if share < high else "high"


def location_from_centre(cx: float, cy: float, width: int, height: int) -> str:
    """The 3x3 grid cell (row-major names in :data:`LOCATION_CLASSES`) that holds the point (cx, cy)."""
    col = min(int(3 * cx / width), 2) if width else 1
    row = min(int(3 * cy / height), 2) if height else 1
    return LOCATION_CLASSES[3 * max(row, 0) + max(col, 0)]


def region_labels(
    mask: np.ndarray, thresholds: tuple[float, float] = DEFAULT_SEVERITY_THRESHOLDS
) -> tuple[str | None, str | None, float]:
    """Severity, location and area share of a boolean defect mask; (None, None, 0.0) if it is empty."""
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    share = float(len(ys)) / float(mask.size)
    if not len(ys):
        return None, None, 0.0
    # Pixel centres: the centroid of the defect area, in pixel coordinates.
    location = location_from_centre(float(xs.mean()) + 0.5, float(ys.mean()) + 0.5, width, height)
    return severity_from_share(share, thresholds), location, share


def boxes_mask(boxes: list[tuple[float, float, float, float]], width: int, height: int) -> np.ndarray:
    """Rasterise (xmin, ymin, xmax, ymax) boxes into one boolean mask; overlaps count once."""
    mask = np.zeros((height, width), dtype=bool)
    for xmin, ymin, xmax, ymax in boxes:
        x0, y0 = max(round(xmin), 0), max(round(ymin), 0)
        x1, y1 = min(round(xmax), width), min(round(ymax), height)
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = True
    return mask


def _read_mask(path: Path) -> np.ndarray:
    try:
        decoded = decode_image(path.read_bytes())
    except (OSError, ImageDecodeError) as exc:
        raise DatasetError(f"cannot read mask {path}: {exc}") from None
    return np.asarray(decoded.image.convert("L")) > 127


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except OSError as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None


# --- helpers ------------------------------------------------------------------------------------------


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _ordered(values: set[str], canonical: list[str]) -> list[str]:
    """Canonical order when every value is a canonical class (low/medium/high, grid cells), else sorted."""
    if values and values <= set(canonical):
        return list(canonical)
    return sorted(values)


def _finish(
    root: Path,
    fmt: str,
    samples: list[Sample],
    no_defect_class: str | None,
    thresholds: tuple[float, float] | None,
) -> Dataset:
    if not samples:
        raise DatasetError(f"no labelled images found in {root}")
    defect_classes = sorted({s.defect for s in samples})
    if no_defect_class is None:
        found = [c for c in defect_classes if c.lower() in NO_DEFECT_NAMES]
        if len(found) > 1:
            raise DatasetError(f"several classes look like 'no defect' ({found}); name one with --no-defect-class")
        no_defect_class = found[0] if found else SYNTHETIC_NO_DEFECT
    if no_defect_class not in defect_classes:
        # No defect-free images: the class exists in the model (the card needs one) but is never trained.
        defect_classes.append(no_defect_class)
    cleaned = [
        Sample(s.path, s.defect, None, None, None, s.group) if s.defect == no_defect_class else s for s in samples
    ]
    if len(defect_classes) < 2:
        raise DatasetError(f"{root} has only one class ({defect_classes[0]}); training needs at least two")
    severities = {s.severity for s in cleaned if s.severity is not None}
    locations = {s.location for s in cleaned if s.location is not None}
    severity_classes = _ordered(severities, SEVERITY_CLASSES)
    location_classes = _ordered(locations, LOCATION_CLASSES)
    return Dataset(
        root=root,
        format=fmt,
        samples=cleaned,
        defect_classes=defect_classes,
        no_defect_class=no_defect_class,
        severity_thresholds=thresholds,
        severity_classes=severity_classes if len(severity_classes) >= 2 else [],
        location_classes=location_classes if len(location_classes) >= 2 else [],
    )


def _optional(row: dict[str, str], *names: str) -> str | None:
    for name in names:
        value = (row.get(name) or "").strip()
        if value:
            return value
    return None


# --- readers ------------------------------------------------------------------------------------------


def read_class_folders(
    root: str | Path, labels_csv: str | Path | None = None, no_defect_class: str | None = None
) -> Dataset:
    """``<root>/<defect>/*.jpg``; severity/location from an optional CSV (``image, severity, location``).

    The CSV's ``image`` column holds the path relative to ``root`` (``crack/x.jpg``) or the bare file name.
    """
    root = Path(root)
    no_defect_class = no_defect_class or declared_no_defect_class(root)
    extra: dict[str, dict[str, str]] = {}
    csv_path = Path(labels_csv) if labels_csv else root / LABELS_CSV
    if csv_path.is_file():
        for row in _read_csv(csv_path, required=("image",)):
            extra[row["image"].strip().replace("\\", "/")] = row
    elif labels_csv:
        raise DatasetError(f"labels CSV not found: {csv_path}")
    samples = []
    for class_dir in _class_dirs(root):
        for path in _images_in(class_dir):
            rel = path.relative_to(root).as_posix()
            row = extra.get(rel) or extra.get(path.name) or {}
            samples.append(Sample(path, class_dir.name, _optional(row, "severity"), _optional(row, "location"), None))
    return _finish(root, "class-folders", samples, no_defect_class, None)


def read_citation(root: Path) -> str | None:
    """The 'Source:' paragraph of the dataset's SOURCE.md, if it has one."""
    for candidate in (root / "SOURCE.md", root.parent / "SOURCE.md"):
        if candidate.is_file():
            text = candidate.read_text(encoding="utf-8", errors="replace")
            for paragraph in text.split("\n\n"):
                if paragraph.strip().startswith("Source:"):
                    return " ".join(line.strip() for line in paragraph.strip().splitlines())
    return None


def declared_no_defect_class(root: Path) -> str | None:
    """The no-defect class named in ``<root>/dataset.json`` (an exported dataset), if there is one."""
    path = root / DATASET_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("no_defect_class")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    return value if isinstance(value, str) and value else None


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in reader.fieldnames or []]
            missing = [c for c in required if c not in fields]
            if missing:
                raise DatasetError(f"{path.name} needs the column(s) {missing}; it has {fields}")
            # A cell escaped for spreadsheets (a leading ' before =, +, -, @ ...: our own exports write them so)
            # reads back as the exact original.
            return [{(k or "").strip().lower(): from_formula_safe(v or "") for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None


def read_csv_manifest(csv_path: str | Path, no_defect_class: str | None = None) -> Dataset:
    """A CSV with columns ``image`` (relative to the CSV's folder), ``defect``, optional ``severity``/``location``."""
    csv_path = Path(csv_path)
    rows = _read_csv(csv_path, required=("image", "defect"))
    root = csv_path.parent
    samples = []
    for n, row in enumerate(rows, start=2):
        image, defect = row["image"].strip(), row["defect"].strip()
        if not image or not defect:
            raise DatasetError(f"{csv_path.name} line {n}: 'image' and 'defect' must not be empty")
        path = (root / image).resolve()
        if not path.is_file():
            raise DatasetError(f"{csv_path.name} line {n}: image not found: {image}")
        samples.append(Sample(path, defect, _optional(row, "severity"), _optional(row, "location"), None))
    return _finish(root.resolve(), "csv-manifest", samples, no_defect_class, None)


def _polygon_mask(segmentation, width: int, height: int) -> np.ndarray | None:
    if not isinstance(segmentation, list) or not segmentation:
        return None  # RLE (crowd) regions: fall back to the box
    canvas = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in segmentation:
        if isinstance(polygon, list) and len(polygon) >= 6:
            draw.polygon([(float(polygon[i]), float(polygon[i + 1])) for i in range(0, len(polygon) - 1, 2)], fill=1)
    return np.asarray(canvas, dtype=bool)


def read_coco(
    json_path: str | Path,
    images_dir: str | Path | None = None,
    no_defect_class: str | None = None,
    severity_thresholds: tuple[float, float] = DEFAULT_SEVERITY_THRESHOLDS,
) -> Dataset:
    """COCO instance annotations as CarDD ships them.

    Images are looked up in ``images_dir``, else beside the JSON, else in ``<json's parent>/../<split>``
    (``instances_train2017.json`` -> ``train2017/``). An image without annotations is defect-free and gets
    ``no_defect_class`` (default ``no_defect``).
    """
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read COCO file {json_path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise DatasetError(f"{json_path.name} is not COCO JSON: it needs 'images' and 'categories' lists")
    split = json_path.stem.removeprefix("instances_")
    candidates = [Path(images_dir)] if images_dir else [json_path.parent, json_path.parent.parent / split]
    categories = {c["id"]: str(c["name"]) for c in data["categories"]}
    by_image: dict[int, list[dict]] = {}
    for ann in data.get("annotations") or []:
        by_image.setdefault(ann["image_id"], []).append(ann)
    empty_name = no_defect_class or SYNTHETIC_NO_DEFECT
    samples = []
    for info in data["images"]:
        name = str(info["file_name"])
        path = next((d / name for d in candidates if (d / name).is_file()), None)
        if path is None:
            raise DatasetError(f"{json_path.name}: image {name} not found in {', '.join(map(str, candidates))}")
        anns = by_image.get(info["id"], [])
        if not anns:
            samples.append(Sample(path, empty_name))
            continue
        width, height = int(info.get("width") or 0), int(info.get("height") or 0)
        if not width or not height:
            width, height = _image_size(path)
        area_by_class: Counter[str] = Counter()
        mask = np.zeros((height, width), dtype=bool)
        for ann in anns:
            x, y, w, h = (float(v) for v in ann["bbox"])
            region = _polygon_mask(ann.get("segmentation"), width, height)
            if region is None or not region.any():
                region = boxes_mask([(x, y, x + w, y + h)], width, height)
            mask |= region
            area_by_class[categories[ann["category_id"]]] += float(ann.get("area") or region.sum())
        defect = area_by_class.most_common(1)[0][0]
        severity, location, share = region_labels(mask, severity_thresholds)
        samples.append(Sample(path, defect, severity, location, share))
    return _finish(json_path.parent, "coco", samples, no_defect_class or empty_name, severity_thresholds)


def read_mask_folders(
    root: str | Path,
    no_defect_class: str | None = None,
    severity_thresholds: tuple[float, float] = DEFAULT_SEVERITY_THRESHOLDS,
) -> Dataset:
    """``<root>/images/<defect>/x.jpg`` with masks ``<root>/masks/<defect>/x.png`` (white = defect)."""
    root = Path(root)
    samples = []
    for class_dir in _class_dirs(root / "images"):
        for path in _images_in(class_dir):
            mask_path = root / "masks" / class_dir.name / (path.stem + ".png")
            if mask_path.is_file():
                severity, location, share = region_labels(_read_mask(mask_path), severity_thresholds)
            else:
                severity, location, share = None, None, None
            samples.append(Sample(path, class_dir.name, severity, location, share))
    return _finish(root, "masks", samples, no_defect_class, severity_thresholds)


def load_dataset(
    path: str | Path,
    *,
    labels_csv: str | Path | None = None,
    no_defect_class: str | None = None,
    severity_thresholds: tuple[float, float] = DEFAULT_SEVERITY_THRESHOLDS,
) -> Dataset:
    """Read any accepted layout, recognised from ``path`` (see the module docstring)."""
    from visionqc.training.probability_labels import is_probability_csv, read_defect_probability_csv
    from visionqc.training.voc import read_voc_folders

    path = Path(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            if is_probability_csv(path):
                return read_defect_probability_csv(path)
            return read_csv_manifest(path, no_defect_class)
        if suffix == ".json":
            return read_coco(path, no_defect_class=no_defect_class, severity_thresholds=severity_thresholds)
        raise DatasetError(f"{path.name}: a dataset file must be a CSV manifest (.csv) or COCO JSON (.json)")
    if not path.is_dir():
        raise DatasetError(f"dataset not found: {path}")
    if (path / LABELS_CSV).is_file() and is_probability_csv(path / LABELS_CSV) and labels_csv is None:
        return read_defect_probability_csv(path / LABELS_CSV)
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return read_mask_folders(path, no_defect_class, severity_thresholds)
    if (path / "images").is_dir() and ((path / "boxes").is_dir() or (path / "annotations").is_dir()):
        return read_voc_folders(path, no_defect_class, severity_thresholds)
    if (path / "manifest.csv").is_file() and labels_csv is None:
        return read_csv_manifest(path / "manifest.csv", no_defect_class)
    if not _class_dirs(path):
        raise DatasetError(
            f"{path} has no class folders; expected <folder>/<defect>/*.jpg, images/ + masks/ or boxes/, "
            "a manifest.csv, or a COCO .json file"
        )
    return read_class_folders(path, labels_csv, no_defect_class)


# --- splits -------------------------------------------------------------------------------------------


def stratified_split(
    labels: np.ndarray, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train / validation / test indices with every class split in the same proportions.

    A class with at least 3 images gets at least one validation and one test image. Deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_test = round(n * test_fraction)
        n_val = round(n * val_fraction)
        if n >= 3:
            n_test, n_val = max(n_test, 1 if test_fraction > 0 else 0), max(n_val, 1 if val_fraction > 0 else 0)
        test.extend(idx[:n_test])
        val.extend(idx[n_test : n_test + n_val])
        train.extend(idx[n_test + n_val :])
    return (
        np.sort(np.array(train, dtype=np.int64)),
        np.sort(np.array(val, dtype=np.int64)),
        np.sort(np.array(test, dtype=np.int64)),
    )
