"""Research for the anomaly model: geometry and scoring variants on the validation half of magnetic tile.

    python benchmarks/anomaly_variants.py [--turn landscape] [--width 288] [--height 288] [--split val]

Trains one model (``fit_anomaly`` with the shipped settings, on the 300 training tiles of ``tile_split``), from
photos resized to ``width`` x ``height`` (``--turn landscape``: a photo taller than wide is first turned a quarter,
so the long side lies along the width; its map is turned back before the pixel AUROC). Then, from one pass over
the evaluation tiles, it scores every variant of the distance map on the same bank:

- ``raw``: the distance to the nearest bank patch (the models before the density normalisation);
- ``density{k}``: that distance divided by the nearest bank patch's mean distance to its k nearest bank
  neighbours (what ``AnomalySettings.density_k`` ships);
- ``min-density{k}``: the smallest of the distances to every bank patch, each divided by that patch's density;

each blurred at sigma 2, 3 and 4 cells, with the image score the mean of the hottest 2 / 5 / 10 % of cells (0: the
maximum). Prints image AUROC (per class too) and pixel AUROC as JSON and appends them to
benchmarks/results/anomaly_variants.jsonl. The shipped recipe end to end is measured by benchmarks/anomaly.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from anomaly import CLASSES, record, tile_split  # noqa: E402

from visionqc.model.anomaly import AnomalySettings, bank_density, blur, image_scores, load_anomaly  # noqa: E402
from visionqc.training.anomaly import MEAN, STD, PhotoSet, fit_anomaly  # noqa: E402

DENSITY_K = (1, 3, 10)
SIGMAS = (2.0, 3.0, 4.0)
TOP_SHARES = (0.0, 0.02, 0.05, 0.1)


def prepare(path: Path, width: int, height: int, turn: bool) -> tuple[np.ndarray, bool]:
    """(normalised HWC array, whether the photo was turned a quarter)."""
    image = Image.open(path).convert("RGB")
    turned = turn and image.height > image.width
    if turned:
        image = image.transpose(Image.Transpose.ROTATE_90)
    resized = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return (np.asarray(resized, dtype=np.float32) - MEAN) / STD, turned


def distance_variants(scorer, arrays: np.ndarray, densities: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every variant's unblurred map [B, h, w] of a batch."""
    vectors, _ = scorer.patches(arrays)
    b, h, w, d = vectors.shape
    q = vectors.reshape(-1, d)
    d2 = torch.addmm(scorer.bank_sq, q, scorer.bank.T, alpha=-2.0) + q.pow(2).sum(1, keepdim=True)
    dist = d2.clamp_min(0.0).sqrt()
    nearest, idx = dist.min(dim=1)
    out = {"raw": nearest}
    for k, density in densities.items():
        out[f"density{k}"] = nearest / density[idx]
        out[f"min-density{k}"] = (dist / density[None]).min(dim=1).values
    return {name: m.reshape(b, h, w) for name, m in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turn", choices=["none", "landscape"], default="none")
    ap.add_argument("--width", type=int, default=AnomalySettings.size)
    ap.add_argument("--height", type=int, default=AnomalySettings.size)
    ap.add_argument("--split", choices=["val", "test"], default="val")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    turn = args.turn == "landscape"
    split = tile_split()
    started = time.perf_counter()
    good = PhotoSet()
    for p in split["train"]:
        good.names.append(str(p))
        good.arrays.append(prepare(p, args.width, args.height, turn)[0])
    settings = AnomalySettings(density_k=0)
    with tempfile.TemporaryDirectory() as tmp:
        fit_anomaly(good, Path(tmp) / "m", name="variants", version="research", settings=settings, export=False)
        _, _, _, scorer = load_anomaly(Path(tmp) / "m")
    train_s = time.perf_counter() - started
    densities = {k: bank_density(scorer.bank, k) for k in DENSITY_K}
    good_paths, bad_paths = split[f"{args.split}_good"], split[f"{args.split}_bad"]
    paths = good_paths + bad_paths
    scores: dict[tuple[str, float, float], list[float]] = {}
    pixels: dict[tuple[str, float], list[tuple[np.ndarray, np.ndarray]]] = {}
    for start in range(0, len(paths), 16):
        chunk = paths[start : start + 16]
        prepared = [prepare(p, args.width, args.height, turn) for p in chunk]
        with torch.inference_mode():
            variants = distance_variants(scorer, np.stack([a for a, _ in prepared]), densities)
        masks = [
            np.asarray(Image.open(p.parents[2] / "masks" / p.parent.name / f"{p.stem}.png").convert("L")) > 127
            for p in chunk
        ]
        for name, raw in variants.items():
            for sigma in SIGMAS:
                maps = blur(raw, sigma)
                for share in TOP_SHARES:
                    scores.setdefault((name, sigma, share), []).extend(image_scores(maps, share).tolist())
                for m, mask, (_, turned) in zip(maps, masks, prepared, strict=True):
                    m = torch.rot90(m, -1) if turned else m  # back to the photo's own orientation
                    up = F.interpolate(m[None, None], size=mask.shape, mode="bilinear", align_corners=False)[0, 0]
                    pixels.setdefault((name, sigma), []).append((up.numpy()[::2, ::2].ravel(), mask[::2, ::2].ravel()))
    truth = np.r_[np.zeros(len(good_paths)), np.ones(len(bad_paths))]
    classes = np.array([p.parent.name for p in bad_paths])
    results = {}
    for (name, sigma, share), values in scores.items():
        values = np.asarray(values)
        g, b = values[: len(good_paths)], values[len(good_paths) :]
        per_class = {}
        for c in CLASSES:
            labels = np.r_[np.zeros(len(g)), np.ones((classes == c).sum())]
            per_class[c] = round(float(roc_auc_score(labels, np.r_[g, b[classes == c]])), 4)
        key = f"{name} sigma {sigma:g} top {share:g}"
        results[key] = {"image_auroc": round(float(roc_auc_score(truth, values)), 4), "per_class": per_class}
    for (name, sigma), pairs in pixels.items():
        heat = np.concatenate([h for h, _ in pairs])
        mask = np.concatenate([m for _, m in pairs])
        results[f"{name} sigma {sigma:g}"] = {"pixel_auroc": round(float(roc_auc_score(mask, heat)), 4)}
    out = {
        "split": args.split,
        "geometry": {"turn": args.turn, "width": args.width, "height": args.height},
        "train_seconds": round(train_s, 1),
        "results": results,
    }
    record(out, "anomaly_variants")


if __name__ == "__main__":
    main()
