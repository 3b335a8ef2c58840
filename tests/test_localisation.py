"""Localisation scoring against hand-made masks and boxes, ground-truth readers, and the model card field."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from visionqc.model.card import read_card
from visionqc.model.heatmaps import Heatmap
from visionqc.training.localisation import (
    GroundTruth,
    LocalisationSample,
    box_iou,
    component_boxes,
    evaluate,
    find_samples,
    pointing_game,
    read_ground_truth,
    read_voc_boxes,
    summarise,
    write_to_card,
)


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_pointing_game_against_hand_made_masks():
    mask = np.zeros((50, 50), dtype=bool)
    mask[10:20, 30:40] = True
    truth = GroundTruth(boxes=component_boxes(mask), mask=mask)
    peaks = [(35, 15), (30, 10), (39, 19), (29, 15), (5, 5)]  # inside, corner, corner, 1 px left, far away
    assert pointing_game(peaks, [truth] * 5) == pytest.approx(3 / 5)
    assert pointing_game(peaks, [truth] * 5, tolerance=1) == pytest.approx(4 / 5)
    assert pointing_game(peaks, [truth] * 5, tolerance=15) == pytest.approx(4 / 5)  # (5,5) is 25+ px away
    assert pointing_game([], []) == 0.0


def test_pointing_game_against_boxes_with_tolerance():
    truth = GroundTruth(boxes=[(10, 10, 20, 20)])
    assert truth.contains(10, 10) and truth.contains(19, 19)
    assert not truth.contains(20, 15)
    assert truth.contains(22, 15, tolerance=3)
    assert not truth.contains(25, 25, tolerance=5)


def test_component_boxes_are_8_connected_regions():
    mask = np.zeros((10, 12), dtype=bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True  # a diagonal line: one region
    mask[5:8, 6:11] = True
    mask[0, 11] = True
    boxes = sorted(component_boxes(mask))
    assert boxes == [(1, 1, 4, 4), (6, 5, 11, 8), (11, 0, 12, 1)]
    assert component_boxes(mask, min_pixels=2) == [(1, 1, 4, 4), (6, 5, 11, 8)]
    # a U shape joins up through its bottom row
    u = np.zeros((5, 5), dtype=bool)
    u[0:4, 0] = u[0:4, 4] = True
    u[4, :] = True
    assert component_boxes(u) == [(0, 0, 5, 5)]


def test_voc_boxes_are_read_as_exclusive_pixel_boxes(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text(
        "<annotation><object><name>x</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>10</xmax><ymax>12</ymax>"
        "</bndbox></object><object><bndbox><xmin>50</xmin><ymin>60</ymin><xmax>70</xmax><ymax>80</ymax></bndbox>"
        "</object></annotation>"
    )
    assert read_voc_boxes(xml) == [(1, 2, 10, 12), (49, 59, 70, 80)]
    assert read_ground_truth(xml).mask is None


def test_real_ground_truth_files_are_found(magnetic_tile, neu_det):
    samples = find_samples(magnetic_tile, skip_classes=["free"])
    assert {s.defect for s in samples} == {"blowhole", "break", "crack", "fray", "uneven"}
    truth = read_ground_truth(samples[0].truth)
    assert truth.mask is not None and truth.mask.any() and truth.boxes
    neu = find_samples(neu_det)
    assert len(neu) == 1800 and neu[0].truth.suffix == ".xml"
    assert read_ground_truth(neu[0].truth).boxes


class _Card:
    def classes(self, task):
        return ["crack", "free"]


class _FakePredictor:
    card = _Card()


def test_evaluate_scores_each_heatmap_against_its_mask(tmp_path):
    for name, (x, y) in {"a": (5, 5), "b": (30, 30)}.items():
        (tmp_path / "images" / "crack").mkdir(parents=True, exist_ok=True)
        (tmp_path / "masks" / "crack").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40)).save(tmp_path / "images" / "crack" / f"{name}.jpg")
        mask = np.zeros((40, 40), dtype=np.uint8)
        mask[y - 2 : y + 3, x - 2 : x + 3] = 255
        Image.fromarray(mask).save(tmp_path / "masks" / "crack" / f"{name}.png")
    samples = find_samples(tmp_path)

    def always_top_left(predictor, image, defect):  # points at (5, 5) with a 5x5 box there
        return Heatmap(array=np.zeros((40, 40), np.float32), box=(3, 3, 8, 8), defect=defect, peak=(5, 5))

    report = evaluate(_FakePredictor(), samples, heatmap_fn=always_top_left, dataset="toy")
    assert report.images == 2
    assert report.pointing_game == 0.5
    assert report.box_iou_mean == 0.5  # 1.0 and 0.0
    assert report.per_class["crack"]["pointing_game"] == 0.5
    assert [r.hit for r in report.results] == [True, False]


def test_card_localisation_field_is_written_and_the_card_still_loads(tmp_path, default_model_dir):
    model = tmp_path / "model"
    shutil.copytree(default_model_dir, model)
    before = json.loads((model / "model.json").read_text())
    report = summarise([], dataset="toy")
    write_to_card(model, report, key="toy held-out")
    after = json.loads((model / "model.json").read_text())
    assert after["localisation"]["toy held-out"]["dataset"] == "toy"
    assert "results" not in after["localisation"]["toy held-out"]
    assert {k: v for k, v in after.items() if k != "localisation"} == {
        k: v for k, v in before.items() if k != "localisation"
    }
    read_card(model)


def test_samples_skip_the_no_defect_class(tmp_path):
    (tmp_path / "images" / "free").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "free" / "x.jpg")
    with pytest.raises(ValueError, match="no images with masks"):
        find_samples(tmp_path, skip_classes=["free"])
    assert isinstance(LocalisationSample, type)


def test_localise_command_scores_a_dataset_and_records_it_in_the_card(
    tmp_path, default_model_dir, magnetic_tile, capsys
):
    from visionqc.cli import main

    model = tmp_path / "model"
    shutil.copytree(default_model_dir, model)
    data = tmp_path / "tiles"
    for cls, name in (("break", "exp6_num_26244"), ("blowhole", "exp1_num_297464")):
        for kind, ext in (("images", "jpg"), ("masks", "png")):
            (data / kind / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(magnetic_tile / kind / cls / f"{name}.{ext}", data / kind / cls / f"{name}.{ext}")
    assert main(["localise", str(data), "--model", str(model)]) == 0  # not the training set: all images
    entry = json.loads((model / "model.json").read_text())["localisation"]["tiles all images"]
    assert entry["images"] == 2 and set(entry["per_class"]) == {"break", "blowhole"}
    assert 0.0 <= entry["pointing_game"] <= entry["pointing_game_tolerant"] <= 1.0
    assert "pointing game" in capsys.readouterr().err
    read_card(model)
    # Both images are in the card's test split (the held-out images of magnetic-tile).
    assert main(["localise", str(data), "--model", str(model), "--split", "test", "--dry-run"]) == 0
    assert "2 images" in capsys.readouterr().err
    assert "tiles test split" not in json.loads((model / "model.json").read_text())["localisation"]
