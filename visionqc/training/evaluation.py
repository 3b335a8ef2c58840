"""Evaluation: a real :class:`~visionqc.model.predict.Predictor` on labelled images, the repeated-split check of
phase 1, and the report as text for the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionqc.intake.imaging import ImageDecodeError
from visionqc.model.card import PRIMARY_TASK
from visionqc.model.predict import Predictor
from visionqc.training.config import TrainConfig
from visionqc.training.datasets import Dataset, stratified_split
from visionqc.training.metrics import ClassificationReport, classification_report
from visionqc.training.phases import train_heads
from visionqc.training.pipeline import prefetched, progress_bar


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
    with progress_bar(total=len(indices), desc="evaluating", unit="img", disable=not progress) as bar:
        for chunk, (ok, arrays, errors) in prefetched(indices, prepare, predictor.batch_size * 2):
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
    model_dir: str | Path, dataset: Dataset, split: str = "all", progress: bool = True, runtime: str | None = None
) -> dict[str, Any]:
    """Evaluate a saved model on a dataset: ``split="all"`` or ``"test"`` (the card's recorded test files), in
    ``runtime`` (default: the fastest the card allows, as prediction uses)."""
    predictor = Predictor(model_dir, runtime=runtime)
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
    report["runtime"] = predictor.runtime
    return report


def repeated_split_scores(
    embeddings: torch.Tensor,
    labels: dict[str, np.ndarray],
    task_sizes: dict[str, int],
    cfg: TrainConfig,
    strata: np.ndarray | None = None,
) -> dict[str, Any]:
    """Phase 1 re-run on ``cfg.repeats`` other stratified splits (seeds seed+1..): test metrics mean/std.

    ``strata`` is what the splits are stratified on (``Dataset.strata()``; default the defect class)."""
    strata = labels[PRIMARY_TASK] if strata is None else strata
    runs = []
    for r in progress_bar(range(1, cfg.repeats + 1), desc="repeated splits", unit="split", disable=not cfg.progress):
        seed = cfg.seed + r
        tr, va, te = stratified_split(strata, cfg.val_fraction, cfg.test_fraction, seed)
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


def format_report(report: dict[str, Any]) -> str:
    """A plain-text summary of :func:`evaluate_predictor`'s result for the terminal."""
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
