"""Needs-review calibration on the validation split: a confidence threshold per task and an
out-of-distribution cut, chosen so that accepted predictions are accurate without flagging too many."""

from __future__ import annotations

import math

import numpy as np


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


def calibrate_confidence_thresholds(
    val_probs: dict[str, np.ndarray], val_labels: dict[str, np.ndarray], target_accuracy: float, max_review_share: float
) -> tuple[dict[str, float], dict[str, dict]]:
    """Per task: the needs-review threshold and what it does on the validation images (for the card)."""
    thresholds: dict[str, float] = {}
    report: dict[str, dict] = {}
    for task, p in val_probs.items():
        true = val_labels[task]
        known = true >= 0
        if not known.any():
            continue
        conf, pred = p[known].max(1), p[known].argmax(1)
        thresholds[task] = calibrate_confidence_threshold(conf, pred == true[known], target_accuracy, max_review_share)
        flagged = conf < thresholds[task]
        report[task] = {
            "threshold": thresholds[task],
            "val_images": int(known.sum()),
            "val_flagged_share": round(float(flagged.mean()), 4),
            "val_accuracy_accepted": round(float((pred == true[known])[~flagged].mean()), 4)
            if (~flagged).any()
            else None,
        }
    return thresholds, report


def ood_threshold(val_scores: np.ndarray, quantile: float) -> float:
    """The out-of-distribution cut: the ``quantile`` of the validation images' OOD scores."""
    return round(float(np.quantile(val_scores, quantile)), 5)
