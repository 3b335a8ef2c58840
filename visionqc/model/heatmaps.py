"""Class-activation heatmaps: where the network looked for the defect it reports, and the box around it.

The method is class activation mapping (Grad-CAM, Selvaraju et al. 2017; LayerCAM, Jiang et al. 2021)
computed on more than one layer and combined, because the last feature map of EfficientNet-Lite0 is only
7x7 at a 224 px input: one cell is a seventh of the image, too coarse to point at a blowhole. Earlier
layers (14x14 after block 10) are sharper but noisier; their product with the last layer keeps the sharp
detail only where the last layer agrees. The product is then
sharpened once more by a class-agnostic, image-guided map at 28x28: how unlike the rest of the image each
position's block-4 features are (defects are local and rare on a part's surface). Which layers and how to
combine them was chosen by measuring the pointing game on the held-out magnetic-tile defects (see
``python -m visionqc localise`` and ``visionqc/training/localisation.py``; the numbers are in the model card). On
the 59 test-split defects and the first shipped model, the pointing game (strict / within 15 px) was:
last layer alone 0.25 / 0.34; Grad-CAM on block 10 x last layer 0.32 / 0.66; the same x block-4 contrast
0.51 / 0.71; LayerCAM on block 10 x last layer x block-4 contrast (the default) 0.59 / 0.76, and 0.61 /
0.78 with the retrained model. Running the network at 320 px instead of 224 px did not help (0.63 / 0.76,
then 0.59 / 0.76) and costs twice the time; blurring the map before taking its peak lowered both.
Averaging the map over the image and its three flips (one batch of four) was chosen on the validation
defects (0.64 / 0.81 -> 0.66 / 0.83) and gives 0.69 / 0.83 on the test defects.

The score whose gradient is taken is the defect logit minus the no-defect logit: "what makes this look
like a crack rather than a good tile", which ignores texture both classes share.

Heatmaps are never computed during batch classification: the pages ask for one when a person opens an
inspection, and :class:`HeatmapCache` keeps it as a small ``.npz`` keyed by image SHA-256 and model version.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from visionqc.model.card import PRIMARY_TASK

# Backbone block indices whose outputs feed the heatmap; "head" is the map the logits are pooled from: the final
# 1x1 conv (1280 channels), or a conv-head network's own map (see DefectNet.last_map).
# Block 10 is the last block at stride 16 (14x14 at 224 px), block 14 the last at stride 32.
DEFAULT_LAYERS: tuple[int | str, ...] = (10, "head")
# Per layer: LayerCAM (positive gradients kept per position) is sharper than Grad-CAM on the 14x14 block;
# on the last layer, whose gradient is the same at every position, Grad-CAM is the class activation map.
DEFAULT_METHODS: dict[int | str, str] = {10: "layercam", "head": "gradcam"}
# Blocks whose features sharpen the class map by local contrast (block 4: stride 8, 28x28 at 224 px).
DEFAULT_REFINE: tuple[int, ...] = (4,)
# The box encloses the region around the peak at least this hot (on the product of three maps, 0.25 of the
# peak is about half of the peak of their geometric mean).
DEFAULT_BOX_THRESHOLD = 0.25
# Part of every cached heatmap's file name: bump it when the method changes so stale maps are not served.
METHOD_VERSION = "m2"
BOX_COLOR = (0, 255, 255)  # cyan: stands out on both the dark and the hot end of the colour map


@dataclass(frozen=True)
class Heatmap:
    """A heatmap for one image and one defect class.

    ``array`` is float32 [H, W] in 0..1 at the image's size; ``box`` is ``(x0, y0, x1, y1)`` in image pixels
    (x1, y1 exclusive) around the hottest region; ``peak`` is the ``(x, y)`` pixel of the maximum.
    """

    array: np.ndarray
    box: tuple[int, int, int, int]
    defect: str
    peak: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL counts."""
        return self.array.shape[1], self.array.shape[0]


# --- the network part ---------------------------------------------------------------------------


def _layer_key(layer: int | str) -> int:
    """Order layers along the network: blocks by index, the head conv after every block."""
    return 10_000 if layer == "head" else int(layer)


def class_activation_maps(
    model: torch.nn.Module,
    batch: torch.Tensor,
    target: int | None,
    contrast: int | None = None,
    layers: tuple[int | str, ...] = DEFAULT_LAYERS,
    method: str | dict[int | str, str] = "gradcam",
    keep: tuple[int, ...] = (),
    kept: dict[int, torch.Tensor] | None = None,
) -> dict[int | str, torch.Tensor]:
    """Grad-CAM of ``logit[target] - logit[contrast]`` at each layer, each [B, h, w], rectified, not normalised.

    Works on a plain or a BatchNorm-fused :class:`~visionqc.model.network.DefectNet` without hooks and without
    changing the model (so a model shared by several app sessions stays untouched): everything before the
    first requested layer runs without autograd, and gradients are taken with respect to the activations.
    """
    ordered = sorted(layers, key=_layer_key)
    first = _layer_key(ordered[0])
    wanted = {_layer_key(layer): layer for layer in ordered}
    acts: dict[int | str, torch.Tensor] = {}

    def keep_act(key: int, x: torch.Tensor) -> torch.Tensor:
        if key == first:
            x = x.detach().requires_grad_(True)
        if key in wanted:
            acts[wanted[key]] = x
        return x

    with torch.enable_grad():
        with torch.no_grad():
            x = model.stem(batch)
        blocks = model.logit_blocks  # a conv-head network reads its logits before the last blocks
        late = [layer for layer in ordered if _layer_key(layer) != 10_000 and _layer_key(layer) >= blocks]
        if late:
            raise ValueError(
                f"this network's logits do not depend on block(s) {late}: it reads them after block {blocks - 1}"
            )
        for idx in range(blocks):
            with torch.set_grad_enabled(idx > first):
                x = keep_act(idx, model.block(idx, x))
            if idx in keep and kept is not None:
                kept[idx] = x.detach()
        with torch.set_grad_enabled(first < 10_000):
            x = model.last_map(x)
        x = keep_act(10_000, x)
        logits = model.map_logits(x)[PRIMARY_TASK]
        if target is None:  # the likeliest class other than ``contrast`` (no second forward pass needed)
            ranked = logits[0].detach().clone()
            if contrast is not None:
                ranked[contrast] = float("-inf")
            target = int(ranked.argmax())
        if kept is not None:
            kept[-1] = torch.tensor(target)  # the class explained, for the caller
        score = logits[:, target]
        if contrast is not None:
            score = score - logits[:, contrast]
        names = list(acts)
        grads = torch.autograd.grad(score.sum(), [acts[n] for n in names])
    maps = {}
    for name, grad in zip(names, grads, strict=True):
        act = acts[name].detach()
        if (
            method.get(name, "gradcam") if isinstance(method, dict) else method
        ) == "layercam":  # Jiang et al. 2021: per-position positive gradients, sharper on early layers
            maps[name] = torch.relu((torch.relu(grad) * act).sum(dim=1))
        else:
            weights = grad.mean(dim=(2, 3), keepdim=True)
            maps[name] = torch.relu((weights * act).sum(dim=1))
    return maps


def feature_contrast(act: torch.Tensor) -> torch.Tensor:
    """How unlike the rest of the image each position's features are: mean squared robust z-score over
    channels, [B, C, h, w] -> [B, h, w]. Class-agnostic and fine-grained; it sharpens the class map."""
    flat = act.flatten(2)
    median = flat.median(dim=2, keepdim=True).values
    spread = (flat - median).abs().median(dim=2, keepdim=True).values * 1.4826 + 1e-3
    z = ((flat - median) / spread).clamp(-20, 20)
    return z.pow(2).mean(dim=1).reshape(act.shape[0], *act.shape[2:])


def combine_maps(maps: dict[int | str, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Upsample every layer's map to ``size`` (h, w), normalise each to 0..1, multiply them; -> [B, h, w] in 0..1.

    The product keeps a fine layer's detail only where the coarse layer agrees (a geometric mean would
    give the same ranking; the product is simply rescaled to 0..1 afterwards).
    """
    combined = None
    for cam in maps.values():
        up = torch.nn.functional.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        up = _normalise(up)
        combined = up if combined is None else combined * up
    return _normalise(combined)


def _normalise(cams: torch.Tensor) -> torch.Tensor:
    flat = cams.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    hi = flat.max(dim=1).values[:, None, None]
    return torch.where(hi > lo, (cams - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(cams))


# --- boxes --------------------------------------------------------------------------------------


def region_around_peak(heat: np.ndarray, threshold: float = DEFAULT_BOX_THRESHOLD) -> np.ndarray:
    """Boolean mask of the connected region (8-neighbour) around the maximum where heat >= threshold * max."""
    hot = heat >= threshold * float(heat.max())
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    region = np.zeros_like(hot)
    region[peak] = True
    # Grow by 3x3 dilation inside ``hot`` until nothing changes; a window of rows/cols bounds the work.
    while True:
        grown = region.copy()
        grown[1:, :] |= region[:-1, :]
        grown[:-1, :] |= region[1:, :]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        grown &= hot
        if np.array_equal(grown, region):
            return region
        region = grown


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a boolean mask's True pixels, x1/y1 exclusive; the whole array if it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0, 0, mask.shape[1], mask.shape[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _scale_box(box: tuple[int, int, int, int], src: tuple[int, int], dst: tuple[int, int]) -> tuple[int, ...]:
    """Scale a box from a (w, h) grid to another (w, h) grid, keeping at least one pixel."""
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    x0, y0 = int(np.floor(box[0] * sx)), int(np.floor(box[1] * sy))
    x1, y1 = int(np.ceil(box[2] * sx)), int(np.ceil(box[3] * sy))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


# --- the public API -----------------------------------------------------------------------------


def _target_class(predictor, defect: str | None) -> tuple[int | None, int | None]:
    """(class index to explain, or None for "the likeliest defect"; the no-defect index to contrast with).

    With ``defect=None`` the predicted class is explained, and for an image judged defect-free the likeliest
    defect class: the logits are ranked without the no-defect class (softmax keeps the order)."""
    card = predictor.card
    classes = card.classes(PRIMARY_TASK)
    no_defect = classes.index(card.no_defect_class)
    if defect is None:
        return None, no_defect
    if defect not in classes:
        raise ValueError(f"unknown defect class {defect!r}; the model knows {', '.join(classes)}")
    target = classes.index(defect)
    return target, (None if target == no_defect else no_defect)


def heatmap_at_input_size(
    predictor,
    image: Image.Image,
    defect: str | None = None,
    layers: tuple[int | str, ...] = DEFAULT_LAYERS,
    refine: tuple[int, ...] = DEFAULT_REFINE,
    flip_average: bool = True,
) -> tuple[np.ndarray, str]:
    """The heatmap at the network's input size (float32 [S, S] in 0..1) and the defect class it explains.

    With ``flip_average`` the map is the mean over the image and its horizontal, vertical and double flips
    (flipped back), computed as one batch of four: a defect's evidence moves with the flip, the network's
    position-dependent noise does not. Chosen on the validation defects of the shipped model (pointing game
    0.644 -> 0.661, within 15 px 0.814 -> 0.831); on the held-out test defects 0.610 -> 0.695 and 0.780 -> 0.831.
    """
    array = predictor.preprocess(image.convert("RGB"))
    views = [array]
    if flip_average:
        views += [array[:, ::-1], array[::-1, :], array[::-1, ::-1]]
    target, contrast = _target_class(predictor, defect)
    batch = torch.from_numpy(np.ascontiguousarray(np.stack(views))).permute(0, 3, 1, 2)
    kept: dict[int, torch.Tensor] = {}
    maps = class_activation_maps(
        predictor.model, batch, target, contrast, layers, DEFAULT_METHODS, keep=refine, kept=kept
    )
    target = int(kept[-1])  # chosen on the unflipped view
    for block in refine:
        maps[f"contrast{block}"] = feature_contrast(kept[block])
    heats = combine_maps(maps, (array.shape[0], array.shape[1])).numpy().astype(np.float32)
    if flip_average:
        heats = np.stack([heats[0], heats[1][:, ::-1], heats[2][::-1, :], heats[3][::-1, ::-1]])
    heat = heats.mean(axis=0)
    heat = heat / max(float(heat.max()), 1e-12)
    return heat.astype(np.float32), predictor.card.classes(PRIMARY_TASK)[target]


def heatmap_from_input_map(
    heat: np.ndarray, defect: str, image_size: tuple[int, int], threshold: float = DEFAULT_BOX_THRESHOLD
) -> Heatmap:
    """Resize an input-size heatmap to the image's (w, h) and find its peak and box."""
    grid = (heat.shape[1], heat.shape[0])
    box = _scale_box(box_of(region_around_peak(heat, threshold)), grid, image_size)
    py, px = np.unravel_index(int(np.argmax(heat)), heat.shape)
    peak = (
        min(int((px + 0.5) * image_size[0] / grid[0]), image_size[0] - 1),
        min(int((py + 0.5) * image_size[1] / grid[1]), image_size[1] - 1),
    )
    full = Image.fromarray(heat.astype(np.float32), mode="F").resize(image_size, Image.Resampling.BILINEAR)
    array = np.clip(np.asarray(full, dtype=np.float32), 0.0, 1.0)
    return Heatmap(array=array, box=box, defect=defect, peak=peak)


def heatmap_for_image(
    predictor,
    image: Image.Image,
    defect: str | None = None,
    layers: tuple[int | str, ...] = DEFAULT_LAYERS,
) -> Heatmap:
    """The class-activation heatmap of ``image`` for ``defect`` (default: the predicted defect class, or for
    an image predicted defect-free the likeliest defect class), with the box around its hottest region."""
    heat, label = input_heatmap(predictor, image, defect, layers)
    return heatmap_from_input_map(heat, label, image.size, getattr(predictor, "box_threshold", DEFAULT_BOX_THRESHOLD))


def input_heatmap(predictor, image: Image.Image, defect: str | None = None, layers=DEFAULT_LAYERS):
    """The heatmap at the input size and its label: a classifier's class activations, or an anomaly model's own
    map of patch distances (``predictor.input_heatmap``: where the photo is unlike every good part)."""
    own = getattr(predictor, "input_heatmap", None)
    if own is not None:
        return own(image)
    return heatmap_at_input_size(predictor, image, defect, layers)


# --- drawing ------------------------------------------------------------------------------------

# "Turbo"-like anchors (dark blue -> cyan -> green -> yellow -> red), interpolated to 256 entries.
_ANCHORS = np.array(
    [
        [48, 18, 59],
        [70, 107, 227],
        [40, 188, 235],
        [50, 242, 152],
        [164, 252, 60],
        [237, 208, 58],
        [251, 128, 34],
        [208, 47, 5],
        [122, 4, 3],
    ],
    dtype=np.float32,
)
COLORMAP = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)],
    axis=1,
).astype(np.uint8)


def colorize(heat: np.ndarray) -> np.ndarray:
    """0..1 float map -> uint8 RGB [H, W, 3] through the colour map."""
    return COLORMAP[np.clip(np.rint(heat * 255), 0, 255).astype(np.uint8)]


def overlay(image: Image.Image, heatmap: Heatmap, opacity: float = 0.5, draw_box: bool = True) -> Image.Image:
    """The image with the heatmap blended on top and the hottest region's box drawn; RGB, the image's size.

    Each pixel's blend weight is ``opacity * heat``, so cold areas stay as photographed and the peak is
    ``opacity`` colour. ``opacity`` 0 gives the plain image (with the box).
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
    base = image.convert("RGB")
    heat = heatmap.array
    if base.size != heatmap.size:
        heat = np.asarray(
            Image.fromarray(heat, mode="F").resize(base.size, Image.Resampling.BILINEAR), dtype=np.float32
        )
        box = _scale_box(heatmap.box, heatmap.size, base.size)
    else:
        box = heatmap.box
    rgb = np.asarray(base, dtype=np.float32)
    alpha = (opacity * np.clip(heat, 0.0, 1.0))[..., None]
    blended = rgb * (1.0 - alpha) + colorize(heat).astype(np.float32) * alpha
    out = Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), "RGB")
    if draw_box:
        width = max(2, round(max(base.size) / 150))
        ImageDraw.Draw(out).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=BOX_COLOR, width=width)
    return out


# --- cache --------------------------------------------------------------------------------------

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class HeatmapCache:
    """Heatmaps kept on disk as ``<directory>/<sha[:2]>/<sha>-<model>-<version>-<defect>-<method>.npz``.

    Each file holds the input-size map as uint8 (a 224x224 map is ~20 KB compressed) and the defect name;
    peak, box and the image-size array are recomputed on load, which takes a millisecond.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def path(self, sha256: str, model_name: str, model_version: str, defect: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        name = "-".join(
            _SAFE.sub("_", part) for part in (sha256, model_name, model_version, defect or "auto", METHOD_VERSION)
        )
        return self.directory / sha256[:2] / f"{name}.npz"

    def get_or_compute(self, predictor, image: Image.Image, sha256: str, defect: str | None = None) -> Heatmap:
        """The cached heatmap for this image, model version and defect, computed and stored if absent.

        ``defect=None`` (the predicted class) is cached under "auto"."""
        path = self.path(sha256, predictor.model_name, predictor.model_version, defect or "auto")
        loaded = self._load(path)
        if loaded is not None:
            heat, label = loaded
        else:
            heat, label = input_heatmap(predictor, image, defect)
            self._save(path, heat, label)
        return heatmap_from_input_map(
            heat, label, image.size, getattr(predictor, "box_threshold", DEFAULT_BOX_THRESHOLD)
        )

    @staticmethod
    def _load(path: Path) -> tuple[np.ndarray, str] | None:
        try:
            with np.load(path, allow_pickle=False) as data:
                return data["heat"].astype(np.float32) / 255.0, str(data["defect"])
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None  # absent or damaged: recompute

    @staticmethod
    def _save(path: Path, heat: np.ndarray, label: str) -> None:
        """Keep the map for next time if the folder allows: a read-only or full data folder only loses the cache."""
        buf = io.BytesIO()
        np.savez_compressed(buf, heat=np.clip(np.rint(heat * 255), 0, 255).astype(np.uint8), defect=np.str_(label))
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(buf.getvalue())
            tmp.replace(path)  # atomic: a concurrent reader sees the old state or the whole file
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
