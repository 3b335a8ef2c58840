"""What both training phases share: the multi-task loss, class-balanced sampling, and the one early-stopping
loop that keeps the epoch with the best validation score."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from visionqc.model.card import PRIMARY_TASK
from visionqc.training.pipeline import progress_bar


def multitask_loss(
    logits: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    weights: dict[str, float],
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``sum_t w_t * CE_t``; each task's CE is averaged over the samples that have a label for it
    (severity and location are -1, so masked, for defect-free images), with ``label_smoothing`` as
    :func:`torch.nn.functional.cross_entropy` takes it (0 = none)."""
    total = logits[PRIMARY_TASK].new_zeros(())
    for task, out in logits.items():
        y = targets[task]
        known = y >= 0
        if known.any():
            total = total + weights.get(task, 1.0) * nn.functional.cross_entropy(
                out[known], y[known], label_smoothing=label_smoothing
            )
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


def balanced_batches(
    defect_labels: np.ndarray,
    train_idx: np.ndarray,
    views: int,
    batch_size: int,
    generator: torch.Generator,
    power: float,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch as ``(sample indices, cached view per sample)`` batches: class-balanced draws, a random view each."""
    draws = balanced_draws(defect_labels, train_idx, generator, power)
    view_of = torch.randint(0, views, (len(draws),), generator=generator)
    for s in range(0, len(draws), batch_size):
        yield draws[s : s + batch_size], view_of[s : s + batch_size]


def better(candidate: tuple[float, ...], best: tuple[float, ...], select_on: str) -> bool:
    """Compare validation scores (balanced accuracy, loss[, accuracy]): by loss alone, by balanced accuracy then
    loss, or (``accuracy``, the third score) by accuracy then loss."""
    if select_on == "loss":
        return candidate[1] < best[1]
    if select_on == "accuracy":
        return (candidate[2], -candidate[1]) > (best[2], -best[1])
    return (candidate[0], -candidate[1]) > (best[0], -best[1])


@dataclass
class PhaseResult:
    val_balanced_accuracy: float
    val_loss: float
    best_epoch: int
    epochs_run: int
    seconds: float
    history: list[dict[str, float]]
    val_accuracy: float | None = None  # when ``validate`` scores plain accuracy too (selection on accuracy)


def fit(
    train_epoch: Callable[[], None],
    validate: Callable[[], tuple[float, ...]],
    module: nn.Module,
    *,
    epochs: int,
    patience: int,
    select_on: str,
    desc: str,
    progress: bool = True,
    score_before: bool = False,
) -> PhaseResult:
    """Train ``module`` by calling ``train_epoch`` up to ``epochs`` times; after each epoch ``validate`` returns
    (validation balanced accuracy, validation loss[, validation accuracy]). The best epoch (see :func:`better`)
    is restored at the end; training stops after ``patience`` epochs without a better one. With ``score_before``
    the untrained state is epoch 0 and must be beaten (phase 2 starts from phase 1's heads)."""
    start = time.perf_counter()
    best, best_state, best_epoch, history = (-1.0, math.inf, -1.0), None, 0, []
    if score_before:
        best = validate()
        best_state = copy.deepcopy(module.state_dict())
        history.append(_epoch_entry(0, best))
    epoch = 0
    bar = progress_bar(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        train_epoch()
        score = validate()
        history.append(_epoch_entry(epoch, score))
        bar.set_postfix(val_balanced_accuracy=round(score[0], 4), val_loss=round(score[1], 4))
        if better(score, best, select_on):
            best, best_state, best_epoch = score, copy.deepcopy(module.state_dict()), epoch
        elif epoch - best_epoch >= patience:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    accuracy = best[2] if len(best) > 2 and best[2] >= 0 else None
    return PhaseResult(best[0], best[1], best_epoch, epoch, time.perf_counter() - start, history, accuracy)


def _epoch_entry(epoch: int, score: tuple[float, ...]) -> dict[str, Any]:
    entry = {"epoch": epoch, "val_balanced_accuracy": round(score[0], 4), "val_loss": round(score[1], 4)}
    if len(score) > 2:
        entry["val_accuracy"] = round(score[2], 4)
    return entry


def phase_json(result: PhaseResult) -> dict[str, Any]:
    return {
        "val_balanced_accuracy": round(result.val_balanced_accuracy, 4),
        "val_loss": round(result.val_loss, 4),
        **({"val_accuracy": round(result.val_accuracy, 4)} if result.val_accuracy is not None else {}),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seconds": round(result.seconds, 1),
        "history": result.history,
    }
