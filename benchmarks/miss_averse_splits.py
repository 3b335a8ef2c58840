"""How the miss-averse review rule does on many held-out defects: the training recipe's phase 1 on repeated
stratified splits (seeds 1-5, as the card's repeated-split metrics), each split calibrating every needs-review
rule on its own validation images and measured on its own test images.

The shipped model's test split has no defective tile predicted "no defect" at all (so "how many of those are
flagged" is 0 of 0 there); these splits give the rule real misses to catch. Prints one line per split and the
pooled result. Not a speed benchmark: a measurement recorded in docs/MODEL_RESULTS.md.

    python benchmarks/miss_averse_splits.py ../shared/data/magnetic-tile
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from visionqc.model.card import PRIMARY_TASK
from visionqc.model.network import DefectNet, load_imagenet_backbone
from visionqc.training.calibration import calibrate_confidence_thresholds, calibrate_miss_averse, ood_threshold
from visionqc.training.config import TrainConfig
from visionqc.training.datasets import load_dataset, stratified_split
from visionqc.training.features import extract_features
from visionqc.training.phases import head_probabilities, set_heads, train_heads
from visionqc.training.recalibrate import test_effect
from visionqc.training.trainer import base_card, in_memory_predictor


def main(data: str, views: int = 3, seeds=(1, 2, 3, 4, 5)) -> None:
    cfg = TrainConfig(progress=False, views=views)
    dataset = load_dataset(data)
    sizes = {t: len(c) for t, c in dataset.tasks.items()}
    model = DefectNet(sizes)
    load_imagenet_backbone(model)
    model.eval()
    card = base_card(dataset, cfg)
    cache = extract_features(
        in_memory_predictor(card, model), [s.path for s in dataset.samples], cfg.views, cfg.seed, progress=False
    )
    print(f"features of {len(dataset.samples)} images x {cfg.views} views computed", flush=True)
    labels = {t: dataset.labels(t) for t in dataset.tasks}
    no_defect = card.classes(PRIMARY_TASK).index(card.no_defect_class)
    emb = cache.embeddings[0]
    pooled = {"missed": 0, "missed_flagged": 0, "free": 0, "free_flagged": 0, "defective": 0, "covered": 0}
    for seed in seeds:
        train, val, test = stratified_split(labels[PRIMARY_TASK], cfg.val_fraction, cfg.test_fraction, seed)
        heads, _ = train_heads(cache.embeddings, labels, sizes, train, val, cfg, seed, progress=False)
        set_heads(model, heads)
        split_card = base_card(dataset, cfg)
        val_probs = head_probabilities(model, emb[torch.from_numpy(val)])
        split_card.confidence_thresholds, _ = calibrate_confidence_thresholds(
            val_probs, {t: y[val] for t, y in labels.items()}, cfg.review_target_accuracy, cfg.max_review_share
        )
        bank = emb[torch.from_numpy(train)]
        scorer = in_memory_predictor(split_card, model, bank, torch.from_numpy(labels[PRIMARY_TASK][train]))
        split_card.ood_threshold = ood_threshold(scorer.ood_scores(emb[val].numpy()), cfg.ood_quantile)
        val_predictions = scorer._interpret(val_probs, emb[val].numpy())
        chosen = calibrate_miss_averse(split_card, val_predictions, labels[PRIMARY_TASK][val], cfg)
        split_card.miss_threshold = chosen["threshold"]
        test_predictions = scorer._interpret(head_probabilities(model, emb[torch.from_numpy(test)]), emb[test].numpy())
        effect = test_effect(split_card, test_predictions, labels[PRIMARY_TASK][test] != no_defect)
        print(
            f"seed {seed}: cut {chosen['threshold']:.4f} (validation recall {chosen['val_defect_recall']:.3f}); "
            f"test: {effect['test_defects_predicted_free_flagged']}/{effect['test_defects_predicted_free']} "
            f"defective tiles predicted free are flagged, good tiles flagged {effect['test_free_flagged_share']:.3f}, "
            f"defects caught or flagged {effect['test_defect_recall_caught_or_flagged']:.3f}"
        )
        pooled["missed"] += effect["test_defects_predicted_free"]
        pooled["missed_flagged"] += effect["test_defects_predicted_free_flagged"]
        pooled["free"] += effect["test_free_images"]
        pooled["free_flagged"] += round(effect["test_free_flagged_share"] * effect["test_free_images"])
        pooled["defective"] += effect["test_defective_images"]
        pooled["covered"] += round(effect["test_defect_recall_caught_or_flagged"] * effect["test_defective_images"])
    p = pooled
    flagged = p["missed_flagged"] / p["missed"] if p["missed"] else float("nan")
    print(
        f"pooled over {len(seeds)} splits: {p['missed_flagged']}/{p['missed']} defective tiles predicted free are "
        f"flagged ({flagged:.1%}); good tiles flagged {p['free_flagged']}/{p['free']} "
        f"({p['free_flagged'] / p['free']:.1%}); defects caught or flagged {p['covered']}/{p['defective']} "
        f"({p['covered'] / p['defective']:.1%})"
    )


if __name__ == "__main__":
    default = str(Path(__file__).parents[1] / ".." / "shared/data/magnetic-tile")
    # views: 3 as training does; 1 (the image as the Predictor sees it) when the machine is busy.
    main(sys.argv[1] if len(sys.argv) > 1 else default, views=int(sys.argv[2]) if len(sys.argv) > 2 else 3)
