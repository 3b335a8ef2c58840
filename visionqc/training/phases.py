"""The two training phases.

- **Phase 1, heads only**, on the cached embeddings: one linear head per task, class-balanced sampling, the
  multi-task loss (plus an optional L2 penalty on the heads' weights, ``head_l2``), early stopping on validation.
- **Phase 2, the last backbone blocks + heads**, on the cached activations entering those blocks, with
  BatchNorm kept in eval mode (frozen statistics: training-mode BN collapses on small sets) and a cosine
  learning-rate schedule.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from visionqc.model.card import EMBEDDING_DIM, PRIMARY_TASK
from visionqc.model.network import DefectNet
from visionqc.training.config import TrainConfig
from visionqc.training.features import FeatureCache
from visionqc.training.loop import PhaseResult, balanced_batches, fit, multitask_loss
from visionqc.training.metrics import balanced_accuracy
from visionqc.training.pipeline import progress_bar


def _selection_loss(
    logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], val: torch.Tensor, cfg: TrainConfig
) -> float:
    """Validation loss for choosing the epoch: the weighted multi-task loss, or the defect task's alone."""
    if cfg.selection_loss == "defect":
        return float(nn.functional.cross_entropy(logits[PRIMARY_TASK], targets[PRIMARY_TASK][val]))
    return float(multitask_loss(logits, {t: y[val] for t, y in targets.items()}, cfg.loss_weights))


def train_heads(
    embeddings: torch.Tensor,
    labels: dict[str, np.ndarray],
    task_sizes: dict[str, int],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    seed: int,
    progress: bool = True,
    val_views: int = 1,
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], PhaseResult]:
    """Phase 1: linear heads on standardised cached embeddings; returns heads on *raw* embeddings.

    The standardisation is folded into each head's weights afterwards, so the saved network needs none.
    Validation scores the mean embedding of the first ``val_views`` views (test-time augmentation; 1 = none).
    """
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

    def train_epoch() -> None:
        heads.train()
        for idx, v in balanced_batches(
            labels[PRIMARY_TASK], train_idx, views, cfg.batch_size, generator, cfg.balance_power
        ):
            x = dropout(z[v, idx])
            loss = multitask_loss(
                {t: h(x) for t, h in heads.items()}, {t: y[idx] for t, y in targets.items()}, cfg.loss_weights
            )
            if cfg.head_l2:  # an L2 penalty in the loss (unlike AdamW's decoupled decay, it scales with the loss)
                loss = loss + cfg.head_l2 * sum(h.weight.square().sum() for h in heads.values())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

    def validate() -> tuple[float, float]:
        heads.eval()
        with torch.no_grad():
            x_val = z[:val_views, val].mean(0)
            logits = {t: h(x_val) for t, h in heads.items()}
            val_loss = _selection_loss(logits, targets, val, cfg)
        predicted = logits[PRIMARY_TASK].argmax(1).numpy()
        return balanced_accuracy(labels[PRIMARY_TASK][val_idx], predicted, task_sizes[PRIMARY_TASK]), val_loss

    result = fit(
        train_epoch,
        validate,
        heads,
        epochs=cfg.epochs,
        patience=cfg.patience,
        select_on=cfg.select_on,
        desc="phase 1 (heads)",
        progress=progress,
    )
    folded = {}
    with torch.no_grad():
        for task, head in heads.items():
            w = head.weight / std  # W (x - m) / s + b  ==  (W / s) x + (b - (W / s) m)
            folded[task] = (w.clone(), (head.bias - w @ mean).clone())
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


def tail_embeddings(
    model: DefectNet, acts: torch.Tensor, idx: torch.Tensor, split: int, views: int = 1, chunk: int = 128
) -> torch.Tensor:
    """Embeddings of images ``idx`` from their cached activations: the mean over the first ``views`` views."""
    out = []
    with torch.no_grad():
        for s in range(0, len(idx), chunk):
            part = idx[s : s + chunk]
            out.append(torch.stack([model.tail_embedding(acts[v, part].float(), split) for v in range(views)]).mean(0))
    return torch.cat(out) if out else torch.zeros(0, EMBEDDING_DIM)


def warmup_cosine(warmup_steps: int, total_steps: int):
    """The learning-rate factor per step: linear from 1/(warmup+1) to 1 over ``warmup_steps``, then a cosine
    from 1 to 0 at ``total_steps`` (with no warm-up, exactly ``CosineAnnealingLR``)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        span = max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))

    return factor


def phase2_parameter_groups(model: DefectNet, split: int, lr: float, decay: float, head_scale: float) -> list[dict]:
    """AdamW parameter groups for phase 2: the heads at ``lr * head_scale`` (left out, so frozen, at 0), the head
    convolution at ``lr``, the last block at ``lr * decay``, the one before it at ``lr * decay**2`` ... down to
    block ``split``. Only these parameters keep ``requires_grad``; the rest of the network is frozen."""
    backbone = model.backbone
    for p in model.parameters():
        p.requires_grad_(False)
    top = [*backbone._conv_head.parameters(), *backbone._bn1.parameters()]
    groups = [{"params": top, "lr": lr}]
    if head_scale > 0:
        groups.append({"params": list(model.heads.parameters()), "lr": lr * head_scale})
    last = len(backbone._blocks) - 1
    for idx in range(split, last + 1):
        groups.append({"params": list(backbone._blocks[idx].parameters()), "lr": lr * decay ** (last - idx + 1)})
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(True)
    return groups


def finetune_last_blocks(
    model: DefectNet,
    cache: FeatureCache,
    labels: dict[str, np.ndarray],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    progress: bool = True,
    val_views: int = 1,
) -> PhaseResult:
    """Phase 2, in place on ``model`` (left at its best validation epoch); validation on the mean embedding of
    the first ``val_views`` cached views (test-time augmentation, as phase 1).

    BatchNorm stays in eval mode (its statistics frozen; its affine parameters train): on a few hundred
    images, batch statistics are too noisy and training-mode BN collapsed the network.
    """
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    split = cache.split_block
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    optimiser = torch.optim.AdamW(
        phase2_parameter_groups(model, split, cfg.phase2_lr, cfg.phase2_lr_decay, cfg.phase2_head_lr_scale),
        weight_decay=cfg.weight_decay if cfg.phase2_weight_decay is None else cfg.phase2_weight_decay,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, warmup_cosine(round(cfg.phase2_warmup * steps_per_epoch), cfg.phase2_epochs * steps_per_epoch)
    )
    select_on = cfg.phase2_select_on or cfg.select_on
    acts = cache.activations
    views = acts.shape[0]
    targets = {t: torch.from_numpy(v) for t, v in labels.items()}
    val = torch.from_numpy(val_idx)
    n_defect = len(model.heads[PRIMARY_TASK].bias)

    def validate() -> tuple[float, float, float]:
        model.eval()
        with torch.no_grad():
            emb = tail_embeddings(model, acts, val, split, val_views)
            logits = model.head_logits(emb)
            loss = _selection_loss(logits, targets, val, cfg)
        predicted = logits[PRIMARY_TASK].argmax(1).numpy()
        truth = labels[PRIMARY_TASK][val_idx]
        return balanced_accuracy(truth, predicted, n_defect), loss, float((predicted == truth).mean())

    def train_epoch() -> None:
        model.eval()  # BN statistics frozen, no drop-connect ...
        model.dropout.train()  # ... but dropout before the heads stays on
        batches = balanced_batches(labels[PRIMARY_TASK], train_idx, views, cfg.batch_size, generator, cfg.balance_power)
        # A phase-2 epoch can take a minute on a busy machine: report each batch so a job's progress keeps moving.
        for idx, v in progress_bar(batches, desc="phase 2 batches", total=steps_per_epoch, unit="batch", disable=True):
            logits = model.head_logits(model.tail_embedding(acts[v, idx].float(), split))
            targets_batch = {t: y[idx] for t, y in targets.items()}
            loss = multitask_loss(logits, targets_batch, cfg.loss_weights, cfg.phase2_label_smoothing)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()

    result = fit(
        train_epoch,
        validate,
        model,
        epochs=cfg.phase2_epochs,
        patience=cfg.phase2_patience,
        select_on=select_on,
        desc="phase 2 (last blocks)",
        progress=progress,
        score_before=True,
    )
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return result
