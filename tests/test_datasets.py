"""Dataset readers on real images: class folders (+CSV), CSV manifest, COCO JSON, masks, Pascal VOC boxes."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionqc.training.datasets import (
    LOCATION_CLASSES,
    SEVERITY_CLASSES,
    DatasetError,
    boxes_mask,
    load_dataset,
    region_labels,
    severity_from_share,
    stratified_split,
)
from visionqc.training.voc import read_voc_boxes


def _real_images(root: Path, cls: str, n: int) -> list[Path]:
    return sorted((root / "images" / cls).glob("*.jpg"))[:n]


def _copy(paths: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, folder / p.name)) for p in paths]


# --- severity and location, by hand -------------------------------------------------------------------------


def test_region_labels_by_hand():
    mask = np.zeros((30, 30), dtype=bool)
    mask[0:3, 27:30] = True  # 9 of 900 pixels = 1 %, centre (28.5, 1.5) -> top-right cell
    assert region_labels(mask) == ("medium", "top-right", pytest.approx(0.01))
    mask = np.zeros((30, 30), dtype=bool)
    mask[14:16, 14:16] = True  # 4 / 900 = 0.44 %... still medium with the default 0.3 % / 3 % cuts
    assert region_labels(mask)[:2] == ("medium", "center")
    mask = np.zeros((100, 100), dtype=bool)
    mask[90, 5] = True  # 0.01 % in the bottom-left cell
    assert region_labels(mask)[:2] == ("low", "bottom-left")
    assert region_labels(np.zeros((10, 10), dtype=bool)) == (None, None, 0.0)
    assert severity_from_share(0.03) == "high" and severity_from_share(0.0299) == "medium"
    assert severity_from_share(0.2, (0.1, 0.5)) == "medium"


def test_boxes_mask_counts_overlaps_once():
    mask = boxes_mask([(0, 0, 10, 10), (5, 5, 15, 15), (-5, -5, 2, 2)], 20, 20)
    assert mask.sum() == 100 + 100 - 25
    assert boxes_mask([(30, 30, 40, 40)], 20, 20).sum() == 0


# --- class folders and CSV ----------------------------------------------------------------------------------


def test_class_folders_with_labels_csv(magnetic_tile, tmp_path):
    root = tmp_path / "folders"
    cracks = _copy(_real_images(magnetic_tile, "crack", 3), root / "crack")
    _copy(_real_images(magnetic_tile, "free", 2), root / "ok")
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "severity", "location"])
        writer.writerow([f"crack/{cracks[0].name}", "high", "top-left"])
        writer.writerow([cracks[1].name, "low", ""])  # a bare file name is accepted too
    ds = load_dataset(root)
    assert ds.format == "class-folders"
    assert ds.defect_classes == ["crack", "ok"] and ds.no_defect_class == "ok"
    by_name = {s.path.name: s for s in ds.samples}
    assert (by_name[cracks[0].name].severity, by_name[cracks[0].name].location) == ("high", "top-left")
    assert (by_name[cracks[1].name].severity, by_name[cracks[1].name].location) == ("low", None)
    assert by_name[cracks[2].name].severity is None
    assert ds.tasks["severity"] == SEVERITY_CLASSES
    assert list(ds.labels("severity")) == [2, 0, -1, -1, -1]
    assert ds.tasks["location"] == LOCATION_CLASSES  # known vocabularies keep their canonical order


def test_plain_class_folders_without_defect_free_images_get_an_untrained_no_defect_class(magnetic_tile, tmp_path):
    root = tmp_path / "folders"
    _copy(_real_images(magnetic_tile, "crack", 2), root / "crack")
    _copy(_real_images(magnetic_tile, "fray", 2), root / "fray")
    ds = load_dataset(root)
    assert ds.defect_classes == ["crack", "fray", "no_defect"]
    assert ds.no_defect_class == "no_defect" and not ds.has_no_defect_images
    assert list(ds.tasks) == ["defect"]


def test_csv_manifest(magnetic_tile, tmp_path):
    images = _copy(
        _real_images(magnetic_tile, "blowhole", 2) + _real_images(magnetic_tile, "free", 1), tmp_path / "img"
    )
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "image,defect,severity,location\n"
        f"img/{images[0].name},blowhole,low,center\n"
        f"img/{images[1].name},blowhole,medium,bottom\n"
        f"img/{images[2].name},good,,\n",
        encoding="utf-8",
    )
    for path in (manifest, tmp_path):  # the CSV itself, or a folder holding manifest.csv
        ds = load_dataset(path)
        assert ds.format == "csv-manifest"
        assert ds.no_defect_class == "good"
        assert [(s.defect, s.severity, s.location) for s in ds.samples] == [
            ("blowhole", "low", "center"),
            ("blowhole", "medium", "bottom"),
            ("good", None, None),
        ]
        assert ds.tasks["location"] == LOCATION_CLASSES


def test_csv_manifest_errors_name_the_line(magnetic_tile, tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image,defect\nmissing.jpg,crack\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="line 2: image not found"):
        load_dataset(manifest)
    manifest.write_text("file,label\nx.jpg,crack\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="needs the column"):
        load_dataset(manifest)


# --- COCO -------------------------------------------------------------------------------------------------


def test_coco_json_as_cardd_ships_it(magnetic_tile, tmp_path):
    # CarDD layout: annotations/instances_train2017.json beside train2017/
    root = tmp_path / "CarDD_COCO"
    images = _copy(_real_images(magnetic_tile, "crack", 2) + _real_images(magnetic_tile, "free", 1), root / "train2017")
    sizes = [Image.open(p).size for p in images]
    (w0, h0), (w1, h1), (w2, h2) = sizes
    coco = {
        "images": [
            {"id": 1, "file_name": images[0].name, "width": w0, "height": h0},
            {"id": 2, "file_name": images[1].name, "width": w1, "height": h1},
            {"id": 3, "file_name": images[2].name, "width": w2, "height": h2},
        ],
        "categories": [{"id": 1, "name": "dent"}, {"id": 2, "name": "scratch"}],
        "annotations": [
            # image 1: a small scratch polygon in the top-left corner and a large dent box at the bottom right:
            # the dent covers more area, so the image is a dent; the region is their union.
            {
                "id": 1,
                "image_id": 1,
                "category_id": 2,
                "bbox": [0, 0, 4, 4],
                "area": 16,
                "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]],
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 1,
                "bbox": [w0 - 40, h0 - 40, 40, 40],
                "area": 1600,
                "segmentation": [],
            },
            # image 2: one box-only scratch in the centre
            {
                "id": 3,
                "image_id": 2,
                "category_id": 2,
                "bbox": [w1 / 2 - 2, h1 / 2 - 2, 4, 4],
                "area": 16,
                "iscrowd": 0,
            },
        ],
    }
    (root / "annotations").mkdir()
    json_path = root / "annotations" / "instances_train2017.json"
    json_path.write_text(json.dumps(coco), encoding="utf-8")
    ds = load_dataset(json_path)
    assert ds.format == "coco"
    assert ds.defect_classes == ["dent", "no_defect", "scratch"] and ds.no_defect_class == "no_defect"
    first, second, third = ds.samples
    assert first.defect == "dent" and first.location == "bottom-right"
    assert first.area_share == pytest.approx((1600 + 16) / (w0 * h0), rel=0.05)
    assert second.defect == "scratch" and second.location == "center" and second.severity == "low"
    assert (third.defect, third.severity, third.location) == ("no_defect", None, None)


def test_coco_missing_image_is_a_clear_error(tmp_path):
    path = tmp_path / "instances_val2017.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "nope.jpg"}], "categories": []}))
    with pytest.raises(DatasetError, match="nope.jpg not found"):
        load_dataset(path)


# --- masks and VOC boxes (the two shared datasets) ---------------------------------------------------------


def test_masks_on_a_real_subset_match_the_mask_pixels(magnetic_tile, tmp_path):
    root = tmp_path / "mt"
    for cls in ("uneven", "free"):
        for image in _copy(_real_images(magnetic_tile, cls, 2), root / "images" / cls):
            _copy([magnetic_tile / "masks" / cls / (image.stem + ".png")], root / "masks" / cls)
    ds = load_dataset(root)
    assert ds.format == "masks" and ds.no_defect_class == "free"
    for sample in ds.samples:
        if sample.defect == "free":
            assert sample.severity is None and sample.location is None
            continue
        mask = np.asarray(Image.open(root / "masks" / "uneven" / (sample.path.stem + ".png")).convert("L")) > 127
        assert sample.area_share == pytest.approx(mask.mean())
        assert sample.severity == severity_from_share(mask.mean())


def test_the_real_magnetic_tile_dataset(magnetic_tile):
    ds = load_dataset(magnetic_tile)
    assert ds.class_counts() == {"blowhole": 115, "break": 85, "crack": 57, "fray": 32, "free": 952, "uneven": 103}
    assert ds.no_defect_class == "free"
    defects = [s for s in ds.samples if s.defect != "free"]
    # 4 "uneven" masks are empty: those images keep their defect label but no severity/location.
    assert sum(s.severity is None for s in defects) == 4
    assert {s.severity for s in defects} == {None, "low", "medium", "high"}


def test_voc_boxes_from_real_neu_det(neu_det):
    width, height, boxes = read_voc_boxes(neu_det / "boxes" / "crazing" / "crazing_1.xml")
    assert (width, height) == (200, 200)
    # <xmin>2 <ymin>2 <xmax>193 <ymax>194, 1-based inclusive -> 192 x 193 pixels
    assert boxes == [(1.0, 1.0, 193.0, 194.0)]
    severity, location, share = region_labels(boxes_mask(boxes, width, height))
    assert share == pytest.approx(192 * 193 / 40000)
    assert (severity, location) == ("high", "center")
    ds = load_dataset(neu_det, severity_thresholds=(0.2, 0.45))
    assert ds.format == "voc" and len(ds.samples) == 1800
    assert ds.no_defect_class == "no_defect" and not ds.has_no_defect_images
    assert {s.severity for s in ds.samples} == {"low", "medium", "high"}


def test_unknown_layouts_are_user_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="CSV manifest"):
        load_dataset(tmp_path / "notes.txt")
    with pytest.raises(DatasetError, match="no class folders"):
        load_dataset(tmp_path)


# --- split ------------------------------------------------------------------------------------------------


def test_stratified_split_is_disjoint_proportional_and_seeded():
    labels = np.array([0] * 100 + [1] * 20 + [2] * 3)
    train, val, test = stratified_split(labels, 0.15, 0.15, seed=7)
    assert len(set(train) | set(val) | set(test)) == len(labels)
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert np.bincount(labels[test]).tolist() == [15, 3, 1]
    assert np.bincount(labels[val]).tolist() == [15, 3, 1]
    again = stratified_split(labels, 0.15, 0.15, seed=7)
    assert all((a == b).all() for a, b in zip((train, val, test), again, strict=True))
    other = stratified_split(labels, 0.15, 0.15, seed=8)
    assert not (other[2] == test).all()
