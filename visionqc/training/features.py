"""Cached features: every training image (and a few augmented views of it) through the frozen backbone once.

Decoding and preprocessing are the Predictor's own, so the network sees in training exactly what it sees
when it inspects. Phase 1 trains on the pooled embeddings; phase 2 on the activations entering the blocks it
fine-tunes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance

from visionqc.intake.imaging import ImageDecodeError
from visionqc.model.card import EMBEDDING_DIM, TTA_VIEWS
from visionqc.model.network import DIHEDRAL, dihedral
from visionqc.model.predict import Predictor
from visionqc.training.pipeline import prefetched, progress_bar

AUGMENTATION = (
    "view 0 = the image as Predictor sees it; each further view: random crop keeping 88-100% of each side, "
    "brightness and contrast x0.85-1.15; no flips or rotations"
)
DIHEDRAL_AUGMENTATION = (
    "views = the symmetries of the square input in the order of visionqc.model.network.DIHEDRAL (identity, "
    "half turn, the two mirrors, the quarter turns and the two diagonal mirrors), applied to the image as the "
    "Predictor prepares it: exactly what test-time augmentation computes"
)
AUGMENTATIONS = {"crops": AUGMENTATION, "dihedral": DIHEDRAL_AUGMENTATION}


def choose_view_count(score: Callable[[int], float], views: int) -> tuple[int, dict[int, float]]:
    """Test-time augmentation: ``score(n)`` (a validation score with the first ``n`` cached symmetries averaged)
    for each ``n`` of :data:`~visionqc.model.card.TTA_VIEWS` up to ``views``; the best, ties to fewer (faster).
    Returns (views, score per candidate)."""
    scores = {n: score(n) for n in TTA_VIEWS if n <= views}
    return max(scores, key=lambda n: (round(scores[n], 6), -n)), scores


def augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One augmented view of an inspection photo (see :data:`AUGMENTATION`)."""
    width, height = image.size
    cw = max(1, round(width * rng.uniform(0.88, 1.0)))
    ch = max(1, round(height * rng.uniform(0.88, 1.0)))
    x0 = int(rng.integers(0, width - cw + 1))
    y0 = int(rng.integers(0, height - ch + 1))
    view = image.crop((x0, y0, x0 + cw, y0 + ch))
    view = ImageEnhance.Brightness(view).enhance(float(rng.uniform(0.85, 1.15)))
    return ImageEnhance.Contrast(view).enhance(float(rng.uniform(0.85, 1.15)))


@dataclass
class FeatureCache:
    embeddings: torch.Tensor  # [views, N, 1280]
    activations: torch.Tensor | None  # [views, N, C, h, w] entering ``split_block`` (phase 2 only)
    split_block: int | None
    failed: dict[int, str]  # sample index -> reason the image could not be decoded
    seconds: float


@torch.inference_mode()
def extract_features(
    predictor: Predictor,
    paths: list[Path],
    views: int,
    seed: int,
    split_block: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
    augmentation: str = "crops",
) -> FeatureCache:
    """Embeddings (and optionally block activations) of every image and augmented view, in one pass.

    ``augmentation`` ``"crops"``: view 0 and ``views - 1`` random crops (:func:`augment`); ``"dihedral"``: the first
    ``views`` (at most 8) symmetries of :data:`~visionqc.model.network.DIHEDRAL`, applied to the prepared batch.

    Decoding and preprocessing are the Predictor's own (``decode`` + ``preprocess``); the network is the
    Predictor's inference copy (BatchNorm folded, channels-last), which computes the same function as the
    trainable model up to float rounding.
    """
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augmentation!r}; known: {list(AUGMENTATIONS)}")
    if augmentation == "dihedral" and not 1 <= views <= len(DIHEDRAL):
        raise ValueError(f"dihedral augmentation has 1-{len(DIHEDRAL)} views, not {views}")
    symmetric = augmentation == "dihedral"
    start = time.perf_counter()
    n = len(paths)
    embeddings = torch.zeros(views, n, EMBEDDING_DIM)
    activations = None
    failed: dict[int, str] = {}

    def prepare(chunk: list[int]):
        arrays, ok = [], []
        for i in chunk:
            try:
                image = predictor.decode(paths[i].read_bytes()).image
            except (OSError, ImageDecodeError) as exc:
                failed[i] = str(exc)
                continue
            for v in range(1 if symmetric else views):
                view = image if v == 0 else augment(image, np.random.default_rng([seed, v, i]))
                arrays.append(predictor.preprocess(view))
            ok.append(i)
        return ok, arrays

    with progress_bar(
        total=n * views, desc=f"features ({views} view(s) per image)", unit="img", disable=not progress
    ) as bar:
        for _, (ok, arrays) in prefetched(list(range(n)), prepare, batch_size):
            if ok:
                batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # NHWC -> NCHW, channels-last
                if symmetric:  # image-major, as the crops' batch: image 0's views, then image 1's ...
                    shape = batch.shape[1:]
                    batch = torch.stack([dihedral(batch, v) for v in range(views)], 1).reshape(-1, *shape)
                emb, entering = predictor.model.embedding_and_activation(batch, split_block)
                idx = torch.tensor(ok)
                embeddings[:, idx] = emb.reshape(len(ok), views, -1).transpose(0, 1).float()
                if entering is not None:
                    entering = entering.contiguous().reshape(len(ok), views, *entering.shape[1:]).transpose(0, 1)
                    if activations is None:
                        activations = torch.zeros(views, n, *entering.shape[2:])
                    activations[:, idx] = entering.float()
            bar.update(len(ok) * views)
    return FeatureCache(embeddings, activations, split_block, failed, time.perf_counter() - start)
