"""Pascal VOC bounding boxes (NEU-DET's layout: ``images/<defect>/x.jpg`` beside ``boxes/<defect>/x.xml``): the
boxes become the defect's region, hence its severity and location.
:func:`visionqc.training.datasets.load_dataset` recognises the layout and reads it here."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from visionqc.training.datasets import (
    DEFAULT_SEVERITY_THRESHOLDS,
    Dataset,
    DatasetError,
    Sample,
    _class_dirs,
    _finish,
    _image_size,
    _images_in,
    boxes_mask,
    region_labels,
)


def read_voc_boxes(box_path: Path) -> tuple[int, int, list[tuple[float, float, float, float]]]:
    """(width, height, boxes) from a Pascal VOC XML file; width/height are 0 if the file omits them."""
    try:
        tree = ET.parse(box_path)
    except (OSError, ET.ParseError) as exc:
        raise DatasetError(f"cannot read VOC file {box_path}: {exc}") from None
    root = tree.getroot()
    width = int(float(root.findtext("size/width") or 0))
    height = int(float(root.findtext("size/height") or 0))
    boxes = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        try:
            # VOC coordinates are 1-based and inclusive: pixel xmin..xmax covers xmax - xmin + 1 columns.
            xmin, ymin = float(box.findtext("xmin")) - 1, float(box.findtext("ymin")) - 1
            xmax, ymax = float(box.findtext("xmax")), float(box.findtext("ymax"))
        except (TypeError, ValueError):
            raise DatasetError(f"{box_path}: a bounding box has a missing or non-numeric coordinate") from None
        boxes.append((xmin, ymin, xmax, ymax))
    return width, height, boxes


def read_voc_folders(
    root: str | Path,
    no_defect_class: str | None = None,
    severity_thresholds: tuple[float, float] = DEFAULT_SEVERITY_THRESHOLDS,
) -> Dataset:
    """``<root>/images/<defect>/x.jpg`` with Pascal VOC boxes ``<root>/boxes/<defect>/x.xml``."""
    root = Path(root)
    box_root = root / "boxes" if (root / "boxes").is_dir() else root / "annotations"
    samples = []
    for class_dir in _class_dirs(root / "images"):
        for path in _images_in(class_dir):
            box_path = box_root / class_dir.name / (path.stem + ".xml")
            severity = location = share = None
            if box_path.is_file():
                width, height, boxes = read_voc_boxes(box_path)
                if not width or not height:
                    width, height = _image_size(path)
                if boxes:
                    severity, location, share = region_labels(boxes_mask(boxes, width, height), severity_thresholds)
            samples.append(Sample(path, class_dir.name, severity, location, share))
    return _finish(root, "voc", samples, no_defect_class, severity_thresholds)
