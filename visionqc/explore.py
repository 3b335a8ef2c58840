"""The embedding map and what it finds: 2-D projections, outlier scores and near-duplicates.

Pure numpy/torch apart from :func:`load_map_points` and :func:`update_scores`, which read and write
through :class:`~visionqc.store.Store` (and its one query builder). Everything seeded is deterministic for a
fixed seed.

- **Projection**: PCA (default; exact, fitted on at most ``PCA_FIT_ROWS`` rows), t-SNE (exact, in torch,
  for up to ``TSNE_MAX_POINTS`` points) or UMAP (``umap-learn``, cosine metric, seeded). UMAP is opt-in: its
  library loads numba and compiles on first use, about 15-30 s once per process, then ~5 s for 2,000 images.
- **Outlier score**: the mean cosine distance from an inspection's embedding to its ``k`` nearest training
  embeddings *of the class it is labelled as* (the checkpoint's ``ood.bank``). A high score means "unlike
  the training images of this class": an odd image, or a wrong label. Without a bank, the ``k`` nearest
  other stored inspections stand in.
- **Near-duplicates**: pairs of inspections whose embeddings have cosine similarity >= a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

PCA_FIT_ROWS = 5_000
TSNE_MAX_POINTS = 2_000
DEFAULT_MAP_POINTS = 2_000
NEAR_DUPLICATE_THRESHOLD = 0.97
NEAR_DUPLICATE_TAG = "near-duplicate"
PROJECTIONS = ("PCA", "t-SNE", "UMAP")


# --- projections --------------------------------------------------------------------------------


def pca_2d(vectors: np.ndarray, seed: int = 0, fit_rows: int = PCA_FIT_ROWS) -> np.ndarray:
    """Project onto the first two principal components -> float32 [n, 2].

    Fitted on a seeded random sample of at most ``fit_rows`` rows (the components of 5,000 embeddings
    match those of all of them closely), then applied to every row. Each component's sign is fixed
    (largest loading positive) so the picture does not flip between runs.
    """
    x = np.asarray(vectors, dtype=np.float32)
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, 2), dtype=np.float32)
    if n < 3:
        return np.zeros((n, 2), dtype=np.float32)
    rng = np.random.default_rng(seed)
    fit = x if n <= fit_rows else x[np.sort(rng.choice(n, fit_rows, replace=False))]
    mean = fit.mean(axis=0, dtype=np.float64)
    centred = fit.astype(np.float64) - mean
    # Top components by seeded subspace iteration: a few (n x d) @ (d x 8) products instead of a d x d
    # covariance and its full eigendecomposition (8 s -> 0.45 s for 2,000 x 1,280 on a busy 2-core machine).
    basis = np.linalg.qr(rng.standard_normal((x.shape[1], 8)))[0]
    for _ in range(8):
        basis = np.linalg.qr(centred.T @ (centred @ basis))[0]
    small = basis.T @ (centred.T @ (centred @ basis))
    _, vectors = np.linalg.eigh(small)
    comps = basis @ vectors[:, ::-1][:, :2]
    signs = np.sign(comps[np.abs(comps).argmax(axis=0), [0, 1]])
    comps = comps * np.where(signs == 0, 1, signs)
    return ((x - mean.astype(np.float32)) @ comps.astype(np.float32)).astype(np.float32)


def _tsne_affinities(dist2: torch.Tensor, perplexity: float) -> torch.Tensor:
    """Row-wise Gaussian affinities with the given perplexity (binary search on the precision)."""
    n = dist2.shape[0]
    target = float(np.log(perplexity))
    beta = torch.ones(n, dtype=dist2.dtype)
    lo = torch.full((n,), 0.0, dtype=dist2.dtype)
    hi = torch.full((n,), float("inf"), dtype=dist2.dtype)
    eye = torch.eye(n, dtype=torch.bool)
    d = dist2 / dist2[~eye].mean().clamp_min(1e-12)
    for _ in range(50):
        logits = (-d * beta[:, None]).masked_fill(eye, float("-inf"))
        p = torch.softmax(logits, dim=1)
        entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=1)
        too_flat = entropy > target  # entropy too high -> increase beta
        lo = torch.where(too_flat, beta, lo)
        hi = torch.where(too_flat, hi, beta)
        beta = torch.where(torch.isinf(hi), beta * 2, (lo + hi) / 2)
    return p


def tsne_2d(
    vectors: np.ndarray, seed: int = 0, perplexity: float = 30.0, iterations: int = 400, pca_dims: int = 50
) -> np.ndarray:
    """Exact t-SNE (van der Maaten & Hinton 2008) in torch -> float32 [n, 2]; for up to a few thousand points.

    The input is first reduced to ``pca_dims`` dimensions; the layout starts from the scaled PCA projection
    (deterministic, and it keeps the global arrangement), with early exaggeration for the first quarter.
    """
    x = np.asarray(vectors, dtype=np.float32)
    n = x.shape[0]
    if n > TSNE_MAX_POINTS:
        raise ValueError(f"t-SNE is limited to {TSNE_MAX_POINTS} points here; sample first ({n} given)")
    if n < 5:
        return pca_2d(x, seed)
    generator = torch.Generator().manual_seed(seed)
    centred = torch.from_numpy(x - x.mean(axis=0)).double()
    k = min(pca_dims, n - 1, x.shape[1])
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    reduced = u[:, :k] * s[:k]
    dist2 = torch.cdist(reduced, reduced).pow(2)
    p = _tsne_affinities(dist2, min(perplexity, (n - 1) / 3))
    p = (p + p.T) / (2 * n)
    p = p.clamp_min(1e-12)
    y = reduced[:, :2] / reduced[:, 0].std().clamp_min(1e-12) * 1e-2
    y = y + 1e-4 * torch.randn(y.shape, generator=generator, dtype=y.dtype)
    velocity = torch.zeros_like(y)
    gains = torch.ones_like(y)
    lr = max(n / 12.0, 50.0)
    eye = torch.eye(n, dtype=torch.bool)
    for it in range(iterations):
        exaggeration = 12.0 if it < iterations // 4 else 1.0
        momentum = 0.5 if it < iterations // 4 else 0.8
        diff = y[:, None, :] - y[None, :, :]
        num = 1.0 / (1.0 + (diff**2).sum(-1))
        num = num.masked_fill(eye, 0.0)
        q = (num / num.sum()).clamp_min(1e-12)
        grad = 4.0 * (((exaggeration * p - q) * num)[:, :, None] * diff).sum(dim=1)
        same = torch.sign(grad) == torch.sign(velocity)
        gains = torch.where(same, gains * 0.8, gains + 0.2).clamp_min(0.01)
        velocity = momentum * velocity - lr * gains * grad
        y = y + velocity
        y = y - y.mean(dim=0)
    return y.float().numpy()


def umap_2d(vectors: np.ndarray, seed: int = 0, neighbours: int = 15) -> np.ndarray:
    """UMAP (McInnes et al. 2018) with cosine distance -> float32 [n, 2]; deterministic for a seed.

    A seed makes umap-learn run single-threaded; that is the price of a map that does not move between
    reruns. The import is here, not at the top: numba's load and compile are paid only when UMAP is chosen.
    """
    import warnings

    x = np.asarray(vectors, dtype=np.float32)
    if len(x) < 4:  # too few points for a neighbour graph: the linear map says as much
        return pca_2d(x, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", numba deprecations
        import umap

        reducer = umap.UMAP(
            n_components=2, n_neighbors=min(neighbours, len(x) - 1), metric="cosine", init="pca", random_state=seed
        )
        return reducer.fit_transform(x).astype(np.float32)


def project(vectors: np.ndarray, method: str = "PCA", seed: int = 0) -> np.ndarray:
    if method == "PCA":
        return pca_2d(vectors, seed)
    if method == "t-SNE":
        return tsne_2d(vectors, seed)
    if method == "UMAP":
        return umap_2d(vectors, seed)
    raise ValueError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")


# --- outliers and near-duplicates ----------------------------------------------------------------


def _normalise(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.from_numpy(np.array(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
    return torch.nn.functional.normalize(t, dim=1)


def knn_distance(queries: np.ndarray, reference: np.ndarray, k: int = 5, exclude_self: bool = False) -> np.ndarray:
    """Mean cosine distance from each query to its ``k`` nearest reference rows -> float64 [n]."""
    q, r = _normalise(queries), _normalise(reference)
    if r.shape[0] == 0 or q.shape[0] == 0:
        return np.full(q.shape[0], np.nan)
    k_eff = min(k + int(exclude_self), r.shape[0])
    out = np.empty(q.shape[0])
    for start in range(0, q.shape[0], 4096):
        sims = q[start : start + 4096] @ r.T
        top = sims.topk(k_eff, dim=1).values
        if exclude_self:
            top = top[:, 1:] if k_eff > 1 else top
        out[start : start + 4096] = (1.0 - top.mean(dim=1)).double().numpy()
    return np.clip(out, 0.0, 2.0)


def outlier_scores(
    vectors: np.ndarray,
    labels: list[str | None],
    bank: np.ndarray | torch.Tensor | None,
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
    bank_np = bank.float().numpy() if isinstance(bank, torch.Tensor) else np.asarray(bank, dtype=np.float32)
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
        idx = torch.arange(start, stop)
        cols = torch.arange(stop)
        sims = sims.masked_fill(cols[None, :] >= idx[:, None], -2.0)
        best, where = sims.max(dim=1)
        for local in torch.nonzero(best >= threshold).flatten().tolist():
            rows.append((int(ids[start + local]), int(ids[int(where[local])]), round(float(best[local]), 5)))
    frame = pd.DataFrame(rows, columns=["inspection_id", "duplicate_of", "similarity"])
    return frame.sort_values(["similarity", "inspection_id"], ascending=[False, True], ignore_index=True)


# --- map data -------------------------------------------------------------------------------------

MAP_COLUMNS = (
    "inspection_id",
    "file_name",
    "created_at",
    "batch_id",
    "defect",
    "severity",
    "action",
    "confidence",
    "needs_review",
    "reviewed",
    "outlier_score",
    "ood_score",
)


def load_map_points(store, history_filter, max_points: int = DEFAULT_MAP_POINTS, seed: int = 0):
    """A deterministic sample of at most ``max_points`` matching inspections with their embeddings.

    Returns ``(rows DataFrame with MAP_COLUMNS + thumb_file, vectors float32 [n, d], total matches)``.
    The sample is "the rows with the smallest hash(id, seed)": stable as new rows arrive, and it never
    loads more than ``max_points`` embeddings however large the store is.
    """
    from visionqc.store import build_where

    where, params = build_where(history_filter)
    columns = ", ".join(f"v.{c}" for c in MAP_COLUMNS)
    sql = f"""
        WITH chosen AS (
            SELECT inspection_id, sha256 FROM inspection_view_all WHERE {where}
            ORDER BY hash(inspection_id, ?::BIGINT) LIMIT ?
        )
        SELECT {columns}, im.thumb_path AS thumb_file, e.vector
        FROM chosen c
        JOIN inspection_view_all v ON v.inspection_id = c.inspection_id
        JOIN embeddings e ON e.inspection_id = c.inspection_id
        LEFT JOIN images im ON im.sha256 = c.sha256
        ORDER BY v.inspection_id"""
    with store.connect() as con:
        total = int(con.execute(f"SELECT count(*) FROM inspection_view_all WHERE {where}", params).fetchall()[0][0])
        table = con.sql(sql, params=[*params, int(seed), int(max_points)]).to_arrow_table()
    vectors_col = table.column("vector")
    rows = table.drop(["vector"]).to_pandas()
    if table.num_rows == 0:
        return rows, np.zeros((0, 0), dtype=np.float32), total
    flat = vectors_col.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = flat.astype(np.float32, copy=False).reshape(table.num_rows, -1)
    rows["thumb_file"] = [None if not isinstance(v, str) else str(store.absolute(v)) for v in rows["thumb_file"]]
    return rows, vectors, total


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
    store,
    predictor=None,
    history_filter=None,
    threshold: float = NEAR_DUPLICATE_THRESHOLD,
    k: int = 5,
    chunk: int = 10_000,
) -> ScoreUpdate:
    """Compute the outlier score of every matching inspection (stored in ``outlier_score``, sortable in
    History) and find near-duplicates: stored as ``near_duplicate_of`` / ``near_duplicate_similarity``
    (sortable in History) and tagged ``near-duplicate`` (searchable in History by tag).

    Embeddings are read in chunks of ``chunk`` rows; near-duplicate search keeps only unit vectors.
    """
    from visionqc.store import HistoryFilter, build_where

    f = history_filter or HistoryFilter()
    where, params = build_where(f)
    with store.connect() as con:
        meta = con.execute(
            f"SELECT inspection_id, defect FROM inspection_view_all WHERE {where} ORDER BY inspection_id", params
        ).df()
    bank = bank_labels = None
    if predictor is not None and predictor.checkpoint.ood_bank is not None:
        classes = predictor.card.classes("defect")
        bank = predictor.checkpoint.ood_bank.float().numpy()
        bank_labels = [classes[int(i)] for i in predictor.checkpoint.ood_bank_labels]
    all_ids: list[np.ndarray] = []
    all_vectors: list[np.ndarray] = []
    scores_out: list[np.ndarray] = []
    label_of = dict(zip(meta["inspection_id"].tolist(), meta["defect"].tolist(), strict=True))
    ids_all = meta["inspection_id"].to_numpy()
    for start in range(0, len(ids_all), chunk):
        ids, vectors = store.embeddings(HistoryFilter(ids=ids_all[start : start + chunk].tolist(), deleted="all"))
        if len(ids) == 0:
            continue
        all_ids.append(ids)
        all_vectors.append(_normalise(vectors).numpy())
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


# --- the chart ------------------------------------------------------------------------------------

COLOR_CHOICES = {
    "Defect": "defect",
    "Severity": "severity",
    "Review state": "review_state",
    "Batch": "batch_id",
    "Outlier score": "outlier_score",
}
REGION = "region"  # the name of the map's box selection (read back from the Streamlit event)


def review_state(needs_review, reviewed) -> str:
    if bool(reviewed):
        return "reviewed"
    return "needs review" if bool(needs_review) else "not reviewed"


def map_frame(rows: pd.DataFrame, xy: np.ndarray, thumbnails: list[str | None] | None = None) -> pd.DataFrame:
    """The rows the map draws: coordinates, labels for colour and tooltip, and an ``image`` data URL."""
    frame = pd.DataFrame(
        {
            "inspection_id": rows["inspection_id"].astype("int64").to_numpy(),
            "x": xy[:, 0] if len(xy) else [],
            "y": xy[:, 1] if len(xy) else [],
            "file_name": rows["file_name"].to_numpy(),
            "defect": rows["defect"].fillna("—").to_numpy(),
            "severity": rows["severity"].fillna("—").to_numpy(),
            "batch_id": rows["batch_id"].fillna("—").to_numpy(),
            "confidence": (rows["confidence"].astype(float) * 100).round(1).to_numpy(),
            "outlier_score": rows["outlier_score"].astype(float).round(4).to_numpy(),
            "review_state": [review_state(n, r) for n, r in zip(rows["needs_review"], rows["reviewed"], strict=True)],
        }
    )
    if thumbnails is not None:
        frame["image"] = thumbnails
    return frame


def map_chart(frame: pd.DataFrame, color_by: str = "defect", no_defect_label: str | None = None):
    """An Altair scatter plot of the map with a box selection named ``REGION`` and thumbnail tooltips.

    Severity and review state use the app's palette; defect types the categorical palette.
    """
    import altair as alt

    from visionqc import palette

    if color_by == "outlier_score":
        color = alt.Color("outlier_score:Q", title="Outlier score", scale=alt.Scale(scheme="viridis"))
    elif color_by == "severity":
        domain, colors = palette.severity_scale(frame["severity"].unique())
        color = alt.Color("severity:N", title="Severity", scale=alt.Scale(domain=domain, range=colors))
    elif color_by == "review_state":
        color = alt.Color(
            "review_state:N",
            title="Review state",
            scale=alt.Scale(
                domain=["needs review", "not reviewed", "reviewed"],
                range=[palette.action_color("Review"), palette.NEUTRAL_COLOR, palette.action_color("Pass")],
            ),
        )
    elif color_by == "defect":
        domain, colors = palette.category_scale(frame["defect"].unique(), no_defect_label=no_defect_label)
        color = alt.Color("defect:N", title="Defect", scale=alt.Scale(domain=domain, range=colors))
    else:
        color = alt.Color(f"{color_by}:N", title=color_by.replace("_", " ").capitalize())
    tooltip = [
        alt.Tooltip("file_name:N", title="File"),
        alt.Tooltip("defect:N", title="Defect"),
        alt.Tooltip("severity:N", title="Severity"),
        alt.Tooltip("confidence:Q", title="Confidence %"),
        alt.Tooltip("review_state:N", title="Review"),
        alt.Tooltip("outlier_score:Q", title="Outlier score"),
    ]
    if "image" in frame:
        tooltip.insert(0, alt.Tooltip("image:N", title="image"))  # vega-tooltip shows the "image" key as a picture
    region = alt.selection_interval(name=REGION, encodings=["x", "y"])
    return (
        alt.Chart(frame)
        .mark_circle(size=36)
        .encode(
            opacity=alt.condition(region, alt.value(0.8), alt.value(0.2)),
            x=alt.X("x:Q", title=None, axis=alt.Axis(labels=False, ticks=False)),
            y=alt.Y("y:Q", title=None, axis=alt.Axis(labels=False, ticks=False)),
            color=color,
            tooltip=tooltip,
        )
        .add_params(region)
        .properties(height=520)
    )


def selected_ids(frame: pd.DataFrame, event) -> list[int]:
    """Inspection ids inside the box the user dragged (a Streamlit ``on_select`` event), in map order."""
    try:
        box = event.selection.get(REGION) if hasattr(event, "selection") else event["selection"].get(REGION)
    except (AttributeError, KeyError, TypeError):
        return []
    if not box or "x" not in box or "y" not in box:
        return []
    (x0, x1), (y0, y1) = sorted(box["x"]), sorted(box["y"])
    inside = frame["x"].between(x0, x1) & frame["y"].between(y0, y1)
    return frame.loc[inside, "inspection_id"].astype(int).tolist()


# --- the "most uncertain first" review queue --------------------------------------------------------


def review_queue(
    store, history_filter, confidence_below: float = 0.6, skip: Sequence[int] = (), limit: int = 1
) -> tuple[list[int], int]:
    """Inspections waiting for a person, most uncertain first -> (the next ``limit`` ids, how many wait).

    Waiting = not yet reviewed, and flagged needs-review or with defect confidence under
    ``confidence_below``. Ordered by confidence, lowest first; ids in ``skip`` (skipped this session) are
    left out of the ids but still counted.
    """
    from visionqc.store import build_where

    where, params = build_where(history_filter)
    waiting = f"({where}) AND NOT reviewed AND (needs_review OR confidence < ?)"
    params = [*params, float(confidence_below)]
    with store.connect() as con:
        total = int(con.execute(f"SELECT count(*) FROM inspection_view_all WHERE {waiting}", params).fetchall()[0][0])
        ids = [
            int(r[0])
            for r in con.execute(
                f"SELECT inspection_id FROM inspection_view_all WHERE {waiting} "
                "AND inspection_id NOT IN (SELECT unnest(?::BIGINT[])) "
                "ORDER BY confidence ASC NULLS FIRST, inspection_id LIMIT ?",
                [*params, [int(i) for i in skip], int(limit)],
            ).fetchall()
        ]
    return ids, total
