"""Explore: projections, outlier scores and near-duplicates are right and deterministic; store round trips."""

from __future__ import annotations

import threading
from datetime import datetime

import numpy as np
import pytest
from records import synthetic_record

from visionqc.explore import projection
from visionqc.explore import scores as embedding_scores
from visionqc.filters import InspectionFilter
from visionqc.store import Store


def clusters(seed: int = 0, n: int = 60, d: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, d)) * 6
    labels = np.repeat(np.arange(3), n // 3)
    return (centres[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


def test_pca_matches_svd_up_to_sign_and_is_deterministic():
    x, _ = clusters()
    xy = projection.pca_2d(x, seed=3)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    ref = centred @ vt[:2].T
    for c in range(2):
        assert abs(np.corrcoef(xy[:, c], ref[:, c])[0, 1]) > 0.999
    assert np.array_equal(xy, projection.pca_2d(x, seed=3))
    assert projection.pca_2d(np.zeros((0, 5))).shape == (0, 2)
    assert projection.pca_2d(x[:2]).shape == (2, 2)


def test_pca_fitted_on_a_sample_is_deterministic_for_a_seed():
    x, _ = clusters(n=300)
    a = projection.pca_2d(x, seed=1, fit_rows=50)
    assert np.array_equal(a, projection.pca_2d(x, seed=1, fit_rows=50))
    full = projection.pca_2d(x)
    assert abs(np.corrcoef(a[:, 0], full[:, 0])[0, 1]) > 0.95


def test_tsne_separates_clusters_and_is_deterministic():
    x, labels = clusters(n=90)
    a = projection.tsne_2d(x, seed=7, iterations=250)
    assert np.array_equal(a, projection.tsne_2d(x, seed=7, iterations=250))
    centroids = np.stack([a[labels == k].mean(axis=0) for k in range(3)])
    spread = max(np.linalg.norm(a[labels == k] - centroids[k], axis=1).mean() for k in range(3))
    gaps = [np.linalg.norm(centroids[i] - centroids[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread
    with pytest.raises(ValueError, match="limited"):
        projection.tsne_2d(np.zeros((projection.TSNE_MAX_POINTS + 1, 3)))


def test_outlier_score_is_distance_to_the_own_class_bank():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=64), rng.normal(size=64)
    bank = np.stack(
        [a + 0.05 * rng.normal(size=64) for _ in range(10)] + [b + 0.05 * rng.normal(size=64) for _ in range(10)]
    )
    bank_labels = ["crack"] * 10 + ["free"] * 10
    queries = np.stack([a, b, a])
    scores = embedding_scores.outlier_scores(queries, ["crack", "free", "free"], bank, bank_labels, k=3)
    assert scores[0] < 0.05 and scores[1] < 0.05
    assert scores[2] > 0.5  # labelled free but looks like a crack: suspicious
    again = embedding_scores.outlier_scores(queries, ["crack", "free", "free"], bank, bank_labels, k=3)
    assert np.array_equal(scores, again)
    # a class the bank lacks is scored against the whole bank
    assert embedding_scores.outlier_scores(queries[:1], ["rust"], bank, bank_labels, k=3)[0] < 0.05
    # no bank: nearest other inspections
    far = np.concatenate([queries, [rng.normal(size=64) * 10]])
    no_bank = embedding_scores.outlier_scores(far, [None] * 4, None, None, k=1)
    assert no_bank.argmax() in (1, 3)


def test_near_duplicates_point_at_the_earlier_inspection():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 16)).astype(np.float32)
    x[40] = x[7] * 1.01 + 0.001  # near-duplicate of 7
    x[45] = x[7]  # exact duplicate of 7
    ids = np.arange(100, 150)
    pairs = embedding_scores.near_duplicates(ids, x, threshold=0.99, block=16)
    assert list(pairs.columns) == ["inspection_id", "duplicate_of", "similarity"]
    assert set(map(tuple, pairs[["inspection_id", "duplicate_of"]].to_numpy())) == {(140, 107), (145, 107)}
    assert pairs["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-5)


def test_binning_counts_every_point():
    xy = np.random.default_rng(2).normal(size=(1000, 2))
    bins = embedding_scores.bin_points(xy, bins=20)
    assert bins["count"].sum() == 1000 and len(bins) <= 400


def _records(store: Store, vectors: np.ndarray, defects: list[str]) -> list[int]:
    batch = store.create_batch(station="L1", operator="Ana", note=None, source="app", model_name="m", model_version="1")
    ids = store.reserve_inspection_ids(len(vectors))
    records = [
        synthetic_record(
            i, created_at=datetime(2026, 3, 1, 12), defect=defect, model_name="m", model_version="1", embedding=vec
        )
        for i, vec, defect in zip(ids, vectors, defects, strict=True)
    ]
    store.write_chunk(batch, records)
    store.finish_batch(batch)
    return ids


def test_map_sample_is_deterministic_and_bounded(tmp_path, backend):
    store = Store(tmp_path / "home")
    x, labels = clusters(n=90, d=8)
    ids = _records(store, x, [["crack", "free", "break"][k] for k in labels])
    rows, vectors, total = store.map_points(InspectionFilter(), max_points=40, seed=5)
    assert total == 90 and len(rows) == 40 and vectors.shape == (40, 8)
    by_id = dict(zip(ids, x, strict=True))
    assert all(np.allclose(by_id[int(i)], v) for i, v in zip(rows["inspection_id"], vectors, strict=True))
    again, _, _ = store.map_points(InspectionFilter(), max_points=40, seed=5)
    assert again["inspection_id"].tolist() == rows["inspection_id"].tolist()
    other, _, _ = store.map_points(InspectionFilter(), max_points=40, seed=6)
    assert other["inspection_id"].tolist() != rows["inspection_id"].tolist()  # another seed, another sample
    only_crack, _, n_crack = store.map_points(InspectionFilter(defects=["crack"]), max_points=1000)
    assert n_crack == 30 and set(only_crack["defect"]) == {"crack"}
    assert rows["thumb_file"].iloc[0].endswith(".jpg")


def test_update_scores_stores_outliers_and_tags_near_duplicates(tmp_path, backend):
    store = Store(tmp_path / "home")
    x, labels = clusters(n=30, d=8)
    x[29] = x[28]  # a near-duplicate pair (same cluster, same label)
    names = [["break", "crack", "free"][k] for k in labels]
    names[5] = "free"  # labelled free but embedded with the "break" cluster
    ids = _records(store, x, names)
    bank_rows = [k for k in range(30) if k not in (5, 29)]
    bank = (x[bank_rows], [["break", "crack", "free"][labels[k]] for k in bank_rows])
    result = embedding_scores.update_scores(store, bank, threshold=0.999, chunk=7)
    assert result.scored == 30 and result.near_duplicate_pairs == 1 and result.tagged == 2
    rows, _ = store.search(InspectionFilter(), sort="outlier_score", descending=True, page_size=0)
    assert int(rows["inspection_id"].iloc[0]) == ids[5]
    tagged, _ = store.search(InspectionFilter(tags_all=[embedding_scores.NEAR_DUPLICATE_TAG]), page_size=0)
    assert set(tagged["inspection_id"]) == {ids[28], ids[29]}


def test_umap_separates_clusters_and_is_deterministic():
    rng = np.random.default_rng(0)
    # Two groups pointing in different directions (the map compares embeddings by cosine).
    u, v = np.zeros(16), np.zeros(16)
    u[:8], v[8:] = 3.0, 3.0
    x = np.concatenate([u + rng.normal(0, 1, (30, 16)), v + rng.normal(0, 1, (30, 16))]).astype(np.float32)
    a = projection.project(x, "UMAP", seed=3)
    assert a.shape == (60, 2) and a.dtype == np.float32
    assert np.array_equal(a, projection.project(x, "UMAP", seed=3))
    first, second = a[:30].mean(axis=0), a[30:].mean(axis=0)
    spread = max(a[:30].std(axis=0).max(), a[30:].std(axis=0).max())
    assert np.linalg.norm(first - second) > 3 * spread


def test_the_neighbour_graph_given_to_umap_is_the_exact_cosine_one():
    x = np.random.default_rng(1).normal(size=(300, 24)).astype(np.float32)
    indices, distances = projection.cosine_neighbours(x, 7, chunk=64)  # several chunks
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    full = 1.0 - unit @ unit.T
    np.fill_diagonal(full, -1.0)
    expected = np.argsort(full, axis=1, kind="stable")[:, :7]
    assert indices.dtype == np.int32 and distances.dtype == np.float32
    assert (indices[:, 0] == np.arange(300)).all() and (distances[:, 0] == 0).all()  # itself first
    assert (np.sort(indices, axis=1) == np.sort(expected, axis=1)).all()
    assert np.allclose(distances[:, 1:], np.take_along_axis(full, expected, axis=1)[:, 1:], atol=1e-5)
    assert (np.diff(distances, axis=1) >= 0).all()


def test_umap_warms_up_once_in_the_background(monkeypatch):
    monkeypatch.setattr(projection, "_warm_up_started", False)
    before = set(threading.enumerate())
    projection.warm_up_umap()
    projection.warm_up_umap()
    started = [t for t in threading.enumerate() if t.name == "umap-warm-up" and t not in before]
    assert len(started) == 1 and started[0].daemon
    started[0].join(timeout=300)
    assert not started[0].is_alive()
