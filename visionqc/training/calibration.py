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


def calibrate_miss_threshold(
    defect_probability: np.ndarray,
    predicted_free: np.ndarray,
    flagged: np.ndarray,
    defective: np.ndarray,
    target_recall: float = 0.98,
    max_free_flagged: float = 0.10,
) -> dict:
    """The miss-averse cut: flag a "no defect" prediction whose total defect probability is above it.

    Per validation image: ``defect_probability`` = 1 - p(no defect), ``predicted_free``, ``flagged`` (already
    flagged by the confidence and out-of-distribution rules) and ``defective`` (the truth). A defective image is
    *covered* when it is predicted defective or flagged. The cut is the lowest one (the most second looks) that
    keeps every rule together under ``max_free_flagged`` of the truly defect-free images, as long as it covers
    at least ``target_recall`` of the defective ones; when the budget cannot buy that recall, the recall wins (a
    missed defect costs more than a second look) with the highest cut that reaches it. Returns the cut and what
    it does on validation, for the card.
    """
    p = np.asarray(defect_probability, dtype=np.float64)
    free_pred, flags, bad = (np.asarray(a, dtype=bool) for a in (predicted_free, flagged, defective))
    candidates = np.unique(np.append(np.floor(p[free_pred & ~flags] * 10_000) / 10_000, 1.0))

    def effect(cut: float) -> tuple[float, float]:
        any_flag = flags | (free_pred & (p > cut))
        recall = float((~free_pred | any_flag)[bad].mean()) if bad.any() else 1.0
        free_share = float(any_flag[~bad].mean()) if (~bad).any() else 0.0
        return recall, free_share

    effects = [effect(float(c)) for c in candidates]
    within = [c for c, (r, f) in zip(candidates, effects, strict=True) if r >= target_recall and f <= max_free_flagged]
    reaching = [c for c, (r, _) in zip(candidates, effects, strict=True) if r >= target_recall]
    cut = float(min(within) if within else max(reaching) if reaching else candidates[0])
    recall, free_share = effect(cut)
    return {
        "threshold": round(cut, 4),
        "target_recall": target_recall,
        "max_free_flagged": max_free_flagged,
        "val_defective_images": int(bad.sum()),
        "val_free_images": int((~bad).sum()),
        "val_defects_predicted_free": int((bad & free_pred).sum()),
        "val_defect_recall": round(recall, 4),
        "val_defect_recall_without": round(effect(1.0)[0], 4),
        "val_free_flagged_share": round(free_share, 4),
        "rule": "a “no defect” prediction is flagged when 1 - p(no defect) is above the threshold",
        "met_target": bool(recall >= target_recall),
    }


def calibrate_miss_averse(card, predictions, true_defect: np.ndarray, cfg) -> dict:
    """:func:`calibrate_miss_threshold` from a model's validation predictions (``Prediction`` objects, made
    without a miss-averse cut) and the true defect class indices; ``cfg`` gives the target and the budget."""
    classes = card.classes("defect")
    no_defect = classes.index(card.no_defect_class)
    return calibrate_miss_threshold(
        np.array([1.0 - p.defect.probabilities[card.no_defect_class] for p in predictions]),
        np.array([not p.is_defect for p in predictions]),
        np.array([p.needs_review for p in predictions]),
        np.asarray(true_defect) != no_defect,
        cfg.miss_target_recall,
        cfg.miss_max_free_flagged,
    )
