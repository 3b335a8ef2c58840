"""How well the heatmaps point at the real defect, measured against ground truth.

Two ground-truth forms are read: pixel masks (``masks/<class>/<name>.png``, white = defect, as the
magnetic-tile set ships) and Pascal VOC boxes (``boxes/<class>/<name>.xml``, as NEU-DET ships), each beside
``images/<class>/<name>.jpg``. Two numbers are reported:

- **pointing game** (Zhang et al., "Top-down neural attention by excitation backprop", 2016): the share of
  defect images whose heatmap maximum falls on the defect. We report it strictly (the peak pixel is a
  defect pixel / inside a box) and with the paper's 15-pixel tolerance.
- **box IoU**: intersection over union of the heatmap's box with the best-matching ground-truth box (for
  masks, the box of each connected defect region); the mean, and the share with IoU >= 0.5.

By default the heatmap explains the image's true class (the standard protocol: "where is the crack the
image is labelled with"); ``explain="predicted"`` measures what a user sees in the app instead.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from visionqc.intake.imaging import IMAGE_EXTENSIONS
from visionqc.model.heatmaps import heatmap_for_image

Box = tuple[int, int, int, int]  # x0, y0, x1, y1; x1 and y1 exclusive
POINTING_TOLERANCE_PX = 15  # Zhang et al. 2016


@dataclass(frozen=True)
class GroundTruth:
    """Where the defect is: a boolean mask (H, W) and/or boxes in image pixels."""

    boxes: list[Box]
    mask: np.ndarray | None = None

    def contains(self, x: int, y: int, tolerance: float = 0.0) -> bool:
        """Whether pixel (x, y) is on the defect, or within ``tolerance`` pixels of it."""
        if self.mask is not None:
            h, w = self.mask.shape
            if tolerance <= 0:
                return bool(0 <= y < h and 0 <= x < w and self.mask[y, x])
            r = int(np.ceil(tolerance))
            y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
            ys, xs = np.nonzero(self.mask[y0:y1, x0:x1])
            return bool(((ys + y0 - y) ** 2 + (xs + x0 - x) ** 2 <= tolerance**2).any())
        for bx0, by0, bx1, by1 in self.boxes:
            # distance from the pixel centre to the box (0 inside)
            dx = max(bx0 - x, 0, x - (bx1 - 1))
            dy = max(by0 - y, 0, y - (by1 - 1))
            if dx * dx + dy * dy <= tolerance * tolerance:
                return True
        return False


@dataclass(frozen=True)
class LocalisationSample:
    image: Path
    defect: str  # the true class (the folder name)
    truth: Path  # mask PNG or VOC XML


@dataclass
class SampleResult:
    image: str
    defect: str
    explained: str  # the class the heatmap was computed for
    peak: tuple[int, int]
    box: Box
    hit: bool
    hit_tolerant: bool
    iou: float


@dataclass
class LocalisationReport:
    dataset: str
    explain: str
    images: int
    pointing_game: float
    pointing_game_tolerant: float
    tolerance_px: int
    box_iou_mean: float
    box_iou_at_0_5: float
    per_class: dict[str, dict[str, float]]
    method: str
    ms_per_image: float
    evaluated_at: str
    results: list[SampleResult] = field(default_factory=list)

    def card_entry(self) -> dict:
        """The summary written into the model card's ``localisation`` field (no per-image rows)."""
        out = asdict(self)
        out.pop("results")
        return out


# --- ground truth readers -------------------------------------------------------------------------


def read_mask(path: str | Path) -> np.ndarray:
    """A mask PNG -> boolean (H, W), True where the defect is (pixel value > 127 in any channel)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8) > 127


def read_voc_boxes(path: str | Path) -> list[Box]:
    """Every ``<object><bndbox>`` of a Pascal VOC XML file, converted to exclusive pixel boxes."""
    root = ET.parse(path).getroot()
    boxes = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        x0, y0, x1, y1 = (int(float(bb.findtext(k, "0"))) for k in ("xmin", "ymin", "xmax", "ymax"))
        # VOC coordinates are 1-based and inclusive.
        boxes.append((max(0, x0 - 1), max(0, y0 - 1), max(x1, x0), max(y1, y0)))
    return boxes


def component_boxes(mask: np.ndarray, min_pixels: int = 1) -> list[Box]:
    """Boxes of the 8-connected regions of a boolean mask (run-length labelling with union-find)."""
    parent: list[int] = []

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    runs: list[tuple[int, int, int]] = []  # (row, start, end exclusive)
    previous: list[int] = []  # run ids in the previous row
    for y in range(mask.shape[0]):
        row = mask[y].astype(np.int8)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row, [0]))))
        current = []
        for start, end in zip(edges[::2], edges[1::2], strict=True):
            rid = len(runs)
            runs.append((y, int(start), int(end)))
            parent.append(rid)
            for pid in previous:
                _, ps, pe = runs[pid]
                if ps <= end and start <= pe:  # overlap including diagonal neighbours
                    parent[find(pid)] = find(rid)
            current.append(rid)
        previous = current
    regions: dict[int, list[int]] = {}
    for rid, (y, s, e) in enumerate(runs):
        r = regions.setdefault(find(rid), [10**9, 10**9, -1, -1, 0])
        r[0], r[1] = min(r[0], s), min(r[1], y)
        r[2], r[3] = max(r[2], e), max(r[3], y + 1)
        r[4] += e - s
    return [(x0, y0, x1, y1) for x0, y0, x1, y1, n in regions.values() if n >= min_pixels]


def read_ground_truth(path: str | Path) -> GroundTruth:
    path = Path(path)
    if path.suffix.lower() == ".xml":
        return GroundTruth(boxes=read_voc_boxes(path))
    mask = read_mask(path)
    return GroundTruth(boxes=component_boxes(mask), mask=mask)


def find_samples(root: str | Path, skip_classes: Iterable[str] = ()) -> list[LocalisationSample]:
    """Images under ``root/images/<class>/`` that have a mask or VOC box file with a defect in it.

    Classes in ``skip_classes`` (the no-defect class) and images whose mask is empty are left out: the
    pointing game is defined for images that contain a defect.
    """
    root = Path(root)
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise ValueError(f"{root} has no images/ folder (expected images/<class>/<name>.jpg)")
    skip = set(skip_classes)
    samples = []
    for class_dir in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        if class_dir.name in skip:
            continue
        for image in sorted(class_dir.iterdir()):
            if image.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            for truth in (
                root / "masks" / class_dir.name / f"{image.stem}.png",
                root / "boxes" / class_dir.name / f"{image.stem}.xml",
            ):
                if truth.is_file():
                    samples.append(LocalisationSample(image, class_dir.name, truth))
                    break
    if not samples:
        raise ValueError(f"{root} has no images with masks/<class>/<name>.png or boxes/<class>/<name>.xml")
    return samples


# --- scoring --------------------------------------------------------------------------------------


def box_iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def best_iou(box: Box, truth: GroundTruth) -> float:
    return max((box_iou(box, t) for t in truth.boxes), default=0.0)


def pointing_game(peaks: list[tuple[int, int]], truths: list[GroundTruth], tolerance: float = 0.0) -> float:
    """Share of images whose peak (x, y) lies on the defect (within ``tolerance`` pixels)."""
    if not peaks:
        return 0.0
    return sum(t.contains(x, y, tolerance) for (x, y), t in zip(peaks, truths, strict=True)) / len(peaks)


def evaluate(
    predictor,
    samples: list[LocalisationSample],
    explain: str = "true",
    heatmap_fn: Callable = heatmap_for_image,
    progress: Callable[[int, int], None] | None = None,
    dataset: str = "",
    method: str = "",
) -> LocalisationReport:
    """Compute a heatmap for every sample and score it against its ground truth."""
    if explain not in ("true", "predicted"):
        raise ValueError("explain must be 'true' or 'predicted'")
    known = set(predictor.card.classes("defect"))
    results: list[SampleResult] = []
    elapsed = 0.0
    for i, sample in enumerate(samples):
        truth = read_ground_truth(sample.truth)
        if not truth.boxes:
            continue
        with Image.open(sample.image) as im:
            image = im.convert("RGB")
        if truth.mask is not None and truth.mask.shape != (image.height, image.width):
            raise ValueError(f"{sample.truth} is {truth.mask.shape[::-1]} but its image is {image.size}")
        defect = sample.defect if explain == "true" and sample.defect in known else None
        start = time.perf_counter()
        heat = heatmap_fn(predictor, image, defect)
        elapsed += time.perf_counter() - start
        x, y = heat.peak
        results.append(
            SampleResult(
                image=str(sample.image),
                defect=sample.defect,
                explained=heat.defect,
                peak=(int(x), int(y)),
                box=tuple(int(v) for v in heat.box),
                hit=truth.contains(x, y),
                hit_tolerant=truth.contains(x, y, POINTING_TOLERANCE_PX),
                iou=round(best_iou(heat.box, truth), 4),
            )
        )
        if progress:
            progress(i + 1, len(samples))
    return summarise(results, dataset=dataset, explain=explain, method=method, seconds=elapsed)


def summarise(
    results: list[SampleResult], dataset: str = "", explain: str = "true", method: str = "", seconds: float = 0.0
) -> LocalisationReport:
    def stats(rows: list[SampleResult]) -> dict[str, float]:
        n = len(rows)
        return {
            "images": n,
            "pointing_game": round(sum(r.hit for r in rows) / n, 4) if n else 0.0,
            "pointing_game_tolerant": round(sum(r.hit_tolerant for r in rows) / n, 4) if n else 0.0,
            "box_iou_mean": round(sum(r.iou for r in rows) / n, 4) if n else 0.0,
            "box_iou_at_0_5": round(sum(r.iou >= 0.5 for r in rows) / n, 4) if n else 0.0,
        }

    overall = stats(results)
    per_class = {c: stats([r for r in results if r.defect == c]) for c in sorted({r.defect for r in results})}
    return LocalisationReport(
        dataset=dataset,
        explain=explain,
        images=overall["images"],
        pointing_game=overall["pointing_game"],
        pointing_game_tolerant=overall["pointing_game_tolerant"],
        tolerance_px=POINTING_TOLERANCE_PX,
        box_iou_mean=overall["box_iou_mean"],
        box_iou_at_0_5=overall["box_iou_at_0_5"],
        per_class=per_class,
        method=method,
        ms_per_image=round(1000 * seconds / len(results), 1) if results else 0.0,
        evaluated_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        results=results,
    )


def write_to_card(model_dir: str | Path, report: LocalisationReport, key: str) -> Path:
    """Set ``localisation[key]`` in the model card (``key`` names the evaluation set, e.g.
    ``"magnetic-tile test split"``); other keys and every other field of the card stay as written.
    The file is replaced atomically and is checked to still load."""
    from visionqc.model.card import CARD_FILE, read_card, update_card

    current = read_card(model_dir).raw.get("localisation")
    entries = {**(current if isinstance(current, dict) else {}), key: report.card_entry()}
    update_card(model_dir, {"localisation": entries})
    return Path(model_dir) / CARD_FILE


def held_out_samples(samples: list[LocalisationSample], root: Path, card_raw: dict) -> list[LocalisationSample]:
    """The samples in the card's test split (``training.split.test_files``, relative to the dataset root)."""
    split = (card_raw.get("training") or {}).get("split") or {}
    test_files = split.get("test_files")
    if not test_files:
        raise ValueError("the model card lists no test split (training.split.test_files); use --split all")
    wanted = {Path(p).as_posix() for p in test_files}
    return [s for s in samples if s.image.relative_to(root).as_posix() in wanted]


def localise(
    data_dir: str | Path,
    model_dir: str | Path,
    split: str = "auto",
    explain: str = "true",
    write: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[LocalisationReport, str]:
    """Measure the model's heatmaps on a dataset with masks or VOC boxes; returns (report, card key).

    ``split``: ``"test"`` = the held-out images named in the card (the dataset the model was trained on),
    ``"all"`` = every image with ground truth, ``"auto"`` = test if the model was trained on this dataset
    (same folder name) else all. With ``write``, the summary goes into the card as ``localisation[key]``.
    """
    from visionqc.model.card import PRIMARY_TASK
    from visionqc.model.predict import Predictor

    root = Path(data_dir).resolve()
    predictor = Predictor(model_dir)
    card = predictor.card
    samples = find_samples(root, skip_classes=[card.no_defect_class])
    trained_on = ((card.raw.get("training_data") or {}).get("name")) or ""
    if split == "auto":
        split = "test" if trained_on == root.name else "all"
    if split == "test":
        samples = held_out_samples(samples, root, card.raw)
        if not samples:
            raise ValueError(f"none of the card's test images has ground truth under {root}")
    elif split != "all":
        raise ValueError("split must be 'test', 'all' or 'auto'")
    unknown = sorted({s.defect for s in samples} - set(card.classes(PRIMARY_TASK)))
    if unknown and explain == "true":
        explain_note = f"; classes unknown to the model ({', '.join(unknown)}) explain the predicted class"
    else:
        explain_note = ""
    from visionqc.model.heatmaps import DEFAULT_BOX_THRESHOLD, DEFAULT_METHODS, DEFAULT_REFINE

    layers = ", ".join(
        f"{'Grad-CAM' if m == 'gradcam' else 'LayerCAM'} on {layer}" for layer, m in DEFAULT_METHODS.items()
    )
    method = (
        f"class activation maps of logit(class) - logit({card.no_defect_class}): {layers} (block 10 = 14x14, "
        f"head = 7x7), multiplied, sharpened by the feature contrast of block(s) "
        f"{', '.join(map(str, DEFAULT_REFINE))}, averaged over the image and its 3 flips; "
        f"box = region around the peak >= "
        f"{DEFAULT_BOX_THRESHOLD:.0%} of it{explain_note}"
    )
    report = evaluate(predictor, samples, explain=explain, progress=progress, dataset=root.name, method=method)
    key = f"{root.name} {'test split' if split == 'test' else 'all images'}"
    if write:
        write_to_card(model_dir, report, key)
    return report, key
