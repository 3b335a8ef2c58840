"""Compare two model versions on one labelled dataset before promoting one of them.

Both models classify the same images (by default the candidate's own held-out test split: the dataset it was
trained from, restricted to the test files its card lists). The result holds, per model: accuracy, balanced
accuracy, per-class recall and the confusion matrix of the defect task, the share flagged for review and the
speed (images per second, both measured in the same run, one after the other); and every image where the two
disagree, with both predictions and the truth. It is plain JSON, kept under the data folder so the Models page
can show the last comparison again after a reload.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from visionqc.datasets.checks import DatasetProblem
from visionqc.datasets.export import items_for_files
from visionqc.jobs.progress import JOBS_DIR
from visionqc.model.card import PRIMARY_TASK, read_card
from visionqc.registry import ModelVersion
from visionqc.store import Store
from visionqc.training.metrics import classification_report

ANOMALY = "anomaly"
DEFECT, NO_DEFECT = "defect", "no defect"

Progress = Callable[[int, int], None]
COMPARISONS = "comparisons"


def default_images(store: Store, candidate: ModelVersion) -> tuple[str, pd.DataFrame]:
    """The candidate's own test split: its training dataset's items named by its card's test files."""
    if not candidate.dataset:
        raise DatasetProblem(f"{candidate.label} was not trained from a dataset here; choose a labelled dataset")
    ident = candidate.dataset["id"]
    items = store.dataset_items(ident)
    files = ((read_card(candidate.path).raw.get("training") or {}).get("split") or {}).get("test_files") or []
    test = items_for_files(items, files)
    if test.empty:
        raise DatasetProblem(f"the card of {candidate.label} lists no test images of {ident}; choose a dataset")
    return f"{ident} (test split of {candidate.label})", test


def _predictions(store: Store, version: ModelVersion, items: pd.DataFrame, progress: Progress | None, offset: int):
    """(defect label, confidence, needs review, action) per item, and the seconds the model took."""
    from visionqc.model.predict import open_predictor  # torch, only when comparing

    predictor = open_predictor(version.path)
    out: dict[int, tuple] = {}
    data = [(int(i), (store.home / p).read_bytes()) for i, p in zip(items["item"], items["path"], strict=True)]
    start = time.perf_counter()
    for n, (item, _, prediction) in enumerate(predictor.predict_stream(data), start=1):
        if isinstance(prediction, Exception):
            out[item] = (None, None, True, "Review", None)
        else:
            out[item] = (
                prediction.defect.label,
                prediction.defect.confidence,
                prediction.needs_review,
                prediction.action,
                prediction.is_defect,
            )
        if progress is not None:
            progress(offset + n, 2 * len(items))
    return out, time.perf_counter() - start


def _model_summary(version: ModelVersion, truth: list[str], predicted: dict[int, tuple], items, seconds: float):
    labels = sorted(set(truth) | {p[0] for p in predicted.values() if p[0] is not None})
    index = {c: i for i, c in enumerate(labels)}
    y_pred = [index.get(predicted[int(i)][0], -1) for i in items["item"]]
    y_true = [index[t] for t in truth]
    known = [(t, p) for t, p in zip(y_true, y_pred, strict=True) if p >= 0]
    report = classification_report([t for t, _ in known], [p for _, p in known], labels).to_json()
    flagged = sum(1 for p in predicted.values() if p[2])
    present = sorted(set(truth))
    return {
        "model": version.ref(),
        "label": version.label,
        "accuracy": report["accuracy"],
        "balanced_accuracy": report["balanced_accuracy"],
        "macro_f1": report["macro_f1"],
        "recall": {c: report["per_class"][c]["recall"] for c in present},
        "confusion_matrix": report["confusion_matrix"],
        "needs_review_share": round(flagged / len(items), 4) if len(items) else 0.0,
        "images_per_second": round(len(items) / seconds, 1) if seconds > 0 else None,
        "unreadable": sum(1 for p in predicted.values() if p[0] is None),
    }


def compare(
    store: Store,
    baseline: ModelVersion,
    candidate: ModelVersion,
    *,
    dataset: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Compare ``baseline`` and ``candidate`` on ``dataset`` (``name`` or ``name@version``; default: the
    candidate's test split). Raises :class:`DatasetProblem` when there is nothing to compare on."""
    if dataset:
        row = store.dataset(dataset)
        if row is None:
            raise DatasetProblem(f"there is no dataset {dataset!r}")
        described, items = row["dataset_id"], store.dataset_items(row["dataset_id"])
        no_defect = row["no_defect_class"]
    else:
        described, items = default_images(store, candidate)
        no_defect = read_card(candidate.path).no_defect_class
    items = items.reset_index(drop=True)
    truth = items["defect"].tolist()
    base_pred, base_s = _predictions(store, baseline, items, progress, 0)
    cand_pred, cand_s = _predictions(store, candidate, items, progress, len(items))
    task = PRIMARY_TASK
    if ANOMALY in (baseline.kind, candidate.kind):
        # An anomaly model names no defect type: both are measured on what it does say, defect or not.
        truth = [NO_DEFECT if d == no_defect else DEFECT for d in truth]
        base_pred, cand_pred = _binary(base_pred), _binary(cand_pred)
        task = f"{PRIMARY_TASK} or not"
    disagreements = [
        {
            "item": int(item.item),
            "file_name": item.file_name,
            "path": item.path,
            "sha256": item.sha256,
            "truth": item.defect,
            "baseline": base_pred[int(item.item)][0],
            "baseline_confidence": base_pred[int(item.item)][1],
            "candidate": cand_pred[int(item.item)][0],
            "candidate_confidence": cand_pred[int(item.item)][1],
        }
        for item in items.itertuples(index=False)
        if base_pred[int(item.item)][0] != cand_pred[int(item.item)][0]
    ]
    base_actions = [base_pred[int(i)][3] for i in items["item"]]
    cand_actions = [cand_pred[int(i)][3] for i in items["item"]]
    return {
        "dataset": described,
        "images": len(items),
        "task": task,
        "baseline": _model_summary(baseline, truth, base_pred, items, base_s),
        "candidate": _model_summary(candidate, truth, cand_pred, items, cand_s),
        "disagreements": disagreements,
        "actions_changed": sum(a != b for a, b in zip(base_actions, cand_actions, strict=True)),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def _binary(predictions: dict[int, tuple]) -> dict[int, tuple]:
    """Each prediction's label as defect / no defect (an unreadable image stays unlabelled)."""
    return {k: (None if p[0] is None else DEFECT if p[4] else NO_DEFECT, *p[1:]) for k, p in predictions.items()}


def _key(baseline: ModelVersion, candidate: ModelVersion, dataset: str | None) -> str:
    text = f"{baseline.name}/{baseline.version}|{candidate.name}/{candidate.version}|{dataset or 'test split'}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save(home: Path, result: dict[str, Any], baseline: ModelVersion, candidate: ModelVersion, dataset: str | None):
    folder = home / JOBS_DIR / COMPARISONS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_key(baseline, candidate, dataset)}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, path)


def load(home: Path, baseline: ModelVersion, candidate: ModelVersion, dataset: str | None) -> dict[str, Any] | None:
    """The last saved comparison of these two versions on this dataset, if any."""
    path = home / JOBS_DIR / COMPARISONS / f"{_key(baseline, candidate, dataset)}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
