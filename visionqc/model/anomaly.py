"""The good-only anomaly model: where a photo looks unlike every good part seen in training (PatchCore-style).

A model of kind ``"anomaly"`` learns from defect-free photos only. Every photo passes through the ImageNet
EfficientNet-Lite0 backbone; the outputs of a few middle blocks ("taps"), each averaged over its 3x3 neighbourhood
and scaled so that every tap weighs the same, are concatenated into one vector per position of a grid ("patch").
Training keeps a small, well-spread set of the good photos' patches (the memory bank, a greedy k-center coreset:
Roth et al., "Towards Total Recall in Industrial Anomaly Detection", 2022). A new photo's patch distances to their
nearest bank patch form the anomaly map (blurred a little: a defect covers more than one cell); the image's
anomaly score is the map's maximum, and the heatmap and its box come from the same map. The measurements behind
each choice are in docs/MODEL_RESULTS.md.

The directory format is the classifier's: ``model.json`` (a valid model card, ``kind: "anomaly"``, whose defect
task has the classes ``[no-defect label, "anomaly"]`` so History, Dashboard, review and reports need nothing new)
and ``model.safetensors`` (the backbone's weights, the bank and the per-tap scales; raw tensors, never unpickled).
Every tensor is checked against the card before use: a hostile or damaged file is a :class:`ModelLoadError`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError, safe_open

from visionqc.actions import ActionPolicy
from visionqc.model.card import CARD_FILE, PRIMARY_TASK, ModelCard, ModelLoadError, read_card
from visionqc.model.network import DefectNet, fuse_batchnorm_for_inference
from visionqc.model.predict import Prediction, Predictor, TaskResult
from visionqc.model.weights import MAX_WEIGHTS_BYTES, WEIGHTS_FILE

ANOMALY_KIND = "anomaly"
ANOMALY_CLASS = "anomaly"
BANK_TENSOR = "anomaly.bank"
SCALES_TENSOR = "anomaly.tap_scales"
BACKBONE_PREFIX = "backbone."
MAX_BANK_ROWS = 50_000  # scoring cost grows with the bank: a larger one is a damaged or hostile file
# The heatmap shows this value where the map reaches the image threshold, so a photo past it turns orange to red
# and a good photo stays cool (the overlay's opacity follows the heat).
HEAT_AT_THRESHOLD = 0.7


@dataclass(frozen=True)
class AnomalySettings:
    """How patches are made and scored; written into the card (``anomaly.settings``)."""

    taps: tuple[int, ...] = (3, 5, 10)  # backbone blocks whose outputs make the patch vectors
    size: int = 224  # input side in pixels (the photo is squashed to size x size, as the classifier does)
    pool: int = 3  # each tap averaged over its pool x pool neighbourhood (PatchCore's local aggregation)
    sigma: float = 4.0  # Gaussian blur of the distance map, in grid cells
    bank_size: int = 2000  # patches kept in the memory bank (greedy k-center coreset)
    candidates: int = 100_000  # a random pool of training patches the coreset is chosen from (keeps training fast)
    projection: int = 32  # random projection the coreset distances are computed in (Johnson-Lindenstrauss)
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["taps"] = list(self.taps)
        return out

    @classmethod
    def from_json(cls, data: Any) -> AnomalySettings:
        def need(cond: bool, message: str) -> None:
            if not cond:
                raise ModelLoadError(f"{CARD_FILE}: 'anomaly.settings' {message}")

        need(isinstance(data, dict), "must be an object")
        taps = data.get("taps")
        need(
            isinstance(taps, list) and 1 <= len(taps) <= 6 and all(isinstance(t, int) and 0 <= t <= 15 for t in taps),
            "'taps' must list 1-6 backbone blocks (0-15)",
        )
        need(list(taps) == sorted(set(taps)), "'taps' must be increasing block numbers")
        ints = {"size": (32, 1024), "pool": (1, 9), "bank_size": (1, MAX_BANK_ROWS), "candidates": (1, 10**7)}
        for key, (lo, hi) in ints.items():
            value = data.get(key, getattr(cls, key))
            need(isinstance(value, int) and lo <= value <= hi, f"'{key}' must be an integer {lo}-{hi}")
        sigma = data.get("sigma", cls.sigma)
        need(isinstance(sigma, int | float) and 0 <= sigma <= 10, "'sigma' must be a number 0-10")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["taps"] = tuple(taps)
        return cls(**known)


@dataclass(frozen=True)
class Decision:
    """The card's rule from anomaly score to verdict: defect above ``threshold``; needs review between
    ``review_low`` and ``review_high``; ``good_level`` is a typical good photo's score (the heatmap's cool end)."""

    threshold: float
    review_low: float
    review_high: float
    good_level: float
    patch_level: float  # a typical patch distance on good photos: where the heatmap starts to warm

    @classmethod
    def from_json(cls, data: Any) -> Decision:
        fields = ("threshold", "review_low", "review_high", "good_level", "patch_level")
        ok = isinstance(data, dict) and all(
            isinstance(data.get(k), int | float) and math.isfinite(data[k]) and data[k] >= 0 for k in fields
        )
        if not ok:
            raise ModelLoadError(f"{CARD_FILE}: 'anomaly.decision' needs the non-negative numbers {', '.join(fields)}")
        out = cls(**{k: float(data[k]) for k in fields})
        if not out.review_low <= out.threshold <= out.review_high or out.patch_level >= out.threshold:
            raise ModelLoadError(f"{CARD_FILE}: 'anomaly.decision' must have review_low <= threshold <= review_high")
        return out

    def probability(self, score: float) -> float:
        """A monotone 0-1 reading of the score (0.5 at the threshold, 0.1 / 0.9 at the review band's ends), stored
        as the "anomaly" class probability so confidence filters and charts work as for a classifier."""
        width = (self.review_high - self.threshold) if score >= self.threshold else (self.threshold - self.review_low)
        z = (score - self.threshold) / max(width, 1e-9) * math.log(9.0)
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


def is_anomaly_card(card: ModelCard) -> bool:
    return card.raw.get("kind") == ANOMALY_KIND


# --- patch features ---------------------------------------------------------------------------------------


def imagenet_network() -> DefectNet:
    """The ImageNet backbone (unfused), as training starts from it."""
    from visionqc.model.network import load_imagenet_backbone

    net = DefectNet({})
    load_imagenet_backbone(net)
    return net


def inference_network(net: DefectNet) -> DefectNet:
    return fuse_batchnorm_for_inference(net).eval().to(memory_format=torch.channels_last)


@torch.inference_mode()
def run_network(net: DefectNet, batch: torch.Tensor, taps: tuple[int, ...]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One pass: the tapped blocks' outputs [B, C, h, w] and the pooled 1280-d embedding (for Explore)."""
    got = []
    x = net.stem(batch.contiguous(memory_format=torch.channels_last))
    for idx in range(len(net.backbone_blocks())):
        x = net.block(idx, x)
        if idx in taps:
            got.append(x)
    return got, net.head_conv(x).mean(dim=(2, 3))


def patch_vectors(tapped: list[torch.Tensor], pool: int, scales: torch.Tensor | None) -> torch.Tensor:
    """[B, h, w, D] patch vectors on the finest tap's grid: each tap pooled, upsampled, scaled, concatenated."""
    h, w = tapped[0].shape[-2:]
    parts = []
    for i, f in enumerate(tapped):
        f = f.float()
        if pool > 1:
            f = F.avg_pool2d(f, pool, stride=1, padding=pool // 2, count_include_pad=False)
        if f.shape[-2:] != (h, w):
            f = F.interpolate(f, size=(h, w), mode="bilinear", align_corners=False)
        parts.append(f if scales is None else f * scales[i])
    return torch.cat(parts, 1).permute(0, 2, 3, 1).contiguous()


def nearest_distance(query: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Euclidean distance of each query row [N, D] to its nearest bank row (chunked matrix products)."""
    out = []
    for start in range(0, len(query), chunk):
        q = query[start : start + chunk]
        d2 = torch.addmm(bank_sq, q, bank.T, alpha=-2.0) + q.pow(2).sum(1, keepdim=True)
        out.append(d2.min(dim=1).values.clamp_min_(0.0).sqrt_())
    return torch.cat(out)


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

    def __init__(self, net: DefectNet, settings: AnomalySettings, scales: torch.Tensor, bank: torch.Tensor | None):
        self.net, self.settings, self.scales = net, settings, scales
        self.set_bank(bank)

    def set_bank(self, bank: torch.Tensor | None) -> None:
        self.bank = bank
        self.bank_sq = None if bank is None else bank.pow(2).sum(1)

    @torch.inference_mode()
    def patches(self, arrays: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised HWC float arrays [B, S, S, 3] -> (patch vectors [B, h, w, D], embeddings [B, 1280])."""
        batch = torch.from_numpy(np.ascontiguousarray(arrays)).permute(0, 3, 1, 2)
        tapped, embedding = run_network(self.net, batch, self.settings.taps)
        return patch_vectors(tapped, self.settings.pool, self.scales), embedding

    @torch.inference_mode()
    def maps(self, arrays: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(blurred anomaly maps [B, h, w], embeddings [B, 1280])."""
        vectors, embedding = self.patches(arrays)
        b, h, w, d = vectors.shape
        dist = nearest_distance(vectors.reshape(-1, d), self.bank, self.bank_sq).reshape(b, h, w)
        return blur(dist, self.settings.sigma), embedding


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
    tensors = _read_tensors(directory)
    net = DefectNet({})
    expected = {BACKBONE_PREFIX + k: tuple(v.shape) for k, v in net.backbone.state_dict().items()}
    expected[SCALES_TENSOR] = (len(settings.taps),)
    missing = sorted(set(expected) - set(tensors) - {BANK_TENSOR})
    unknown = sorted(set(tensors) - set(expected) - {BANK_TENSOR})
    if missing or BANK_TENSOR not in tensors:
        raise ModelLoadError(
            f"{WEIGHTS_FILE} lacks tensors an anomaly model needs, e.g. {(missing or [BANK_TENSOR])[:3]}"
        )
    if unknown:
        raise ModelLoadError(f"{WEIGHTS_FILE} has tensors the card does not describe, e.g. {unknown[:3]}")
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            raise ModelLoadError(f"tensor {key} has shape {list(tensors[key].shape)}, the model needs {list(shape)}")
    bank = tensors[BANK_TENSOR]
    dim = sum(net.backbone._blocks[t]._project_conv.out_channels for t in settings.taps)
    if bank.ndim != 2 or bank.shape[1] != dim or not 1 <= bank.shape[0] <= MAX_BANK_ROWS:
        raise ModelLoadError(
            f"tensor {BANK_TENSOR} has shape {list(bank.shape)}; "
            f"the taps {list(settings.taps)} need [1-{MAX_BANK_ROWS}, {dim}]"
        )
    for key, tensor in tensors.items():
        if key.endswith("num_batches_tracked"):
            continue  # BatchNorm's step counter (an integer), unused at inference
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise ModelLoadError(f"tensor {key} must hold finite floating-point numbers")
    net.backbone.load_state_dict(
        {k[len(BACKBONE_PREFIX) :]: tensors[k] for k in expected if k.startswith(BACKBONE_PREFIX)}
    )
    scorer = PatchScorer(inference_network(net), settings, tensors[SCALES_TENSOR].float(), bank.float().contiguous())
    return card, settings, decision, scorer


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
        **_options,
    ):
        self.directory = Path(model_dir)
        self.card, self.settings, self.decision, self.scorer = load_anomaly(self.directory)
        self.runtime = "torch"
        self.runtime_warning = (
            None
            if runtime in (None, "auto", "torch")
            else f"an anomaly model runs in PyTorch only; the {runtime} runtime was not used"
        )
        self.policy = policy or ActionPolicy()
        self.batch_size = batch_size or 16
        self.decode_workers = 1
        self._size = (self.settings.size, self.settings.size)
        self._mean = np.asarray(self.card.mean, dtype=np.float32)
        self._inv_std = 1.0 / np.asarray(self.card.std, dtype=np.float32)
        self._bank = self._bank_raw = None

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
        maps, embedding = self.scorer.maps(np.stack(arrays))
        scores = maps.flatten(1).max(dim=1).values
        return {"anomaly_score": scores.numpy()}, embedding.numpy()

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
        maps, _ = self.scorer.maps(self.preprocess(image.convert("RGB"))[None])
        return maps[0].numpy()

    def input_heatmap(self, image: Image.Image) -> tuple[np.ndarray, str]:
        """The heatmap at the input size (0..1) and its label: the patch distances, cool up to a good photo's
        typical patch and :data:`HEAT_AT_THRESHOLD` where they reach the image threshold (comparable between
        photos, unlike a map stretched to its own maximum)."""
        amap = torch.from_numpy(self.anomaly_map(image))[None, None]
        up = F.interpolate(amap, size=self._size[::-1], mode="bilinear", align_corners=False)[0, 0].numpy()
        low, cut = self.decision.patch_level, self.decision.threshold
        heat = np.clip((up - low) / max(cut - low, 1e-9) * HEAT_AT_THRESHOLD, 0.0, 1.0)
        return heat.astype(np.float32), ANOMALY_CLASS
