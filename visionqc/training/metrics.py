"""Classification metrics, in numpy: accuracy, balanced accuracy, macro F1, per-class precision/recall.

Conventions (the same as scikit-learn's defaults, so numbers compare):

* precision of a class that is never predicted, and recall of a class that never occurs, are 0;
* balanced accuracy is the mean recall over the classes that occur in the true labels;
* macro F1 is the mean F1 over the classes that occur in the true or the predicted labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = number of samples of true class ``i`` predicted as class ``j``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape} vs {y_pred.shape}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


@dataclass
class ClassificationReport:
    labels: list[str]
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: list[list[int]]  # rows = true class, columns = predicted class, in ``labels`` order

    @property
    def count(self) -> int:
        return int(sum(self.support))

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.count,
            "accuracy": round(self.accuracy, 4),
            "balanced_accuracy": round(self.balanced_accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "per_class": {
                label: {
                    "precision": round(p, 4),
                    "recall": round(r, 4),
                    "f1": round(f, 4),
                    "support": s,
                }
                for label, p, r, f, s in zip(
                    self.labels, self.precision, self.recall, self.f1, self.support, strict=True
                )
            },
            "confusion_matrix": {"labels": self.labels, "rows_true_columns_predicted": self.confusion},
        }

    def format(self) -> str:
        """A plain-text table for the terminal."""
        width = max(12, *(len(label) for label in self.labels))
        lines = [
            f"n={self.count}  accuracy={self.accuracy:.4f}  balanced accuracy={self.balanced_accuracy:.4f}  "
            f"macro F1={self.macro_f1:.4f}",
            f"{'class':<{width}} precision  recall     f1  support",
        ]
        for label, p, r, f, s in zip(self.labels, self.precision, self.recall, self.f1, self.support, strict=True):
            lines.append(f"{label:<{width}} {p:9.3f} {r:7.3f} {f:6.3f} {s:8d}")
        lines.append("confusion matrix (rows: true, columns: predicted, in the order above)")
        lines.extend("  " + " ".join(f"{v:4d}" for v in row) for row in self.confusion)
        return "\n".join(lines)


def classification_report(y_true, y_pred, labels: list[str]) -> ClassificationReport:
    """Every metric for integer class indices ``0..len(labels)-1``."""
    n = len(labels)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = cm.sum()
    present = support > 0
    seen = present | (predicted > 0)
    return ClassificationReport(
        labels=list(labels),
        accuracy=float(tp.sum() / total) if total else 0.0,
        balanced_accuracy=float(recall[present].mean()) if present.any() else 0.0,
        macro_f1=float(f1[seen].mean()) if seen.any() else 0.0,
        precision=precision.tolist(),
        recall=recall.tolist(),
        f1=f1.tolist(),
        support=[int(v) for v in support],
        confusion=cm.tolist(),
    )


def balanced_accuracy(y_true, y_pred, num_classes: int) -> float:
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return 0.0
    return float((np.diag(cm)[present] / support[present]).mean())
