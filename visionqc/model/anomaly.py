"""The good-only anomaly model: where a photo looks unlike every good part seen in training (PatchCore-style).

A model of kind ``"anomaly"`` learns from defect-free photos only. Every photo passes through an ImageNet
EfficientNet-Lite backbone (Lite2 for new models; the first models used Lite0, and their cards still load); the
outputs of a few middle blocks ("taps"), each averaged over its neighbourhood and scaled so that every tap weighs
the same, are concatenated into one vector per position of a grid ("patch") and multiplied by a fixed random
matrix to fewer axes (stored with the model). Training keeps a small, well-spread set of the good photos' patches
(the memory bank, a greedy k-center coreset: Roth et al., "Towards Total Recall in Industrial Anomaly Detection",
2022). A new photo's patch distances to their nearest bank patch, each divided by how spread out the bank is
around that patch (its mean distance to its few nearest bank neighbours; not for models trained before), form
the anomaly map (blurred a little: a defect covers more than one cell); the image's anomaly score is the mean of
the map's hottest cells (the maximum for the first models), and the heatmap and its box come from the same map.
The card's ``anomaly.settings`` say which; the measurements behind each choice are in docs/MODEL_RESULTS.md.

The directory format is the classifier's: ``model.json`` (a valid model card, ``kind: "anomaly"``, whose defect
task has the classes ``[no-defect label, "anomaly"]`` so History, Dashboard, review and reports need nothing new)
and ``model.safetensors`` (the backbone's weights, the bank, the per-tap scales and the projection; raw tensors,
never unpickled).
Every tensor is checked against the card before use: a hostile or damaged file is a :class:`ModelLoadError`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError, safe_open

from visionqc.actions import ActionPolicy
from visionqc.model.anomaly_graph import AnomalyGraph
from visionqc.model.anomaly_settings import MAX_BANK_ROWS, AnomalySettings, Decision
from visionqc.model.card import CARD_FILE, EMBEDDING_DIM, PRIMARY_TASK, ModelCard, ModelLoadError, read_card
from visionqc.model.network import DefectNet, fuse_batchnorm_for_inference
from visionqc.model.predict import Prediction, Predictor, TaskResult
from visionqc.model.runtime import DEFAULT_THREADS
from visionqc.model.weights import MAX_WEIGHTS_BYTES, WEIGHTS_FILE

ANOMALY_KIND = "anomaly"
ANOMALY_CLASS = "anomaly"
BANK_TENSOR = "anomaly.bank"
SCALES_TENSOR = "anomaly.tap_scales"
PROJECTION_TENSOR = "anomaly.projection"
IMAGE_BANK_TENSOR = "anomaly.image_bank"  # the good training photos' whole-image embeddings [N, 1280]
MAX_IMAGE_BANK_ROWS = 20_000
BACKBONE_PREFIX = "backbone."
# The heatmap shows this value where the map reaches the decision's map_threshold, so a photo past it turns orange
# to red and a good photo stays cool (the overlay's opacity follows the heat).
HEAT_AT_THRESHOLD = 0.7


def is_anomaly_card(card: ModelCard) -> bool:
    return card.raw.get("kind") == ANOMALY_KIND


# --- patch features ---------------------------------------------------------------------------------------


def imagenet_network(backbone: str) -> DefectNet:
    """The ImageNet backbone (unfused), as training starts from it."""
    from visionqc.model.network import load_imagenet_backbone

    net = DefectNet({}, backbone=backbone)
    load_imagenet_backbone(net)
    return net


def tap_channels(net: DefectNet, taps: tuple[int, ...]) -> list[int]:
    return [net.backbone._blocks[t]._project_conv.out_channels for t in taps]


def random_projection(dim: int, axes: int, seed: int) -> torch.Tensor:
    """The fixed Gaussian matrix [dim, axes] the patch vectors are multiplied by (distances kept on average)."""
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randn(dim, axes, generator=g) / axes**0.5


def inference_network(net: DefectNet) -> DefectNet:
    return fuse_batchnorm_for_inference(net).eval().to(memory_format=torch.channels_last)


def network_taps(net: DefectNet, batch: torch.Tensor, taps: tuple[int, ...]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One pass: the tapped blocks' outputs [B, C, h, w] and the pooled 1280-d embedding (for Explore)."""
    got = []
    x = net.stem(batch)
    for idx in range(len(net.backbone_blocks())):
        x = net.block(idx, x)
        if idx in taps:
            got.append(x)
    return got, net.head_conv(x).mean(dim=(2, 3))


@torch.inference_mode()
def run_network(net: DefectNet, batch: torch.Tensor, taps: tuple[int, ...]) -> tuple[list[torch.Tensor], torch.Tensor]:
    return network_taps(net, batch.contiguous(memory_format=torch.channels_last), taps)


def patch_vectors(
    tapped: list[torch.Tensor], pool: int, scales: torch.Tensor | None, projection: torch.Tensor | None = None
) -> torch.Tensor:
    """[B, h, w, D] patch vectors on the finest tap's grid: each tap pooled, upsampled, scaled, concatenated (and
    multiplied by the model's fixed projection, when it has one)."""
    h, w = tapped[0].shape[-2:]
    parts = []
    for i, f in enumerate(tapped):
        f = f.float()
        if pool > 1:
            f = F.avg_pool2d(f, pool, stride=1, padding=pool // 2, count_include_pad=False)
        if f.shape[-2:] != (h, w):
            f = F.interpolate(f, size=(h, w), mode="bilinear", align_corners=False)
        parts.append(f if scales is None else f * scales[i])
    out = torch.cat(parts, 1).permute(0, 2, 3, 1)
    return (out @ projection if projection is not None else out).contiguous()


def nearest_distance(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_sq: torch.Tensor,
    density: torch.Tensor | None = None,
    chunk: int = 8192,
) -> torch.Tensor:
    """Euclidean distance of each query row [N, D] to its nearest bank row (chunked matrix products), divided by
    that bank row's ``density`` when given (:func:`bank_density`)."""
    out = []
    for start in range(0, len(query), chunk):
        q = query[start : start + chunk]
        nearest, idx = torch.addmm(bank_sq, q, bank.T, alpha=-2.0).min(dim=1)  # |q|^2 is the same for every row
        dist = (nearest + q.pow(2).sum(1)).clamp_min_(0.0).sqrt_()
        out.append(dist if density is None else dist / density[idx])
    return torch.cat(out)


def bank_density(bank: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Each bank row's mean distance to its ``k`` nearest other rows: how spread out the good patches are there
    (a coreset keeps one patch per region, so a wide gap means a varied texture). Floored at a thousandth of the
    median, so a duplicated row never divides by zero."""
    k = min(k, len(bank) - 1)
    if k < 1:
        return torch.ones(len(bank))
    sq = bank.pow(2).sum(1)
    out = []
    for start in range(0, len(bank), chunk):
        rows = bank[start : start + chunk]
        d2 = torch.addmm(sq, rows, bank.T, alpha=-2.0) + rows.pow(2).sum(1, keepdim=True)
        d2[torch.arange(len(rows)), torch.arange(start, start + len(rows))] = float("inf")  # not its own neighbour
        out.append(d2.topk(k, dim=1, largest=False).values.clamp_min_(0.0).sqrt_().mean(1))
    density = torch.cat(out)
    return density.clamp_min(1e-3 * float(density.median())).contiguous()


def searched_cells(vectors: torch.Tensor, stride: int) -> torch.Tensor:
    """The [B, h, w, D] patch vectors the nearest-neighbour search runs on: every ``stride``-th cell."""
    return vectors if stride <= 1 else vectors[:, ::stride, ::stride].contiguous()


def full_grid(dist: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A [B, h', w'] distance map of the searched cells interpolated back to the [B, h, w] grid (bilinear)."""
    if tuple(dist.shape[-2:]) == tuple(size):
        return dist
    return F.interpolate(dist[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def image_scores(maps: torch.Tensor, top_share: float) -> torch.Tensor:
    """Each map's image score: the mean of its hottest ``top_share`` of cells (at least one), or its maximum when
    ``top_share`` is 0. A mean over a few cells is steadier than one cell, and a defect covers more than one."""
    flat = maps.flatten(1)
    if top_share <= 0:
        return flat.max(dim=1).values
    k = max(1, math.ceil(top_share * flat.shape[1]))
    return flat.topk(k, dim=1).values.mean(dim=1)


def blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, h, w] maps (edges repeated)."""
    if sigma <= 0:
        return maps
    radius = max(1, round(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    m = maps[:, None]
    m = F.conv2d(F.pad(m, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    m = F.conv2d(F.pad(m, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return m[:, 0]


class PatchScorer:
    """The network, the taps and the bank: preprocessed images -> blurred distance maps and embeddings."""

    def __init__(
        self,
        net: DefectNet,
        settings: AnomalySettings,
        scales: torch.Tensor | None,
        bank: torch.Tensor | None,
        projection: torch.Tensor | None = None,
        image_bank: torch.Tensor | None = None,
        image_gain: float = 0.0,
    ):
        self.net, self.settings, self.scales, self.projection = net, settings, scales, projection
        self.image_bank, self.image_gain = image_bank, image_gain
        self.set_bank(bank)

    def set_bank(self, bank: torch.Tensor | None) -> None:
        """The memory bank, its rows' squared norms and (when the settings normalise by it) its density."""
        self.bank = bank
        self.bank_sq = None if bank is None else bank.pow(2).sum(1)
        k = self.settings.density_k
        self.density = None if bank is None or not k else bank_density(bank, k)

    @torch.inference_mode()
    def patches(self, arrays: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised HWC float arrays [B, S, S, 3] -> (patch vectors [B, h, w, D], embeddings [B, 1280])."""
        batch = torch.from_numpy(np.ascontiguousarray(arrays)).permute(0, 3, 1, 2)
        tapped, embedding = run_network(self.net, batch, self.settings.taps)
        return patch_vectors(tapped, self.settings.pool, self.scales, self.projection), embedding

    @torch.inference_mode()
    def maps(self, arrays: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(blurred anomaly maps [B, h, w], embeddings [B, 1280])."""
        vectors, embedding = self.patches(arrays)
        searched = searched_cells(vectors, self.settings.search_stride)
        b, h, w, d = searched.shape
        dist = nearest_distance(searched.reshape(-1, d), self.bank, self.bank_sq, self.density).reshape(b, h, w)
        return blur(full_grid(dist, vectors.shape[1:3]), self.settings.sigma), embedding

    def image_distances(self, embeddings: torch.Tensor, leave_out: torch.Tensor | None = None) -> torch.Tensor:
        """Each embedding's distance to the nearest good training photo's; ``leave_out[i]`` is a row of the bank
        that embedding ``i`` must not be matched with (its own photo, for the held-out photos during training; -1:
        none)."""
        d = torch.cdist(embeddings.float(), self.image_bank)
        if leave_out is not None:
            rows = leave_out >= 0  # -1: the photo is not in the bank
            d[torch.arange(len(d))[rows], leave_out[rows]] = float("inf")
        return d.min(dim=1).values

    def scores(
        self, maps: torch.Tensor, embeddings: torch.Tensor | None = None, leave_out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Image scores: the patch score of each map, plus the weighted image distance when the model has one
        (then ``embeddings`` are required)."""
        patch = image_scores(maps, self.settings.top_share)
        if not self.settings.image_weight:
            return patch
        if embeddings is None:
            raise ValueError("this model's score needs the photos' embeddings")
        gain = self.settings.image_weight * self.image_gain
        return patch + gain * self.image_distances(embeddings, leave_out)


# --- loading ----------------------------------------------------------------------------------------------


def _read_tensors(directory: Path) -> dict[str, torch.Tensor]:
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise ModelLoadError(f"{directory} has no {WEIGHTS_FILE} (the memory bank and backbone weights)")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise ModelLoadError(f"{WEIGHTS_FILE} is larger than {MAX_WEIGHTS_BYTES // 2**20} MB; refusing to read it")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{WEIGHTS_FILE} is not a valid safetensors file ({exc})") from None


def load_anomaly(directory: str | Path) -> tuple[ModelCard, AnomalySettings, Decision, PatchScorer]:
    """Read and cross-check an anomaly model directory; every problem is a :class:`ModelLoadError`."""
    directory = Path(directory)
    card = read_card(directory)
    if not is_anomaly_card(card):
        raise ModelLoadError(f"{CARD_FILE}: 'kind' must be {ANOMALY_KIND!r} for an anomaly model")
    section = card.raw.get("anomaly")
    if not isinstance(section, dict):
        raise ModelLoadError(f"{CARD_FILE}: an anomaly model needs an 'anomaly' object (settings, decision)")
    settings = AnomalySettings.from_json(section.get("settings"))
    decision = Decision.from_json(section.get("decision"))
    if card.classes(PRIMARY_TASK) != [card.no_defect_class, ANOMALY_CLASS] or len(card.tasks) != 1:
        raise ModelLoadError(f"{CARD_FILE}: an anomaly model has one task, 'defect', with [no-defect, 'anomaly']")
    if card.input_size != settings.size:
        raise ModelLoadError(f"{CARD_FILE}: 'input.size' {card.input_size} differs from the anomaly settings' size")
    architecture = card.raw.get("architecture") or {}
    if architecture.get("backbone") != settings.backbone:
        raise ModelLoadError(
            f"{CARD_FILE}: 'architecture.backbone' {architecture.get('backbone')!r} differs from the anomaly "
            f"settings' backbone {settings.backbone!r}"
        )
    tensors = _read_tensors(directory)
    net = DefectNet({}, backbone=settings.backbone)
    expected = {BACKBONE_PREFIX + k: tuple(v.shape) for k, v in net.backbone.state_dict().items()}
    expected[SCALES_TENSOR] = (len(settings.taps),)
    dim = sum(tap_channels(net, settings.taps))
    if settings.reduce:
        expected[PROJECTION_TENSOR] = (dim, settings.reduce)
    banks = [BANK_TENSOR] + ([IMAGE_BANK_TENSOR] if settings.image_weight else [])  # rows vary: checked below
    missing = sorted(set(expected) - set(tensors)) + [b for b in banks if b not in tensors]
    unknown = sorted(set(tensors) - set(expected) - set(banks))
    if missing:
        raise ModelLoadError(f"{WEIGHTS_FILE} lacks tensors an anomaly model needs, e.g. {missing[:3]}")
    if unknown:
        raise ModelLoadError(f"{WEIGHTS_FILE} has tensors the card does not describe, e.g. {unknown[:3]}")
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            raise ModelLoadError(f"tensor {key} has shape {list(tensors[key].shape)}, the model needs {list(shape)}")
    image_bank, image_gain = None, 0.0
    if settings.image_weight:
        image_bank, image_gain = tensors[IMAGE_BANK_TENSOR], _image_gain(section)
        _check_rows(image_bank, IMAGE_BANK_TENSOR, MAX_IMAGE_BANK_ROWS, EMBEDDING_DIM, "the embedding")
    bank = tensors[BANK_TENSOR]
    _check_rows(bank, BANK_TENSOR, MAX_BANK_ROWS, settings.reduce or dim, f"the taps {list(settings.taps)}")
    for key, tensor in tensors.items():
        if key.endswith("num_batches_tracked"):
            continue  # BatchNorm's step counter (an integer), unused at inference
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise ModelLoadError(f"tensor {key} must hold finite floating-point numbers")
    net.backbone.load_state_dict(
        {k[len(BACKBONE_PREFIX) :]: tensors[k] for k in expected if k.startswith(BACKBONE_PREFIX)}
    )
    projection = tensors[PROJECTION_TENSOR].float() if settings.reduce else None
    scorer = PatchScorer(
        inference_network(net),
        settings,
        tensors[SCALES_TENSOR].float(),
        bank.float().contiguous(),
        projection,
        None if image_bank is None else image_bank.float().contiguous(),
        image_gain,
    )
    return card, settings, decision, scorer


def _check_rows(tensor: torch.Tensor, key: str, max_rows: int, dim: int, what: str) -> None:
    """A bank: [1..max_rows, dim]."""
    if tensor.ndim != 2 or tensor.shape[1] != dim or not 1 <= tensor.shape[0] <= max_rows:
        raise ModelLoadError(f"tensor {key} has shape {list(tensor.shape)}; {what} need [1-{max_rows}, {dim}]")


def _image_gain(section: dict) -> float:
    """The card's ``anomaly.image_distance.gain``: what puts the image distance on the patch score's scale."""
    entry = section.get("image_distance")
    gain = entry.get("gain") if isinstance(entry, dict) else None
    if not isinstance(gain, int | float) or isinstance(gain, bool) or not math.isfinite(gain) or gain < 0:
        raise ModelLoadError(
            f"{CARD_FILE}: 'anomaly.image_distance.gain' must be a non-negative number when the settings weigh the "
            "image distance"
        )
    return float(gain)


def backbone_tensors(net: DefectNet) -> dict[str, torch.Tensor]:
    """The (unfused) backbone's weights as the model file stores them."""
    return {BACKBONE_PREFIX + k: v.detach().contiguous() for k, v in net.backbone.state_dict().items()}


# --- prediction -------------------------------------------------------------------------------------------


class AnomalyPredictor(Predictor):
    """The :class:`Predictor` of an anomaly model: the same batching, decoding and API (``predict_stream``,
    ``predict_images``, ``decode``), so ingest, Inspect, History, compare and re-inspect use it unchanged."""

    # The heatmap's box: the region around the peak at least half as hot as the peak (the map is not stretched to
    # its own maximum, so the classifier's quarter-of-the-peak cut would take in too much of a noisy good texture).
    box_threshold = 0.5

    def __init__(
        self,
        model_dir: str | Path,
        policy: ActionPolicy | None = None,
        batch_size: int | None = None,
        runtime: str | None = None,
        threads: int | None = None,
        decode_workers: int | None = None,
        parallel_batches: int | None = None,
        **_options,
    ):
        self.directory = Path(model_dir)
        self.card, self.settings, self.decision, self.scorer = load_anomaly(self.directory)
        self.graph, self.runtime, self.runtime_warning = self._choose_graph(runtime, threads)
        self.policy = policy or ActionPolicy()
        self._stream_settings(batch_size, decode_workers, parallel_batches)  # as the classifier's "onnx" / "torch"
        self._size = (self.settings.size, self.settings.size)
        self._mean = np.asarray(self.card.mean, dtype=np.float32)
        self._inv_std = 1.0 / np.asarray(self.card.std, dtype=np.float32)
        self._bank = self._bank_raw = None

    def _choose_graph(
        self, requested: str | None, threads: int | None = None
    ) -> tuple[AnomalyGraph | None, str, str | None]:
        """(the ONNX scoring graph or ``None``, the runtime used, a warning): the graph by default when its
        recorded parity passed (see :mod:`visionqc.model.anomaly_graph`); PyTorch when asked for or without one."""
        entry = (self.card.raw.get("anomaly") or {}).get("graph")
        has_graph = isinstance(entry, dict) and "file" in entry
        if requested == "torch" or (requested in (None, "", "auto") and not has_graph):
            return None, "torch", None
        if requested not in (None, "", "auto", "onnx"):
            return None, "torch", f"an anomaly model runs in PyTorch or ONNX Runtime fp32; {requested} was not used"
        if not has_graph:
            return None, "torch", "this anomaly model has no ONNX graph (it was trained before they existed)"
        passed = (entry.get("parity") or {}).get("passed") is True
        if not passed and requested != "onnx":
            return None, "torch", None
        warning = None if passed else "the ONNX graph of this anomaly model failed its parity check with PyTorch"
        return AnomalyGraph.load(self.directory, entry, self.settings, threads or DEFAULT_THREADS), "onnx", warning

    @property
    def checkpoint(self):
        raise ModelLoadError("an anomaly model has no classifier checkpoint")

    @property
    def heatmap_ready(self) -> bool:
        return True

    @property
    def model(self) -> DefectNet:
        return self.scorer.net

    def training_bank(self) -> None:
        return None

    def forward_arrays(self, arrays: list[np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Preprocessed images -> ({"anomaly_score": [B]}, embeddings [B, 1280])."""
        maps, embedding = self._maps(np.stack(arrays))
        scores = self.scorer.scores(maps, embedding)
        return {"anomaly_score": scores.numpy()}, embedding.numpy()

    def _maps(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.graph is None:
            return self.scorer.maps(batch)
        maps, embedding = self.graph.maps(batch)
        return torch.from_numpy(maps), torch.from_numpy(embedding)

    def _interpret(self, outputs: dict[str, np.ndarray], embeddings: np.ndarray) -> list[Prediction]:
        card, rule = self.card, self.decision
        results = []
        for i, raw in enumerate(outputs["anomaly_score"]):
            score = float(raw)
            p = rule.probability(score)
            is_defect = score > rule.threshold
            label = ANOMALY_CLASS if is_defect else card.no_defect_class
            result = TaskResult(label, max(p, 1.0 - p), {card.no_defect_class: 1.0 - p, ANOMALY_CLASS: p})
            reason = None
            if rule.review_low <= score <= rule.review_high:
                reason = (
                    f"anomaly score {score:.2f} is near the threshold {rule.threshold:.2f} "
                    f"(a second look between {rule.review_low:.2f} and {rule.review_high:.2f})"
                )
            action = self.policy.decide(label, None, reason is not None, is_defect)
            results.append(
                Prediction(
                    tasks={PRIMARY_TASK: result},
                    is_defect=is_defect,
                    embedding=embeddings[i].astype(np.float32),
                    ood_score=None,
                    needs_review=reason is not None,
                    review_reason=reason,
                    action=action,
                    anomaly_score=score,
                )
            )
        return results

    def anomaly_map(self, image: Image.Image) -> np.ndarray:
        """The blurred patch-distance map of one photo, [h, w] on the finest tap's grid."""
        maps, _ = self._maps(self.preprocess(image.convert("RGB"))[None])
        return maps[0].numpy()

    def input_heatmap(self, image: Image.Image) -> tuple[np.ndarray, str]:
        """The heatmap at the input size (0..1) and its label: the patch distances, cool up to a good photo's
        typical patch and :data:`HEAT_AT_THRESHOLD` where they reach the map's threshold (the image threshold less a
        typical good photo's image-distance term; comparable between photos, unlike a map stretched to its own
        maximum)."""
        amap = torch.from_numpy(self.anomaly_map(image))[None, None]
        up = F.interpolate(amap, size=self._size[::-1], mode="bilinear", align_corners=False)[0, 0].numpy()
        low, cut = self.decision.patch_level, self.decision.map_threshold
        heat = np.clip((up - low) / max(cut - low, 1e-9) * HEAT_AT_THRESHOLD, 0.0, 1.0)
        return heat.astype(np.float32), ANOMALY_CLASS
