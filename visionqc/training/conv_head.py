"""The conv-head candidate: a small convolutional head (:class:`~visionqc.model.network.ConvHead`) trained on the
frozen backbone's cached activations, tried against the linear heads and kept only if it wins on validation.

Why: on elpv the linear heads on the pooled 1,280-d embedding miss about a quarter of the cells an expert rates
certainly defective. Those features are ImageNet's, averaged over the cell; a crack is a thin line in one place.
A head that learns its own local detectors on the 7 x 7 x 192 map entering block 15, pooled by mean *and* max,
finds more of them: 0.797 +- 0.003 four-class test accuracy over 3 splits against the probe's 0.765 +- 0.010
(``benchmarks/elpv_convhead.py``; docs/MODEL_RESULTS.md). The map is cached with the embeddings, so the head
trains in about half a minute on 2 cores.

The recipe is the benchmark's: AdamW (decay 0.05), a one-cycle learning rate peaking at 1e-3, label smoothing
0.1, batches of 64, :data:`EPOCHS` epochs of images drawn as phase 1 draws them (class-balanced with
``cfg.balance_power``, the default 1 or what phase 1 chose on validation for symmetric parts; a plain shuffle when
that is 0), each in one of its cached views at random (plus random flips of the map for symmetric parts). Drawing
rare classes as often as the rest raised magnetic tile's test balanced accuracy over 5 splits (its fray class has 32
images; docs/MODEL_RESULTS.md). The last epoch is kept (a fixed schedule: a few hundred validation images are too
few to pick an epoch on). Its test-time augmentation (views whose logits are averaged) is chosen on validation,
as the linear heads'.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from visionqc.model.card import PRIMARY_TASK, ConvHeadSpec
from visionqc.model.network import DefectNet
from visionqc.training.config import TrainConfig
from visionqc.training.features import FeatureCache, choose_view_count
from visionqc.training.loop import balanced_draws, multitask_loss
from visionqc.training.metrics import balanced_accuracy
from visionqc.training.pipeline import log, progress_bar

SPEC = ConvHeadSpec(split_block=15, width=128, depth=2)  # the activations entering block 15: 192 x 7 x 7 at 224 px
EPOCHS = 40
PEAK_LR = 1e-3
WEIGHT_DECAY = 0.05
LABEL_SMOOTHING = 0.1
BATCH = 64
RECIPE = (
    f"{SPEC.width} channels, {SPEC.depth} convolutions, mean + max pooling, on the frozen backbone's activations "
    f"entering block {SPEC.split_block}; AdamW (decay {WEIGHT_DECAY}), one-cycle learning rate peaking at {PEAK_LR}, "
    f"label smoothing {LABEL_SMOOTHING}, {EPOCHS} epochs of batches of {BATCH} drawn as phase 1 draws them "
    "(class-balanced by training.config.balance_power; a shuffle when 0), a random cached view of each image (plus "
    "random flips of the map for symmetric parts); the last epoch is kept"
)


@torch.no_grad()
def head_maps(model: DefectNet, cache: FeatureCache, split_block: int = SPEC.split_block) -> torch.Tensor:
    """The activations entering ``split_block`` for every cached view and image, [views, N, C, h, w]: the cache's
    own when it was extracted there, else the frozen blocks from its split up to ``split_block`` run on them."""
    acts = cache.activations
    if acts is None or cache.split_block is None or cache.split_block > split_block:
        raise ValueError(f"the feature cache holds no activations at or before block {split_block}")
    if cache.split_block == split_block:
        return acts
    model.eval()
    out = []
    for v in range(acts.shape[0]):
        out.append(
            torch.cat(
                [
                    model.blocks(acts[v, i : i + 256].float(), cache.split_block, split_block)
                    for i in range(0, acts.shape[1], 256)
                ]
            )
        )
    return torch.stack(out)


@torch.no_grad()
def view_logits(model: DefectNet, maps: torch.Tensor, idx: np.ndarray, views: int) -> dict[str, torch.Tensor]:
    """Task -> the conv head's logits for images ``idx`` (at least one), the mean over their first ``views`` cached
    views (what the saved network computes with that test-time augmentation)."""
    model.eval()
    chunks = []
    for part in torch.from_numpy(np.asarray(idx, dtype=np.int64)).split(256):
        per_view = [model.conv_head(maps[v, part].float()) for v in range(views)]
        chunks.append({t: torch.stack([logits[t] for logits in per_view]).mean(0) for t in per_view[0]})
    return {t: torch.cat([c[t] for c in chunks]) for t in chunks[0]}


def conv_head_network(phase1: DefectNet, task_sizes: dict[str, int], spec: ConvHeadSpec = SPEC) -> DefectNet:
    """A network with a fresh conv head on a copy of ``phase1``'s (frozen) backbone."""
    model = DefectNet(task_sizes, conv_head=spec)
    model.backbone.load_state_dict(phase1.backbone.state_dict())
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    return model.eval()


def train_conv_head(
    model: DefectNet,
    maps: torch.Tensor,
    labels: dict[str, np.ndarray],
    train_idx: np.ndarray,
    cfg: TrainConfig,
    epochs: int = EPOCHS,
    symmetric: bool = True,
) -> float:
    """Train ``model.conv_head`` in place on the cached maps of ``train_idx`` (the recipe in the module
    docstring); returns the seconds it took. ``symmetric``: the parts look the same mirrored, so the map is also
    flipped at random (never for other parts: a mirrored photo is not a real one, and a location label would be
    wrong)."""
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    head = model.conv_head
    targets = {t: torch.from_numpy(y).long() for t, y in labels.items()}
    optimiser = torch.optim.AdamW(head.parameters(), lr=PEAK_LR, weight_decay=WEIGHT_DECAY)
    steps = max(1, epochs * -(-len(train_idx) // BATCH))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, PEAK_LR, total_steps=steps, pct_start=0.1)
    views = maps.shape[0]
    bar = progress_bar(range(epochs), desc="conv head", unit="epoch", disable=not cfg.progress)
    generator = torch.Generator().manual_seed(cfg.seed)
    for _ in bar:
        head.train()
        if cfg.balance_power > 0:  # phase 1's class-balanced draws, as strong as phase 1's (chosen on validation)
            order = balanced_draws(labels[PRIMARY_TASK], train_idx, generator, cfg.balance_power)
        else:  # the natural mix: every training image once per epoch
            order = torch.from_numpy(rng.permutation(train_idx))
        total = 0.0
        for i in range(0, len(order), BATCH):
            rows = order[i : i + BATCH]
            x = maps[torch.from_numpy(rng.integers(0, views, len(rows))), rows].float()
            if symmetric and rng.random() < 0.5:
                x = x.flip(3)
            if symmetric and rng.random() < 0.5:
                x = x.flip(2)
            loss = multitask_loss(head(x), {t: y[rows] for t, y in targets.items()}, cfg.loss_weights, LABEL_SMOOTHING)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(rows)
        bar.set_postfix(train_loss=round(total / max(1, len(order)), 4))
    head.eval()
    return time.perf_counter() - start


def choose_views(
    model: DefectNet,
    maps: torch.Tensor,
    truth: np.ndarray,
    val_idx: np.ndarray,
    on_accuracy: bool,
    max_views: int,
) -> tuple[int, dict[int, float]]:
    """The test-time augmentation for the conv head: the number of cached views averaged (at most ``max_views``:
    only symmetric views are what the network averages at prediction, so 1 for random crops) with the best
    validation accuracy (``on_accuracy``) or balanced accuracy; ties to fewer (faster). Returns (views, score per
    candidate)."""
    classes = model.conv_head.out[PRIMARY_TASK].out_features
    y = truth[val_idx]

    def score(n: int) -> float:
        predicted = view_logits(model, maps, val_idx, n)[PRIMARY_TASK].argmax(1).numpy()
        return float((predicted == y).mean()) if on_accuracy else balanced_accuracy(y, predicted, classes)

    return choose_view_count(score, min(maps.shape[0], max_views))


def other_tasks_accuracy(
    probabilities: dict[str, np.ndarray], labels: dict[str, np.ndarray], idx: np.ndarray
) -> float | None:
    """The mean accuracy of the tasks other than the defect (severity, location) on images ``idx``, each over the
    images that have a label for it; ``None`` when there is no such task or label."""
    scores = []
    for task, probs in probabilities.items():
        truth = labels[task][idx]
        known = truth >= 0
        if task != PRIMARY_TASK and known.any():
            scores.append(float((probs.argmax(1)[known] == truth[known]).mean()))
    return float(np.mean(scores)) if scores else None


TIE = 1e-9  # validation scores this close are equal (the same counts, summed in another order)


def head_wins(score: float, baseline: float, others: float | None, baseline_others: float | None) -> str:
    """Whether the conv head replaces the linear heads, and on what: ``"defect"`` for a better validation score on
    the defect, ``"other tasks"`` for the same score and a better mean accuracy on the other tasks
    (:func:`other_tasks_accuracy`), ``""`` (false) when it does not."""
    if score > baseline + TIE:
        return "defect"
    tied = abs(score - baseline) <= TIE
    if tied and others is not None and baseline_others is not None and others > baseline_others:
        return "other tasks"
    return ""


def try_conv_head(
    phase1_model: DefectNet,
    cache: FeatureCache,
    labels: dict[str, np.ndarray],
    task_sizes: dict[str, int],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    baseline: float,
    on_accuracy: bool,
    symmetric_views: int,
    baseline_others: float | None = None,
) -> tuple[DefectNet | None, dict[str, np.ndarray] | None, dict[str, Any]]:
    """Train the conv-head candidate on the frozen phase-1 backbone's cached activations and keep it only if its
    validation score (accuracy when ``on_accuracy``, else balanced accuracy; with its own test-time augmentation)
    beats ``baseline``, the linear-head network's, or ties with it and beats ``baseline_others``, the linear heads'
    :func:`other_tasks_accuracy` (on NEU the defect reaches 1.000 on validation either way, and the head answers
    severity and location far better). ``symmetric_views``: how many cached views are symmetries (0 for random
    crops: then the map is never flipped and nothing is averaged at prediction). Returns the network with its
    ``tta_views`` set (``None`` when it lost), its validation probabilities (for calibration) and what happened
    (for the card)."""
    maps = head_maps(phase1_model, cache)
    candidate = conv_head_network(phase1_model, task_sizes)
    seconds = train_conv_head(candidate, maps, labels, train_idx, cfg, symmetric=symmetric_views > 0)
    views, scores = choose_views(
        candidate, maps, labels[PRIMARY_TASK], val_idx, on_accuracy, max_views=max(1, symmetric_views)
    )
    probabilities = {t: torch.softmax(v, 1).numpy() for t, v in view_logits(candidate, maps, val_idx, views).items()}
    others = other_tasks_accuracy(probabilities, labels, val_idx)
    metric = "accuracy" if on_accuracy else "balanced accuracy"
    won = head_wins(scores[views], baseline, others, baseline_others)
    tie = f"; a tie, other tasks {others:.4f} > {baseline_others:.4f}" if won == "other tasks" else ""
    log(
        cfg.progress,
        f"conv head: validation {metric} {scores[views]:.4f} with {views} view(s) averaged against the linear "
        f"heads' {baseline:.4f}{tie} ({seconds:.1f} s); {'kept' if won else 'not kept'}",
    )
    record = {
        "architecture": SPEC.to_json(),
        "recipe": RECIPE,
        "seconds": round(seconds, 1),
        "validation_metric": metric,
        "validation_score_by_views": {str(n): round(v, 4) for n, v in scores.items()},
        "chosen_views": views,
        "linear_heads_validation_score": round(baseline, 4),
        "other_tasks_validation_accuracy": None if others is None else round(others, 4),
        "linear_heads_other_tasks_validation_accuracy": None if baseline_others is None else round(baseline_others, 4),
        "kept": bool(won),
        "kept_on": won or None,
        "rule": f"kept only if its validation {metric} (with the number of views averaged chosen on validation, ties "
        "to fewer) is above the linear-head network's (phase 1 or phase 2, as chosen above), or equal to it with a "
        "higher mean validation accuracy over the other tasks",
    }
    if not won:
        return None, None, record
    candidate.tta_views = views
    return candidate, probabilities, record
