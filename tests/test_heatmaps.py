"""Heatmaps: shape, peak on a real defect with its ground-truth mask, the box, the overlay and the cache."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from visionqc.model import heatmaps
from visionqc.model.heatmaps import (
    BOX_COLOR,
    Heatmap,
    HeatmapCache,
    box_of,
    heatmap_for_image,
    heatmap_from_input_map,
    overlay,
    region_around_peak,
)
from visionqc.training.localisation import read_mask

# A test-split image (not used in training) with a large "break" defect at the tile's edge.
REAL_DEFECT = ("break", "exp6_num_26244")


@pytest.fixture(scope="module")
def predictor(default_model_dir):
    from visionqc.model.predict import Predictor

    return Predictor(default_model_dir)


def test_region_and_box_around_the_peak():
    heat = np.zeros((20, 30), dtype=np.float32)
    heat[5:9, 10:16] = 0.8
    heat[6, 12] = 1.0
    heat[15:18, 2:4] = 0.9  # hot but not connected to the peak: outside the box
    region = region_around_peak(heat, 0.5)
    assert region.sum() == 4 * 6
    assert box_of(region) == (10, 5, 16, 9)
    assert box_of(np.zeros((4, 5), dtype=bool)) == (0, 0, 5, 4)


def test_input_map_is_resized_to_the_image_with_peak_and_box_scaled():
    heat = np.zeros((10, 10), dtype=np.float32)
    heat[2:4, 6:8] = 1.0
    hm = heatmap_from_input_map(heat, "crack", (200, 100))
    assert hm.array.shape == (100, 200)
    assert hm.array.dtype == np.float32
    assert hm.array.min() >= 0.0 and hm.array.max() <= 1.0
    assert hm.box == (120, 20, 160, 40)
    x, y = hm.peak
    assert 120 <= x < 160 and 20 <= y < 40
    assert hm.defect == "crack"


def test_heatmap_of_a_real_defect_points_inside_its_mask(predictor, magnetic_tile):
    defect, name = REAL_DEFECT
    image = Image.open(magnetic_tile / "images" / defect / f"{name}.jpg").convert("RGB")
    mask = read_mask(magnetic_tile / "masks" / defect / f"{name}.png")
    hm = heatmap_for_image(predictor, image)
    assert hm.array.shape == (image.height, image.width)
    assert hm.array.min() >= 0.0 and hm.array.max() <= 1.0
    assert hm.defect == defect  # the model predicts it, and the heatmap explains the predicted class
    x, y = hm.peak
    assert mask[y, x], f"peak {hm.peak} is not on the {defect} (mask has {mask.sum()} defect pixels)"
    x0, y0, x1, y1 = hm.box
    assert mask[y0:y1, x0:x1].any()


def test_a_named_class_is_explained_and_an_unknown_one_refused(predictor, magnetic_tile):
    defect, name = REAL_DEFECT
    image = Image.open(magnetic_tile / "images" / defect / f"{name}.jpg").convert("RGB")
    assert heatmap_for_image(predictor, image, "crack").defect == "crack"
    with pytest.raises(ValueError, match="unknown defect class"):
        heatmap_for_image(predictor, image, "rust")


def test_defect_free_prediction_explains_the_likeliest_defect(predictor, magnetic_tile):
    free = sorted((magnetic_tile / "images" / "free").glob("*.jpg"))[0]
    hm = heatmap_for_image(predictor, Image.open(free).convert("RGB"))
    assert hm.defect != predictor.card.no_defect_class


def _flat_heatmap(size=(40, 30), box=(10, 5, 20, 15)) -> Heatmap:
    arr = np.zeros((size[1], size[0]), dtype=np.float32)
    arr[box[1] : box[3], box[0] : box[2]] = 1.0
    return Heatmap(array=arr, box=box, defect="crack", peak=(12, 8))


def test_overlay_keeps_cold_pixels_and_draws_the_box():
    image = Image.new("RGB", (40, 30), (100, 100, 100))
    hm = _flat_heatmap()
    out = overlay(image, hm, opacity=0.6)
    assert out.size == image.size and out.mode == "RGB"
    px = np.asarray(out)
    assert tuple(px[25, 35]) == (100, 100, 100)  # cold: unchanged
    assert tuple(px[5, 15]) == BOX_COLOR  # top edge of the box
    assert tuple(px[10, 15]) != (100, 100, 100)  # hot: tinted
    plain = np.asarray(overlay(image, hm, opacity=0.0, draw_box=False))
    assert (plain == 100).all()
    with pytest.raises(ValueError):
        overlay(image, hm, opacity=1.5)


def test_overlay_scales_to_another_image_size():
    out = overlay(Image.new("RGB", (80, 60)), _flat_heatmap(), opacity=0.5)
    assert out.size == (80, 60)
    assert tuple(np.asarray(out)[10, 30]) == BOX_COLOR  # box scaled x2: top edge at y=10


def test_cache_stores_once_and_reuses(tmp_path, predictor, magnetic_tile, monkeypatch):
    defect, name = REAL_DEFECT
    image = Image.open(magnetic_tile / "images" / defect / f"{name}.jpg").convert("RGB")
    cache = HeatmapCache(tmp_path / "heatmaps")
    sha = "ab" * 32
    first = cache.get_or_compute(predictor, image, sha)
    files = list((tmp_path / "heatmaps").rglob("*.npz"))
    assert len(files) == 1 and files[0].parent.name == "ab"
    assert files[0].stat().st_size < 100_000

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(heatmaps, "heatmap_at_input_size", fail)
    second = cache.get_or_compute(predictor, image, sha)
    assert second.defect == first.defect and second.box == first.box
    assert np.abs(second.array - first.array).max() <= 1 / 255 + 1e-6
    with pytest.raises(ValueError):
        cache.path("../../etc", "m", "1", "x")


def test_damaged_cache_file_is_recomputed(tmp_path, predictor, magnetic_tile):
    defect, name = REAL_DEFECT
    image = Image.open(magnetic_tile / "images" / defect / f"{name}.jpg").convert("RGB")
    cache = HeatmapCache(tmp_path)
    sha = "cd" * 32
    path = cache.path(sha, predictor.model_name, predictor.model_version, "auto")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip")
    assert cache.get_or_compute(predictor, image, sha).array.shape == (image.height, image.width)
