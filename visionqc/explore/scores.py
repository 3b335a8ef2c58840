"""What the embedding map finds: outlier scores and near-duplicates, computed and stored for History.

- **Outlier score**: the mean cosine distance from an inspection's embedding to its ``k`` nearest training
  embeddings *of the class it is labelled as* (the model's ``ood.bank``). A high score means "unlike
  the training images of this class": an odd image, or a wrong label. Without a bank, the ``k`` nearest
  other stored inspections stand in.
- **Near-duplicates**: pairs of inspections whose embeddings have cosine similarity >= a threshold.

Plain numpy (no torch): the Explore page scores without loading the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from visionqc.filters import InspectionFilter
from visionqc.store import Store

NEAR_DUPLICATE_THRESHOLD = 0.97
NEAR_DUPLICATE_TAG = "near-duplicate"


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True) if x.ndim == 2 else np.ones((0, 1), dtype=np.float32)
    return x / np.maximum(norms, 1e-12)


def knn_distance(queries: np.ndarray, reference: np.ndarray, k: int = 5, exclude_self: bool = False) -> np.ndarray:
    """Mean cosine distance from each query to its ``k`` nearest reference rows -> float64 [n]."""
    q, r = _normalise(queries), _normalise(reference)
    if r.shape[0] == 0 or q.shape[0] == 0:
        return np.full(q.shape[0], np.nan)
    k_eff = min(k + int(exclude_self), r.shape[0])
    out = np.empty(q.shape[0])
    for start in range(0, q.shape[0], 4096):
        sims = q[start : start + 4096] @ r.T
        top = -np.sort(-np.partition(sims, sims.shape[1] - k_eff, axis=1)[:, -k_eff:], axis=1)
        if exclude_self:
            top = top[:, 1:] if k_eff > 1 else top
        out[start : start + 4096] = 1.0 - top.mean(axis=1, dtype=np.float64)
    return np.clip(out, 0.0, 2.0)


def outlier_scores(
    vectors: np.ndarray,
    labels: list[str | None],
    bank: np.ndarray | None,
    bank_labels: list[str] | None,
    k: int = 5,
) -> np.ndarray:
    """Each inspection's outlier score (see the module docstring): distance to the ``k`` nearest training
    embeddings of its own class; rows whose class the bank lacks are scored against the whole bank;
    with no bank, against the other inspections given."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.shape[0] == 0:
        return np.zeros(0)
    if bank is None or len(bank) == 0:
        return knn_distance(x, x, k, exclude_self=True)
    bank_np = np.asarray(bank, dtype=np.float32)
    bank_labels_arr = np.asarray(bank_labels if bank_labels is not None else [None] * len(bank_np), dtype=object)
    labels_arr = np.asarray(labels, dtype=object)
    scores = np.empty(x.shape[0])
    for label in pd.unique(labels_arr):
        rows = labels_arr == label
        ref = bank_np[bank_labels_arr == label] if label is not None else bank_np[:0]
        if len(ref) == 0:
            ref = bank_np
        scores[rows] = knn_distance(x[rows], ref, k)
    return scores


@dataclass(frozen=True)
class NearDuplicate:
    inspection_id: int
    duplicate_of: int  # the earlier (smaller id) inspection of the pair
    similarity: float


def near_duplicates(
    ids: np.ndarray, vectors: np.ndarray, threshold: float = NEAR_DUPLICATE_THRESHOLD, block: int = 2048
) -> pd.DataFrame:
    """Pairs with cosine similarity >= ``threshold``: one row per later inspection, pointing at its most
    similar earlier one -> DataFrame(inspection_id, duplicate_of, similarity), most similar first.

    Blocked matrix products, so memory stays at ``block`` x n similarities.
    """
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    z = _normalise(np.asarray(vectors, dtype=np.float32)[order])
    rows: list[tuple[int, int, float]] = []
    n = z.shape[0]
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = z[start:stop] @ z[:stop].T  # only earlier rows (and self) can be "duplicate_of"
        later_or_self = np.arange(stop)[None, :] >= np.arange(start, stop)[:, None]
        sims[later_or_self] = -2.0
        where = sims.argmax(axis=1)
        best = sims[np.arange(stop - start), where]
        for local in np.flatnonzero(best >= threshold).tolist():
            rows.append((int(ids[start + local]), int(ids[int(where[local])]), round(float(best[local]), 5)))
    frame = pd.DataFrame(rows, columns=["inspection_id", "duplicate_of", "similarity"])
    return frame.sort_values(["similarity", "inspection_id"], ascending=[False, True], ignore_index=True)


def bin_points(xy: np.ndarray, bins: int = 60) -> pd.DataFrame:
    """Point counts on a ``bins`` x ``bins`` grid: DataFrame(x, x2, y, y2, count) of the non-empty cells."""
    if len(xy) == 0:
        return pd.DataFrame(columns=["x", "x2", "y", "y2", "count"])
    counts, xe, ye = np.histogram2d(xy[:, 0], xy[:, 1], bins=bins)
    ix, iy = np.nonzero(counts)
    return pd.DataFrame({"x": xe[ix], "x2": xe[ix + 1], "y": ye[iy], "y2": ye[iy + 1], "count": counts[ix, iy]})


@dataclass
class ScoreUpdate:
    scored: int
    near_duplicate_pairs: int
    tagged: int


def update_scores(
    store: Store,
    bank: tuple[np.ndarray, list[str]] | None = None,
    f: InspectionFilter | None = None,
    threshold: float = NEAR_DUPLICATE_THRESHOLD,
    k: int = 5,
    chunk: int = 10_000,
) -> ScoreUpdate:
    """Compute the outlier score of every matching inspection (stored in ``outlier_score``, sortable in
    History) and find near-duplicates: stored as ``near_duplicate_of`` / ``near_duplicate_similarity``
    (sortable in History) and tagged ``near-duplicate`` (searchable in History by tag).

    ``bank`` is the active model's training embeddings and their defect labels
    (:meth:`visionqc.model.predict.Predictor.training_bank`); without it the inspections are scored against
    each other. Embeddings are read in chunks of ``chunk`` rows; near-duplicate search keeps only unit vectors.
    """
    meta = store.defects_of(f or InspectionFilter())
    bank, bank_labels = bank if bank is not None else (None, None)
    all_ids: list[np.ndarray] = []
    all_vectors: list[np.ndarray] = []
    scores_out: list[np.ndarray] = []
    label_of = dict(zip(meta["inspection_id"].tolist(), meta["defect"].tolist(), strict=True))
    ids_all = meta["inspection_id"].to_numpy()
    for start in range(0, len(ids_all), chunk):
        ids, vectors = store.embeddings(InspectionFilter(ids=ids_all[start : start + chunk].tolist(), deleted="all"))
        if len(ids) == 0:
            continue
        all_ids.append(ids)
        all_vectors.append(_normalise(vectors))
        if bank is not None:
            scores_out.append(outlier_scores(vectors, [label_of.get(int(i)) for i in ids], bank, bank_labels, k))
    if not all_ids:
        return ScoreUpdate(0, 0, 0)
    ids = np.concatenate(all_ids)
    vectors = np.concatenate(all_vectors)
    scores = np.concatenate(scores_out) if bank is not None else outlier_scores(vectors, [None] * len(ids), None, None)
    store.set_outlier_scores(ids.tolist(), [float(s) for s in scores])
    pairs = near_duplicates(ids, vectors, threshold)
    store.set_near_duplicates(
        ids.tolist(), pairs["inspection_id"].tolist(), pairs["duplicate_of"].tolist(), pairs["similarity"].tolist()
    )
    tagged = 0
    if len(pairs):
        members = set(pairs["inspection_id"]) | set(pairs["duplicate_of"])
        tagged = store.add_tags(sorted(members), [NEAR_DUPLICATE_TAG])
    return ScoreUpdate(scored=len(ids), near_duplicate_pairs=len(pairs), tagged=tagged)
