"""The elpv solar-cell set as it ships: labels.csv (image, defect_probability, type) -> four ordered defect levels,
splits stratified by level and type, clear messages for damaged labels, and a short training run on real cells."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionqc import cli
from visionqc.model.card import read_card
from visionqc.model.predict import Predictor
from visionqc.training.datasets import (
    PROBABILITY_TEST_FRACTION,
    DatasetError,
    default_test_fraction,
    load_dataset,
    stratified_split,
)
from visionqc.training.trainer import limit_per_class

LEVELS = ["functional", "defective_33", "defective_67", "defective_100"]


@pytest.fixture
def small_copy(elpv, tmp_path) -> Path:
    """A folder laid out like elpv: images/ with four real cells and a labels.csv the test rewrites."""
    rows = [line.split(",") for line in (elpv / "labels.csv").read_text(encoding="utf-8").splitlines()[1:5]]
    (tmp_path / "images").mkdir()
    for image, _, _ in rows:
        shutil.copy(elpv / image, tmp_path / image)
    (tmp_path / "labels.csv").write_text(
        "image,defect_probability,type\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8"
    )
    return tmp_path


def test_the_real_elpv_folder_reads_as_four_ordered_levels_with_types(elpv):
    dataset = load_dataset(elpv)
    assert dataset.format == "defect-probability"
    assert dataset.tasks == {"defect": LEVELS}  # no severity or location task: elpv has no regions
    assert dataset.no_defect_class == "functional"
    counts = {"functional": 1508, "defective_33": 295, "defective_67": 106, "defective_100": 715}
    assert dataset.class_counts() == counts
    assert dataset.group_by == "type"
    assert Counter(s.group for s in dataset.samples) == {"poly": 1550, "mono": 1074}
    by_level_and_type = Counter((s.defect, s.group) for s in dataset.samples)
    assert by_level_and_type[("defective_67", "mono")] == 56 and by_level_and_type[("functional", "poly")] == 920
    assert dataset.key(dataset.samples[0]) == "images/cell0001.png" and dataset.samples[0].defect == "defective_100"
    assert default_test_fraction(dataset) == PROBABILITY_TEST_FRACTION == 0.25
    # Naming the CSV itself reads the same dataset.
    assert load_dataset(elpv / "labels.csv").class_counts() == dataset.class_counts()


def test_splits_are_stratified_by_level_and_type(elpv):
    dataset = load_dataset(elpv)
    strata = dataset.strata()
    assert len(np.unique(strata)) == 8  # 4 levels x 2 types
    train, val, test = stratified_split(strata, 0.15, 0.25, seed=0)
    assert len(set(train) | set(val) | set(test)) == len(dataset.samples)
    assert not (set(train) & set(test)) and not (set(val) & set(test))
    everything = Counter((s.defect, s.group) for s in dataset.samples)
    held_out = Counter((dataset.samples[i].defect, dataset.samples[i].group) for i in test)
    for key, n in everything.items():  # every level-and-type cell holds out its own quarter (rounded)
        assert held_out[key] == round(n * 0.25), key
    # A dataset without groups stratifies exactly as before: on the defect class alone.
    plain = dataset.subset(range(len(dataset.samples)))
    plain.group_by = None
    assert np.array_equal(plain.strata(), dataset.labels("defect"))


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        ("image,defect_probability\n", None, r"needs the column\(s\) \['type'\]"),
        ("image,type\n", None, r"needs the column\(s\) \['defect_probability'\]"),
        ("file,prob,kind\n", None, r"needs the column\(s\) \['image', 'defect_probability', 'type'\]"),
        (None, "images/cell0001.png,0.5000,mono", r"labels.csv line 6: defect_probability '0.5000' is not one of"),
        (None, "images/cell0001.png,high,mono", r"labels.csv line 6: defect_probability 'high' is not one of"),
        (None, "images/nope.png,1.0000,mono", r"labels.csv line 6: image not found: images/nope.png"),
        (None, "images/cell0001.png,1.0000,", r"labels.csv line 6: 'type' must not be empty"),
        (None, "../elsewhere.png,1.0000,mono", r"labels.csv line 6: image '../elsewhere.png' is outside"),
        (None, "images/cell0001.png,1.0000,mono", r"line 6: image images/cell0001.png is listed twice \(first"),
    ],
)
def test_damaged_labels_get_a_message_naming_the_row(small_copy, header, row, message):
    labels = small_copy / "labels.csv"
    text = labels.read_text(encoding="utf-8")
    if header is not None:
        body = "\n".join(",".join(line.split(",")[: header.count(",") + 1]) for line in text.splitlines()[1:])
        labels.write_text(header + body + "\n", encoding="utf-8")
    else:
        labels.write_text(text + row + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        load_dataset(small_copy)


def test_the_intact_small_copy_reads_and_probabilities_match_within_rounding(small_copy):
    labels = small_copy / "labels.csv"
    labels.write_text(labels.read_text(encoding="utf-8").replace("0.0000", "0"), encoding="utf-8")
    dataset = load_dataset(small_copy)
    assert len(dataset.samples) == 4 and {s.defect for s in dataset.samples} <= set(LEVELS)


def test_a_damaged_labels_csv_is_a_message_through_the_cli(small_copy, capsys):
    (small_copy / "labels.csv").write_text("image,defect_probability,type\nimages/x.png,1,mono\n", encoding="utf-8")
    assert cli.main(["train", str(small_copy), "--out", str(small_copy / "m"), "--quiet"]) == 1
    assert "line 2: image not found: images/x.png" in capsys.readouterr().err
    assert not (small_copy / "m").exists()


def test_a_short_training_run_on_real_cells(elpv, tmp_path):
    """6 real cells per level (24 images, 2 views, a few epochs, phase 2 tried, no export): the card records
    the four levels, the split by level and type with the paper's 25 % test share, and the model predicts."""
    out = tmp_path / "elpv-small"
    argv = [
        "train", str(elpv), "--out", str(out), "--max-per-class", "6", "--views", "2", "--epochs", "5",
        "--phase2-epochs", "1", "--repeats", "0", "--no-export", "--seed", "1", "--quiet",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    card = read_card(out)
    assert card.classes("defect") == LEVELS and card.task_names == ["defect"]
    assert card.no_defect_class == "functional"
    split = card.raw["training"]["split"]
    assert split["method"].startswith("stratified by defect class and type")
    assert split["fractions"]["test"] == 0.25
    # The recorded test files are exactly what the seed gives on the same subset, stratified by level and type.
    subset = limit_per_class(load_dataset(elpv), 6, 1)
    _, _, test = stratified_split(subset.strata(), 0.15, 0.25, 1)
    assert sorted(split["test_files"]) == sorted(subset.key(subset.samples[i]) for i in test)
    assert card.raw["metrics"]["test"]["n"] == len(test)
    image = Image.open(elpv / "images" / "cell0001.png").convert("RGB")
    (prediction,) = Predictor(out).predict_images([image])
    assert prediction.defect.label in LEVELS
    assert sum(prediction.defect.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
