"""An anomaly model's settings and decision rule as its card states them, read and checked without torch (the CLI's
options, the Models page and the job read them too); the model itself is :mod:`visionqc.model.anomaly`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from visionqc.model.card import ANOMALY_BACKBONE_BLOCKS, CARD_FILE, ModelLoadError

MAX_BANK_ROWS = 50_000  # scoring cost grows with the bank: a larger one is a damaged or hostile file
# How many good parts the lead accepts to see flagged by mistake, as the percentile of the held-out good photos'
# scores the threshold is set at (the Models page and ``--good-percentile`` offer these; 1 in 20 by default).
GOOD_FLAGGED_CHOICES = {99.0: "1 in 100", 98.0: "1 in 50", 95.0: "1 in 20", 90.0: "1 in 10"}
DEFAULT_PERCENTILE = 95.0


@dataclass(frozen=True)
class AnomalySettings:
    """How patches are made and scored; written into the card (``anomaly.settings``)."""

    backbone: str = "efficientnet-lite2"  # the ImageNet backbone the patches come from (its weights are stored)
    taps: tuple[int, ...] = (6, 10, 14)  # the last blocks of the stride-8, -16 (88-d) and -16 (120-d) stages of Lite2
    size: int = 288  # input side in pixels (the photo is squashed to size x size, as the classifier does)
    pool: int = 5  # each tap averaged over its pool x pool neighbourhood (PatchCore's local aggregation)
    sigma: float = 4.0  # Gaussian blur of the distance map, in grid cells
    bank_size: int = 5000  # patches kept in the memory bank (greedy k-center coreset)
    candidates: int = 100_000  # a random pool of training patches the coreset is chosen from (keeps training fast)
    projection: int = 32  # random projection the coreset distances are computed in (Johnson-Lindenstrauss)
    reduce: int = 128  # every patch vector is multiplied by a fixed random matrix to this many axes (0: none)
    top_share: float = 0.05  # image score = mean of the hottest share of the map's cells (0: the maximum)
    # Each patch's distance is divided by how spread out the bank is where it landed: its nearest bank patch's mean
    # distance to its density_k nearest bank neighbours (0: raw distances). A patch as far from a sparse, varied
    # region of good texture is less unusual than one as far from a dense, uniform region.
    density_k: int = 3
    # The image score adds the photo's distance to the nearest good training photo in the whole-image embedding
    # (the one Explore maps), times this weight, on the patch score's scale (the card's ``anomaly.image_distance``
    # stores the gain that puts it there). A tile that is unusual as a whole (uneven, frayed) without one hot
    # spot scores higher; 0: the patch score alone.
    image_weight: float = 0.25
    # The nearest-neighbour search runs on every search_stride-th cell of the grid in each direction and the
    # distance map is interpolated back to the full grid before the blur (1: every cell). The patch vectors are
    # already averaged over pool x pool cells, so a stride of 2 samples them densely enough, for a quarter of the
    # search's work.
    search_stride: int = 2
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["taps"] = list(self.taps)
        return out

    @classmethod
    def from_json(cls, data: Any) -> AnomalySettings:
        """The card's settings; a key a card written before it existed lacks reads as what that card meant
        (:data:`LEGACY_SETTINGS`: Lite0, no stored projection, the map's maximum as the score, raw distances)."""

        def need(cond: bool, message: str) -> None:
            if not cond:
                raise ModelLoadError(f"{CARD_FILE}: 'anomaly.settings' {message}")

        need(isinstance(data, dict), "must be an object")
        data = {**LEGACY_SETTINGS, **data}
        backbone = data["backbone"]
        need(backbone in ANOMALY_BACKBONE_BLOCKS, f"'backbone' must be one of {sorted(ANOMALY_BACKBONE_BLOCKS)}")
        last = ANOMALY_BACKBONE_BLOCKS[backbone] - 1
        taps = data.get("taps")
        need(
            isinstance(taps, list)
            and 1 <= len(taps) <= 6
            and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= last for t in taps),
            f"'taps' must list 1-6 blocks of {backbone} (0-{last})",
        )
        need(list(taps) == sorted(set(taps)), "'taps' must be increasing block numbers")
        ints = {
            "size": (32, 1024),
            "pool": (1, 9),
            "bank_size": (1, MAX_BANK_ROWS),
            "candidates": (1, 10**7),
            "projection": (0, 4096),
            "reduce": (0, 4096),
            "density_k": (0, 64),
            "search_stride": (1, 4),
            "seed": (0, 2**31),
        }
        for key, (lo, hi) in ints.items():
            value = data[key]
            need(isinstance(value, int) and lo <= value <= hi, f"'{key}' must be an integer {lo}-{hi}")
        for key, hi in (("sigma", 10), ("top_share", 1), ("image_weight", 10)):
            value = data[key]
            need(isinstance(value, int | float) and 0 <= value <= hi, f"'{key}' must be a number 0-{hi}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["taps"] = tuple(taps)
        return cls(**known)


# What a card written before a setting existed meant by its absence (the first, Lite0 anomaly models).
LEGACY_SETTINGS: dict[str, Any] = {
    "backbone": "efficientnet-lite0",
    "size": 224,
    "pool": 3,
    "sigma": 4.0,
    "bank_size": 2000,
    "candidates": 100_000,
    "projection": 32,
    "reduce": 0,
    "top_share": 0.0,
    "density_k": 0,  # also what a Lite2 card written before the density normalisation meant
    "image_weight": 0.0,  # and before the image distance and the strided search (the patch score alone,
    "search_stride": 1,  # every cell searched)
    "seed": 0,
}


@dataclass(frozen=True)
class Decision:
    """The card's rule from anomaly score to verdict: defect above ``threshold``; needs review between
    ``review_low`` and ``review_high``; ``good_level`` is a typical good photo's score."""

    threshold: float
    review_low: float
    review_high: float
    good_level: float
    patch_level: float  # a typical patch distance on good photos: where the heatmap starts to warm
    # Where the map is as hot as a flagged photo's (the heatmap's HEAT_AT_THRESHOLD): the threshold less a typical
    # good photo's image-distance term; the threshold itself for a card without one (the patch score alone).
    map_threshold: float

    @classmethod
    def from_json(cls, data: Any) -> Decision:
        fields = ("threshold", "review_low", "review_high", "good_level", "patch_level")
        if isinstance(data, dict) and "map_threshold" not in data:
            data = {**data, "map_threshold": data.get("threshold")}
        ok = isinstance(data, dict) and all(
            isinstance(data.get(k), int | float) and math.isfinite(data[k]) and data[k] >= 0
            for k in (*fields, "map_threshold")
        )
        if not ok:
            raise ModelLoadError(f"{CARD_FILE}: 'anomaly.decision' needs the non-negative numbers {', '.join(fields)}")
        out = cls(**{k: float(data[k]) for k in (*fields, "map_threshold")})
        if not out.review_low <= out.threshold <= out.review_high:
            raise ModelLoadError(f"{CARD_FILE}: 'anomaly.decision' must have review_low <= threshold <= review_high")
        if not out.patch_level < out.map_threshold <= out.threshold:
            raise ModelLoadError(f"{CARD_FILE}: 'anomaly.decision' must have patch_level < map_threshold <= threshold")
        return out

    def probability(self, score: float) -> float:
        """A monotone 0-1 reading of the score (0.5 at the threshold, 0.1 / 0.9 at the review band's ends), stored
        as the "anomaly" class probability so confidence filters and charts work as for a classifier."""
        width = (self.review_high - self.threshold) if score >= self.threshold else (self.threshold - self.review_low)
        z = (score - self.threshold) / max(width, 1e-9) * math.log(9.0)
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))
