"""2-D maps of the stored image embeddings: PCA, t-SNE and UMAP. Deterministic for a fixed seed.

- **PCA** (default): exact, fitted on at most ``PCA_FIT_ROWS`` rows.
- **t-SNE**: exact, in torch, for up to ``TSNE_MAX_POINTS`` points (torch is imported only when chosen).
- **UMAP**: ``umap-learn``, cosine metric, seeded, on an exact neighbour graph computed here with numpy.
  Its library compiles numba code on first use (15-25 s once per process, most of it code numba cannot cache
  on disk); :func:`warm_up_umap` does that in a background thread when the Explore page first opens, so the
  map is ready when UMAP is chosen. Then ~5 s for 2,000 images.
"""

from __future__ import annotations

import threading

import numpy as np

PCA_FIT_ROWS = 5_000
TSNE_MAX_POINTS = 2_000
DEFAULT_MAP_POINTS = 2_000
PROJECTIONS = ("PCA", "t-SNE", "UMAP")


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


def _tsne_affinities(dist2, perplexity: float):
    """Row-wise Gaussian affinities with the given perplexity (binary search on the precision)."""
    import torch

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
    import torch

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


def cosine_neighbours(x: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The exact ``k`` nearest neighbours of every row by cosine distance (itself first): indices int32 [n, k]
    and distances float32 [n, k]. A few matrix products for the few thousand points a map shows; it spares
    UMAP its approximate search and that search's numba compile (~6 s)."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    indices = np.empty((len(x), k), dtype=np.int32)
    distances = np.empty((len(x), k), dtype=np.float32)
    for start in range(0, len(x), chunk):
        d = 1.0 - unit[start : start + chunk] @ unit.T
        rows = np.arange(len(d))
        d[rows, rows + start] = -1.0  # each point is its own nearest neighbour, as UMAP expects
        nearest = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(d, nearest, axis=1).argsort(axis=1, kind="stable")
        nearest = np.take_along_axis(nearest, order, axis=1)
        indices[start : start + chunk] = nearest
        distances[start : start + chunk] = np.take_along_axis(d, nearest, axis=1).clip(min=0.0)
    return indices, distances


_UMAP_READY = threading.Lock()  # held while UMAP's code compiles: a map asked for meanwhile waits for it
_warm_up_started = False


def warm_up_umap() -> None:
    """Compile UMAP's numba code in a daemon thread, once per process (a no-op after the first call)."""
    global _warm_up_started
    if _warm_up_started:
        return
    _warm_up_started = True
    sample = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    threading.Thread(target=umap_2d, args=(sample,), name="umap-warm-up", daemon=True).start()


def umap_2d(vectors: np.ndarray, seed: int = 0, neighbours: int = 15) -> np.ndarray:
    """UMAP (McInnes et al. 2018) with cosine distance -> float32 [n, 2]; deterministic for a seed.

    A seed makes umap-learn run single-threaded; that is the price of a map that does not move between
    reruns. The import is here, not at the top: numba's load and compile are paid only when UMAP is used.
    """
    import warnings

    x = np.asarray(vectors, dtype=np.float32)
    if len(x) < 4:  # too few points for a neighbour graph: the linear map says as much
        return pca_2d(x, seed)
    k = min(neighbours, len(x) - 1)
    knn = cosine_neighbours(x, k)
    with _UMAP_READY, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", numba deprecations
        import umap

        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=k,
            metric="cosine",
            init="pca",
            random_state=seed,
            precomputed_knn=(*knn, None),
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
