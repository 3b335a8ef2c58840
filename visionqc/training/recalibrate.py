"""Calibrate the miss-averse cut of a model that is already trained, without retraining it.

The card records the split (seed, fractions, test files), and :func:`stratified_split` is deterministic, so the
validation images are recomputed exactly; the recomputed test split must equal the card's recorded test files,
or nothing is written. The cut is chosen on validation (as training does), then measured on the test split,
and both land in the card (``needs_review.miss_threshold``, ``training.calibration.miss_averse``,
``metrics.test.miss_averse``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from visionqc.intake.imaging import ImageDecodeError
from visionqc.model.card import PRIMARY_TASK
from visionqc.model.checkpoint import write_card
from visionqc.model.predict import Prediction, Predictor
from visionqc.training.calibration import calibrate_miss_averse
from visionqc.training.config import TrainConfig
from visionqc.training.datasets import Dataset, stratified_split
from visionqc.training.pipeline import prefetched, progress_bar
from visionqc.training.trainer import limit_per_class


def predictions_for(predictor: Predictor, dataset: Dataset, indices, progress: bool = True) -> list[Prediction]:
    """The predictor's full prediction (rules included) for each image of ``indices``, in order."""

    def prepare(chunk: list[int]):
        arrays = []
        for i in chunk:
            try:
                arrays.append(predictor.preprocess(predictor.decode(dataset.samples[i].path.read_bytes()).image))
            except (OSError, ImageDecodeError) as exc:
                raise ValueError(f"{dataset.key(dataset.samples[i])} cannot be read: {exc}") from None
        return arrays

    out: list[Prediction] = []
    with progress_bar(total=len(indices), desc="predicting", unit="img", disable=not progress) as bar:
        for chunk, arrays in prefetched([int(i) for i in indices], prepare, predictor.batch_size * 2):
            out.extend(predictor._interpret(*predictor.forward_arrays(arrays)))
            bar.update(len(chunk))
    return out


def card_split(predictor: Predictor, dataset: Dataset) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """The dataset as training used it and the (validation, test) indices recomputed from the card; raises
    ``ValueError`` unless the test split equals the card's recorded ``test_files``."""
    training = predictor.card.raw.get("training") or {}
    split, config = training.get("split") or {}, training.get("config") or {}
    if not split.get("test_files") or "seed" not in split:
        raise ValueError("the model card records no split (seed and test files): calibrate it by training")
    unreadable = set(predictor.card.raw.get("training_data", {}).get("unreadable_images") or [])
    if config.get("max_per_class"):
        dataset = limit_per_class(dataset, int(config["max_per_class"]), int(config.get("seed", split["seed"])))
    if unreadable:
        dataset = dataset.subset([i for i, s in enumerate(dataset.samples) if dataset.key(s) not in unreadable])
    fractions = split.get("fractions") or {}
    _, val, test = stratified_split(
        dataset.strata(), fractions.get("val", 0.15), fractions.get("test", 0.15), int(split["seed"])
    )
    if [dataset.key(dataset.samples[i]) for i in test] != list(split["test_files"]):
        raise ValueError(
            "the recomputed test split differs from the card's test_files: is this the dataset the model was "
            "trained on, unchanged?"
        )
    return dataset, val, test


def test_effect(card, predictions: list[Prediction], true_defective: np.ndarray) -> dict[str, Any]:
    """What the rules (the miss-averse cut included) do on the test images."""
    predicted_free = np.array([not p.is_defect for p in predictions])
    flagged = np.array([p.needs_review for p in predictions])
    missed = true_defective & predicted_free
    return {
        "test_defective_images": int(true_defective.sum()),
        "test_free_images": int((~true_defective).sum()),
        "test_defects_predicted_free": int(missed.sum()),
        "test_defects_predicted_free_flagged": int((missed & flagged).sum()),
        "test_defects_predicted_free_flagged_share": round(float(flagged[missed].mean()), 4) if missed.any() else None,
        "test_defect_recall_caught_or_flagged": round(float((~predicted_free | flagged)[true_defective].mean()), 4),
        "test_free_flagged_share": round(float(flagged[~true_defective].mean()), 4),
        "test_free_flagged_by_miss_rule_share": round(
            float(np.mean([_by_miss_rule(p) for p, bad in zip(predictions, true_defective, strict=True) if not bad])),
            4,
        ),
    }


def _by_miss_rule(prediction: Prediction) -> bool:
    return bool(prediction.review_reason and "may hide a defect" in prediction.review_reason)


def recalibrate_miss_averse(
    model_dir: str | Path, dataset: Dataset, cfg: TrainConfig, command: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Choose the miss-averse cut on the card's validation split, measure it on its test split, write the card.
    Returns ``{"validation": ..., "test": ...}``."""
    predictor = Predictor(model_dir)
    dataset, val, test = card_split(predictor, dataset)
    card = predictor.card
    no_defect = card.classes(PRIMARY_TASK).index(card.no_defect_class)
    labels = dataset.labels(PRIMARY_TASK)
    card.miss_threshold = None  # choose the cut on what the other rules leave unflagged
    validation = calibrate_miss_averse(card, predictions_for(predictor, dataset, val, progress), labels[val], cfg)
    card.miss_threshold = validation["threshold"]
    test_predictions = predictions_for(predictor, dataset, test, progress)
    measured = test_effect(card, test_predictions, labels[test] != no_defect)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    validation |= {"calibrated_at": now, "calibrated_by": command or "visionqc.training.recalibrate"}
    raw = card.raw
    raw.setdefault("training", {}).setdefault("calibration", {})["miss_averse"] = validation
    raw.setdefault("metrics", {}).setdefault("test", {})["miss_averse"] = measured | {"measured_at": now}
    write_card(model_dir, replace(card, raw=raw))
    return {"validation": validation, "test": measured}
