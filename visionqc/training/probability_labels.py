"""Defect-probability labels, as the elpv solar-cell set ships them: ``labels.csv`` with ``image``,
``defect_probability`` and ``type`` -> four ordered defect classes, splits stratified by level and type (the
paper's protocol). :func:`visionqc.training.datasets.load_dataset` recognises the layout and reads it here."""

from __future__ import annotations

import csv
from pathlib import Path

from visionqc.training.datasets import Dataset, DatasetError, Sample, _class_dirs, _read_csv

# The expert's defect probability -> the defect class. "functional" is the paper's own word for a cell with
# probability 0 and is the no-defect class; each defective level carries its probability in percent, so the
# name says what the expert said, the levels read in order of certainty, and the names never depend on which
# levels a subset happens to contain (stable across splits, exports and cards). Plain ASCII with no separator
# that a file system or a CSV could mangle, so an exported dataset keeps them as folder names.
DEFECT_PROBABILITY_LEVELS: tuple[tuple[float, str], ...] = (
    (0.0, "functional"),
    (1 / 3, "defective_33"),
    (2 / 3, "defective_67"),
    (1.0, "defective_100"),
)
PROBABILITY_COLUMNS = ("image", "defect_probability", "type")
PROBABILITY_TOLERANCE = 0.005  # 0.3333 and 0.333 are both 1/3; nothing else is within this of a level
# The paper's protocol for such a set: 25 % held out for testing (Deitsch et al. 2019).
PROBABILITY_TEST_FRACTION = 0.25


def is_probability_csv(csv_path: Path) -> bool:
    """Whether ``csv_path`` is meant as defect-probability labels: its header names ``defect_probability`` or
    ``type``, or it sits beside a lone ``images/`` folder (elpv's layout) without the class-folder CSV's
    ``severity``/``location``. A damaged one is then read by :func:`read_defect_probability_csv`, whose
    message names what is missing, instead of being mistaken for class folders."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            header = {h.strip().lower() for h in next(csv.reader(fh), [])}
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    if header & {"defect_probability", "type"}:
        return True
    root = csv_path.parent
    lone_images = [p.name for p in _class_dirs(root)] == ["images"]
    return lone_images and not header & {"severity", "location", "defect"}


def _probability_level(text: str, where: str) -> str:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    for level, name in DEFECT_PROBABILITY_LEVELS:
        if abs(value - level) <= PROBABILITY_TOLERANCE:
            return name
    known = ", ".join(f"{level:.4f}" for level, _ in DEFECT_PROBABILITY_LEVELS)
    raise DatasetError(f"{where}: defect_probability {text!r} is not one of the four levels ({known})")


def read_defect_probability_csv(csv_path: str | Path) -> Dataset:
    """A ``labels.csv`` with ``image`` (relative to the CSV's folder), ``defect_probability`` and ``type``.

    This is how the elpv solar-cell set ships. The defect task gets four ordered classes, one per expert
    probability (:data:`DEFECT_PROBABILITY_LEVELS`): ``functional`` (0, the no-defect class),
    ``defective_33``, ``defective_67`` and ``defective_100``. Four levels rather than defect yes/no plus a
    severity, because the four levels are what the published results score (four-class accuracy), and
    functional-vs-defective is read off them. ``type`` (mono/poly crystalline) becomes each sample's group:
    splits are stratified by level *and* type, as in the paper. The dataset is marked ``symmetric``: cells
    are square and cracks have no preferred direction, so a mirrored cell is as real as the original; a
    quarter turn also lays the busbars the other way, which training accepts as augmentation, and the number
    of symmetries averaged at prediction (identity, + half turn, + mirrors, + quarter turns) is chosen on
    validation. Every row must name an existing image, once, with one of the four probabilities and a type;
    otherwise :class:`DatasetError` names the line.
    """
    csv_path = Path(csv_path)
    rows = _read_csv(csv_path, required=PROBABILITY_COLUMNS)
    root = csv_path.parent.resolve()
    samples, seen = [], {}
    for n, row in enumerate(rows, start=2):
        where = f"{csv_path.name} line {n}"
        image, probability, kind = (row[c].strip() for c in PROBABILITY_COLUMNS)
        if not image or not probability or not kind:
            empty = [c for c, v in zip(PROBABILITY_COLUMNS, (image, probability, kind), strict=True) if not v]
            raise DatasetError(f"{where}: {', '.join(repr(c) for c in empty)} must not be empty")
        defect = _probability_level(probability, where)
        path = (root / image).resolve()
        if not path.is_relative_to(root):
            raise DatasetError(f"{where}: image {image!r} is outside the dataset folder")
        if not path.is_file():
            raise DatasetError(f"{where}: image not found: {image}")
        if path in seen:
            raise DatasetError(f"{where}: image {image} is listed twice (first on line {seen[path]})")
        seen[path] = n
        samples.append(Sample(path, defect, group=kind))
    if not samples:
        raise DatasetError(f"{csv_path} lists no images")
    return Dataset(
        root=root,
        format="defect-probability",
        samples=samples,
        defect_classes=[name for _, name in DEFECT_PROBABILITY_LEVELS],
        no_defect_class=DEFECT_PROBABILITY_LEVELS[0][1],
        group_by="type",
        symmetric=True,
    )


def default_test_fraction(dataset: Dataset) -> float:
    """The held-out share ``train`` uses unless told: the paper's 25 % for a defect-probability set, else 15 %."""
    return PROBABILITY_TEST_FRACTION if dataset.format == "defect-probability" else 0.15
