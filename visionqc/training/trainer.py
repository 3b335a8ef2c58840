"""Training: the whole recipe that turns a labelled dataset into a model directory.

The recipe, in the order :func:`train` runs it:

1. **Split** the images train / validation / test, stratified by defect class, with a fixed seed.
2. **Cache features** (:mod:`~visionqc.training.features`). Every image is decoded and preprocessed exactly
   as :class:`~visionqc.model.predict.Predictor` does, plus a few augmented views (mild crops, brightness and
   contrast; no flips or rotations: on inspection photos they cost accuracy). The frozen ImageNet backbone
   turns each view into a 1280-d embedding once; phase 2 also keeps the activations entering the last blocks.
3. **Phase 1: heads only** (:mod:`~visionqc.training.phases`), on the cached embeddings: one linear head per
   task, class-balanced sampling, the multi-task loss ``sum_t w_t * CE_t`` (weights 1.0 / 0.7 / 0.7 by
   default) with severity and location masked for defect-free images, early stopping on validation. For a
   dataset whose parts are symmetric (elpv), the sampling and an L2 penalty on the heads are chosen on
   validation accuracy among :data:`SYMMETRIC_PHASE1`.
4. **Phase 2: the last backbone blocks + heads**, on the cached activations, BatchNorm in eval mode, a cosine
   learning-rate schedule and early stopping. Kept only if it beats phase 1 on validation balanced accuracy
   (validation accuracy for a symmetric set, the metric its phase-1 recipe is chosen on; phase 2 then also
   keeps its epoch on validation accuracy).
5. **The conv-head candidate** (:mod:`~visionqc.training.conv_head`; unless ``--conv-head off`` or the time
   budget leaves it out): a small convolutional head on the frozen backbone's cached activations entering block
   15, replacing the linear heads only if it beats the model chosen so far on the same validation metric.
6. **Calibrate** (:mod:`~visionqc.training.calibration`) the needs-review confidence threshold per task and
   the out-of-distribution cut on the validation split, and store the training embeddings as the OOD bank.
7. **Report** (:mod:`~visionqc.training.evaluation`) accuracy, balanced accuracy, macro F1, per-class
   precision/recall and the confusion matrix per task on the test split, computed by a real ``Predictor`` on
   the saved model directory, and the mean and spread of phase 1 over repeated random splits.
8. **Export** (:mod:`~visionqc.training.export`) the network as ONNX graphs (fp32 and int8, calibrated on the
   training split) and record their parity with PyTorch on the test split in the card.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionqc.model.card import PRIMARY_TASK, ModelCard, TaskSpec, read_card
from visionqc.model.checkpoint import Checkpoint, save_checkpoint
from visionqc.model.network import DefectNet, load_imagenet_backbone
from visionqc.model.predict import Predictor
from visionqc.training.budget import Plan, plan_timed, seconds_per_pass
from visionqc.training.calibration import calibrate_confidence_thresholds, calibrate_miss_averse, ood_threshold
from visionqc.training.card import training_card
from visionqc.training.config import NORMALISATION_MEAN, NORMALISATION_STD, TrainConfig
from visionqc.training.conv_head import SPEC as CONV_HEAD
from visionqc.training.conv_head import other_tasks_accuracy, try_conv_head
from visionqc.training.datasets import Dataset, stratified_split
from visionqc.training.evaluation import evaluate_predictor, repeated_split_scores
from visionqc.training.features import FeatureCache, choose_view_count, extract_features
from visionqc.training.loop import PhaseResult
from visionqc.training.metrics import balanced_accuracy
from visionqc.training.phases import (
    finetune_last_blocks,
    head_probabilities,
    set_heads,
    tail_embeddings,
    train_heads,
)
from visionqc.training.pipeline import Listener, log, reporting_to


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


def _without_unreadable(dataset: Dataset, cache: FeatureCache, cfg: TrainConfig) -> tuple[Dataset, list[str]]:
    """Leave out the images that could not be decoded (from the dataset and the cache); returns their names."""
    if not cache.failed:
        return dataset, []
    example = next(iter(cache.failed.values()))
    log(cfg.progress, f"{len(cache.failed)} image(s) could not be read and are left out, e.g. {example}")
    keep = [i for i in range(len(dataset.samples)) if i not in cache.failed]
    unreadable = [dataset.key(dataset.samples[i]) for i in sorted(cache.failed)]
    cache.embeddings = cache.embeddings[:, keep]
    if cache.activations is not None:
        cache.activations = cache.activations[:, keep]
    return dataset.subset(keep), unreadable


def _choose_phase(
    model: DefectNet,
    phase1_scores: tuple[float, float],
    cache: FeatureCache,
    labels: dict[str, np.ndarray],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    plan: Plan,
    tta: int,
) -> tuple[int, DefectNet, PhaseResult | None, str, float]:
    """Try phase 2 on a copy of the phase-1 model; keep it only if it wins on validation (both scored with the
    chosen test-time augmentation). ``phase1_scores``: phase 1's validation (balanced accuracy, accuracy); the
    metric compared is accuracy when phase 2 selects its epoch on accuracy (a symmetric set, see
    :func:`compares_accuracy`), else balanced accuracy. Returns the phase kept, its network, phase 2's result (if
    run), why, and the kept network's validation score on that metric (what a later candidate must beat)."""
    on_accuracy = compares_accuracy(cfg)
    baseline = phase1_scores[1] if on_accuracy else phase1_scores[0]
    if not cfg.phase2:
        return 1, model, None, "phase 2 disabled (--no-phase2)", baseline
    if not plan.phase2:
        reason = f"phase 2 left out to fit the time budget of {plan.budget_seconds:.0f} s"
        return 1, model, None, reason, baseline
    candidate = copy.deepcopy(model)
    phase2 = finetune_last_blocks(candidate, cache, labels, train_idx, val_idx, cfg, cfg.progress, val_views=tta)
    metric = "accuracy" if on_accuracy else "balanced accuracy"
    score = phase2.val_accuracy if on_accuracy else phase2.val_balanced_accuracy
    log(
        cfg.progress,
        f"phase 2: validation {metric} {score:.4f} (epoch {phase2.best_epoch}, {phase2.seconds:.1f} s)",
    )
    scores = f"({score:.4f} {{}} {baseline:.4f})"
    if score > baseline:
        return 2, candidate, phase2, f"phase 2 beat phase 1 on validation {metric} " + scores.format(">"), score
    reason = f"phase 2 did not beat phase 1 on validation {metric} " + scores.format("<=") + "; kept phase 1"
    return 1, model, phase2, reason, baseline


def compares_accuracy(cfg: TrainConfig) -> bool:
    """Whether candidates (phase 2, the conv head) are compared on validation accuracy rather than balanced
    accuracy: when phase 2 keeps its epoch on accuracy (a symmetric set's recipe sets it)."""
    return (cfg.phase2_select_on or cfg.select_on) == "accuracy"


def _final_embeddings(model: DefectNet, cache: FeatureCache, phase: int, tta: int = 1) -> torch.Tensor:
    """Embeddings of the chosen network for every image: exactly what the Predictor computes (view 0, or the
    mean over the first ``tta`` symmetries with test-time augmentation)."""
    if phase == 1:
        return cache.embeddings[:tta].mean(0)
    everything = torch.arange(cache.activations.shape[1])
    return tail_embeddings(model, cache.activations, everything, cache.split_block, tta)


def resolve_augmentation(cfg: TrainConfig, dataset: Dataset) -> tuple[str, str]:
    """(``crops`` or ``dihedral``, why) for this run: ``auto`` follows :attr:`Dataset.symmetric`."""
    if cfg.augmentation == "auto":
        if dataset.symmetric:
            return "dihedral", "auto: the dataset's parts look the same flipped and turned (Dataset.symmetric)"
        return "crops", "auto: the dataset does not say its parts are symmetric"
    if cfg.augmentation not in ("crops", "dihedral"):
        raise ValueError(f"unknown augmentation {cfg.augmentation!r}; use auto, crops or dihedral")
    return cfg.augmentation, "asked for (--augmentation)"


# Phase-1 recipes tried for a dataset whose parts are symmetric (Dataset.symmetric; the elpv reader says so), as
# (balance_power, head_l2): the general recipe (class-balanced sampling, no penalty; ``None`` = the config's
# balance_power) and plain sampling with three L2 strengths. The one with the best validation accuracy is kept.
# On elpv the unpenalised heads overfit within a few epochs (early stopping then kept epoch 1 on one seed); see
# docs/MODEL_RESULTS.md, elpv section.
SYMMETRIC_PHASE1: tuple[tuple[float | None, float], ...] = ((None, 0.0), (0.0, 0.01), (0.0, 0.03), (0.0, 0.1))


def choose_phase1_recipe(
    embeddings: torch.Tensor,
    labels: dict[str, np.ndarray],
    task_sizes: dict[str, int],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    val_views: int,
) -> tuple[TrainConfig, dict[str, tuple[torch.Tensor, torch.Tensor]], PhaseResult, dict[str, Any]]:
    """Phase 1 with each of :data:`SYMMETRIC_PHASE1`; keeps the one with the best validation accuracy (the mean
    embedding of the first ``val_views`` views; ties to the earlier candidate). Returns the config with the
    chosen sampling and penalty and phase 2 selecting on validation accuracy too (the rest of the run uses it),
    its heads, its phase result and what was tried."""
    y_val = labels[PRIMARY_TASK][val_idx]
    tried, best = [], None
    for power, l2 in SYMMETRIC_PHASE1:
        candidate = dataclasses.replace(cfg, balance_power=cfg.balance_power if power is None else power, head_l2=l2)
        heads, result = train_heads(
            embeddings, labels, task_sizes, train_idx, val_idx, candidate, cfg.seed, cfg.progress, val_views
        )
        pred = defect_predictions(heads, embeddings, val_idx, val_views)
        classes = len(heads[PRIMARY_TASK][1])
        accuracy = float((pred == y_val).mean())
        tried.append(
            {
                "balance_power": candidate.balance_power,
                "head_l2": l2,
                "validation_accuracy": round(accuracy, 4),
                "validation_balanced_accuracy": round(balanced_accuracy(y_val, pred, classes), 4),
                "best_epoch": result.best_epoch,
            }
        )
        if best is None or accuracy > best[0]:
            best = (accuracy, candidate, heads, result)
    _, chosen, heads, result = best
    # Phase 2 then keeps its epoch, and is kept over phase 1, on the same metric (unless asked otherwise).
    chosen = dataclasses.replace(chosen, phase2_select_on=chosen.phase2_select_on or "accuracy")
    record = {
        "chosen": {"balance_power": chosen.balance_power, "head_l2": chosen.head_l2},
        "rule": "the dataset's parts are symmetric (its metric is plain accuracy, as in the elpv paper): phase 1 "
        "with class-balanced sampling and no penalty, and with plain sampling and an L2 penalty on the heads of "
        "0.01, 0.03 or 0.1; the best validation accuracy is kept (ties to the earlier)",
        "tried": tried,
    }
    return chosen, heads, result, record


def defect_predictions(
    heads: dict[str, tuple[torch.Tensor, torch.Tensor]], embeddings: torch.Tensor, idx: np.ndarray, views: int
) -> np.ndarray:
    """The defect class the phase-1 head gives images ``idx``, on the mean embedding of their first ``views``
    cached views (test-time augmentation over ``views`` symmetries; 1 = none)."""
    w, b = heads[PRIMARY_TASK]
    return (embeddings[:views, torch.from_numpy(idx)].mean(0) @ w.T + b).argmax(1).numpy()


def choose_tta(
    heads: dict[str, tuple[torch.Tensor, torch.Tensor]],
    embeddings: torch.Tensor,
    labels: np.ndarray,
    val_idx: np.ndarray,
    views: int,
) -> tuple[int, dict[int, float]]:
    """The test-time augmentation (symmetries averaged) with the best validation balanced accuracy of the
    phase-1 defect head; ties go to fewer views (faster). Returns (views, balanced accuracy per candidate)."""
    classes = len(heads[PRIMARY_TASK][1])
    return choose_view_count(
        lambda n: balanced_accuracy(labels[val_idx], defect_predictions(heads, embeddings, val_idx, n), classes), views
    )


def _calibrate(
    card: ModelCard,
    model: DefectNet,
    final_emb: torch.Tensor,
    val_probs: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Set the card's needs-review thresholds from the validation split (``val_probs``: the chosen network's
    probabilities for those images, as the Predictor will compute them); returns the OOD bank, its labels and
    what the calibration did (for the card)."""
    val = torch.from_numpy(val_idx)
    val_labels = {task: y[val_idx] for task, y in labels.items()}
    card.confidence_thresholds, calibration = calibrate_confidence_thresholds(
        val_probs, val_labels, cfg.review_target_accuracy, cfg.max_review_share
    )
    bank = final_emb[torch.from_numpy(train_idx)]
    bank_labels = torch.from_numpy(labels[PRIMARY_TASK][train_idx])
    scorer = in_memory_predictor(card, model, bank, bank_labels)
    card.ood_threshold = ood_threshold(scorer.ood_scores(final_emb[val].numpy()), cfg.ood_quantile)
    calibration["ood"] = {
        "threshold": card.ood_threshold,
        "rule": f"{cfg.ood_quantile:.0%} quantile of the validation images' mean cosine distance to their "
        f"{cfg.ood_k} nearest training embeddings",
        "bank_size": len(train_idx),
    }
    # Last, with the other rules in place: the miss-averse cut covers what they leave unflagged.
    val_embeddings = final_emb[val].numpy()
    predictions = scorer._interpret(val_probs, val_embeddings)
    calibration["miss_averse"] = calibrate_miss_averse(card, predictions, val_labels[PRIMARY_TASK], cfg)
    card.miss_threshold = calibration["miss_averse"]["threshold"]
    return bank, bank_labels, calibration


def train(
    dataset: Dataset,
    out_dir: str | Path,
    cfg: TrainConfig,
    command: str | None = None,
    citation: str | None = None,
    progress: Listener | None = None,
) -> dict[str, Any]:
    """Run the whole recipe (module docstring) and write the model directory. Returns the card JSON.

    ``progress(steps)`` is called whenever a step of the recipe moves, with the open progress bars outermost
    first (:class:`~visionqc.training.pipeline.Step`: feature extraction, each phase's epochs with their
    validation score, the repeated splits, the test evaluation); an exception it raises ends the run.
    """
    if progress is not None:
        with reporting_to(progress):
            return train(dataset, out_dir, cfg, command, citation)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    load_at_start = [round(v, 2) for v in os.getloadavg()]  # other work on the machine slows every timing
    if cfg.max_per_class:
        dataset = limit_per_class(dataset, cfg.max_per_class, cfg.seed)
    task_sizes = {t: len(c) for t, c in dataset.tasks.items()}
    model = DefectNet(task_sizes)
    load_imagenet_backbone(model)
    model.eval()
    card = base_card(dataset, cfg)
    augmentation, augmentation_reason = resolve_augmentation(cfg, dataset)
    if cfg.conv_head not in ("auto", "off"):
        raise ValueError(f"unknown conv_head setting {cfg.conv_head!r}; use auto or off")
    extractor = in_memory_predictor(card, model)
    asked_views = cfg.dihedral_views if augmentation == "dihedral" else cfg.views
    plan = plan_timed(
        lambda: seconds_per_pass(extractor.model, cfg.input_size),
        cfg.time_budget,
        images=len(dataset.samples),
        views=asked_views,
        phase2=cfg.phase2,
        phase2_epochs=cfg.phase2_epochs,
        repeats=cfg.repeats,
        export=cfg.export,
        train_share=1 - cfg.val_fraction - cfg.test_fraction,
        test_share=cfg.test_fraction,
        tta=asked_views if augmentation == "dihedral" else 1,
        conv_head=cfg.conv_head == "auto",
    )
    if plan.left_out:
        log(cfg.progress, f"time budget {cfg.time_budget:.0f} s: left out {', '.join(plan.left_out)}")
    unfreeze = max(1, min(cfg.unfreeze_blocks, len(model.backbone_blocks())))
    split_block = len(model.backbone_blocks()) - unfreeze if (cfg.phase2 and plan.phase2) else None
    if plan.conv_head and split_block is None:  # the conv head reads the activations entering its block
        split_block = CONV_HEAD.split_block
    log(cfg.progress, f"{len(dataset.samples)} images, classes {dataset.class_counts()}; caching features")
    paths = [s.path for s in dataset.samples]
    cache = extract_features(
        extractor, paths, plan.views, cfg.seed, split_block, progress=cfg.progress, augmentation=augmentation
    )
    timings["feature_extraction"] = cache.seconds
    dataset, unreadable = _without_unreadable(dataset, cache, cfg)
    labels = task_labels(dataset)
    train_idx, val_idx, test_idx = stratified_split(dataset.strata(), cfg.val_fraction, cfg.test_fraction, cfg.seed)
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise ValueError("too few images to split into training and validation sets")

    # With symmetric views, validation scores the heads on the mean over all of them while training, and the
    # number of symmetries the saved network averages (test-time augmentation) is then chosen on validation.
    dihedral = augmentation == "dihedral"
    val_views = plan.views if dihedral else 1
    phase1_recipe = None
    if dataset.symmetric:
        cfg, heads, phase1, phase1_recipe = choose_phase1_recipe(
            cache.embeddings, labels, task_sizes, train_idx, val_idx, cfg, val_views
        )
    else:
        heads, phase1 = train_heads(
            cache.embeddings, labels, task_sizes, train_idx, val_idx, cfg, cfg.seed, cfg.progress, val_views
        )
    set_heads(model, heads)
    tta, tta_scores = choose_tta(heads, cache.embeddings, labels[PRIMARY_TASK], val_idx, plan.views if dihedral else 1)
    model.tta_views = tta
    timings["phase1_heads"] = phase1.seconds
    timings["phase1_total_with_features"] = cache.seconds + phase1.seconds
    log(
        cfg.progress,
        f"phase 1: validation balanced accuracy {tta_scores[tta]:.4f} with {tta} view(s) averaged "
        f"(epoch {phase1.best_epoch}, {phase1.seconds:.1f} s + {cache.seconds:.1f} s features)",
    )
    phase1_accuracy = float(
        (defect_predictions(heads, cache.embeddings, val_idx, tta) == labels[PRIMARY_TASK][val_idx]).mean()
    )
    phase1_model = model
    phase, model, phase2, reason, kept_score = _choose_phase(
        model, (tta_scores[tta], phase1_accuracy), cache, labels, train_idx, val_idx, cfg, plan, tta
    )
    if phase2 is not None:
        timings["phase2"] = phase2.seconds
    model.eval()

    val_probs, conv_record, final_emb = None, None, None
    if plan.conv_head:
        final_emb = _final_embeddings(model, cache, phase, tta)
        val_probs = head_probabilities(model, final_emb[torch.from_numpy(val_idx)])  # the linear heads'
        conv_model, conv_probs, conv_record = try_conv_head(
            phase1_model,
            cache,
            labels,
            task_sizes,
            train_idx,
            val_idx,
            cfg,
            kept_score,
            compares_accuracy(cfg),
            symmetric_views=plan.views if dihedral else 0,
            baseline_others=other_tasks_accuracy(val_probs, labels, val_idx),
        )
        timings["conv_head"] = conv_record["seconds"]
        if conv_model is not None:
            score = conv_record["validation_score_by_views"][str(conv_record["chosen_views"])]
            how = (
                f"({score:.4f} > {kept_score:.4f})"
                if conv_record["kept_on"] == "defect"
                else f"({score:.4f}, a tie; severity and location {conv_record['other_tasks_validation_accuracy']:.4f}"
                f" > {conv_record['linear_heads_other_tasks_validation_accuracy']:.4f})"
            )
            reason += (
                f"; then the conv head on phase 1's frozen backbone beat it on validation "
                f"{conv_record['validation_metric']} {how} and replaced the linear heads"
            )
            model, phase, tta = conv_model, 1, conv_model.tta_views
            final_emb, val_probs = None, conv_probs

    t_cal = time.perf_counter()
    if final_emb is None:
        final_emb = _final_embeddings(model, cache, phase, tta)
    if val_probs is None:
        val_probs = head_probabilities(model, final_emb[torch.from_numpy(val_idx)])
    bank, bank_labels, calibration = _calibrate(card, model, final_emb, val_probs, labels, train_idx, val_idx, cfg)
    timings["calibration"] = time.perf_counter() - t_cal

    repeated = None
    if plan.repeats > 0:
        t_rep = time.perf_counter()
        repeated = repeated_split_scores(cache.embeddings, labels, task_sizes, cfg, dataset.strata())
        timings["repeated_splits"] = time.perf_counter() - t_rep

    card.raw = training_card(
        dataset,
        cfg,
        splits=(train_idx, val_idx, test_idx),
        phases=(phase1, phase2, phase, reason),
        calibration=calibration,
        repeated=repeated,
        command=command,
        citation=citation,
        unreadable=unreadable,
        choices={
            "augmentation": {"chosen": augmentation, "why": augmentation_reason, "views": plan.views},
            "test_time_augmentation": {
                "chosen_views": tta,
                "rule": "the number of symmetries (visionqc.model.network.DIHEDRAL) averaged at prediction with "
                "the best validation balanced accuracy of the phase-1 defect head; ties to fewer (faster)",
                "validation_balanced_accuracy": {str(n): round(v, 4) for n, v in tta_scores.items()},
            },
            "budget": plan.to_json(),
            **({"phase1_recipe": phase1_recipe} if phase1_recipe else {}),
            **({"conv_head": conv_record} if conv_record else {}),
        },
    )
    if model.conv_head is not None:
        card.raw["architecture"]["conv_head"] = CONV_HEAD.to_json()
        card.raw["architecture"]["heads"] = (
            f"a small convolutional head ({CONV_HEAD.width} channels, {CONV_HEAD.depth} convolutions, mean + max "
            f"pooling) on the activations entering block {CONV_HEAD.split_block}; the 1280-d pooled embedding is kept "
            "for the out-of-distribution check and Explore (training: training.choices.conv_head)"
        )
        card.raw["training"]["choices"]["test_time_augmentation"].update(
            chosen_views=tta,
            rule="the conv head's: see training.choices.conv_head (the linear heads' choice is kept here for "
            "comparison under linear_heads_chosen_views)",
            linear_heads_chosen_views=phase1_model.tta_views,
        )
    if tta > 1:
        card.raw["architecture"]["test_time_augmentation"] = {
            "views": tta,
            "symmetries": "the first n of visionqc.model.network.DIHEDRAL; the embedding is their mean",
        }
    out_dir = Path(out_dir)
    save_checkpoint(out_dir, model, card, bank, bank_labels)

    t_eval = time.perf_counter()
    if len(test_idx):
        test_report = evaluate_predictor(Predictor(out_dir), dataset, test_idx.tolist(), cfg.progress)
        test_report["split"] = "test"
        card.raw["metrics"]["test"] = test_report
        seconds = time.perf_counter() - t_eval
        card.raw["metrics"]["inference_speed"] = {
            "images_per_second": round(len(test_idx) / seconds, 1),
            "runtime": "torch",
            "measured": "the test evaluation above: decode, preprocess and the network (with its test-time "
            "augmentation), batch 16, on this machine while training (see machine.load_average_*)",
        }
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
    if cfg.export and len(test_idx):
        from visionqc.training.export import export_model

        export_model(out_dir, dataset, train_idx.tolist(), test_idx.tolist(), command=command, progress=cfg.progress)
        return read_card(out_dir).raw
    return card.to_json()
