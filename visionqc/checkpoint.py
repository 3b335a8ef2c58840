"""The checkpoint format: a directory with ``model.safetensors`` (tensors) and ``model.json`` (the model card).

Loading never unpickles: safetensors holds raw tensors only, and the card is plain JSON. Both are
checked against each other before a single weight is used, and every problem is reported as a
:class:`ModelLoadError` that says exactly which file and which field is wrong. The card carries
everything prediction needs (input size, normalisation, tasks and classes, thresholds), so prediction
code hard-codes none of it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from visionqc.network import BACKBONE, EMBEDDING_DIM, DefectNet

CARD_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FORMAT = "visionqc-model/1"
MAX_CARD_BYTES = 20 * 1024 * 1024
MAX_WEIGHTS_BYTES = 512 * 1024 * 1024
# Tensors saved beside the network weights: training embeddings for the out-of-distribution score.
OOD_BANK = "ood.bank"
OOD_BANK_LABELS = "ood.bank_labels"
PRIMARY_TASK = "defect"


class ModelLoadError(ValueError):
    """A model directory is missing, malformed or inconsistent; ``str(err)`` says what and where."""


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
    raw: dict[str, Any] = field(default_factory=dict)

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
    _require(backbone == BACKBONE, f"'architecture.backbone' must be {BACKBONE!r}, found {backbone!r}")
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


@dataclass
class Checkpoint:
    card: ModelCard
    model: DefectNet  # eval mode, weights loaded
    ood_bank: torch.Tensor | None  # [N, 1280] L2-normalised training embeddings
    ood_bank_labels: torch.Tensor | None  # [N] defect class index of each bank row
    directory: Path


def _expected_shapes(card: ModelCard) -> dict[str, tuple[int, ...]]:
    reference = DefectNet({t.name: len(t.classes) for t in card.tasks})
    return {k: tuple(v.shape) for k, v in reference.state_dict().items()}


def load_checkpoint(model_dir: str | Path) -> Checkpoint:
    """Read and cross-check a model directory. Raises :class:`ModelLoadError` with the exact problem."""
    directory = Path(model_dir)
    card = read_card(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ModelLoadError(f"{directory} has no {WEIGHTS_FILE} (the weights)")
    if weights_path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise ModelLoadError(f"{WEIGHTS_FILE} is larger than {MAX_WEIGHTS_BYTES // 1_000_000} MB; refusing to load it")
    expected = _expected_shapes(card)
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(weights_path), framework="pt", device="cpu") as fh:
            keys = set(fh.keys())
            missing = sorted(set(expected) - keys)
            if missing:
                raise ModelLoadError(
                    f"{WEIGHTS_FILE} lacks {len(missing)} tensors the card's architecture needs, e.g. {missing[:3]}"
                )
            for key in keys:
                tensors[key] = fh.get_tensor(key)
    except SafetensorError as exc:
        raise ModelLoadError(f"{WEIGHTS_FILE} is not a valid safetensors file ({exc})") from None
    except (OSError, ValueError) as exc:
        if isinstance(exc, ModelLoadError):
            raise
        raise ModelLoadError(f"{WEIGHTS_FILE} could not be read ({exc})") from None
    for key, shape in expected.items():
        got = tuple(tensors[key].shape)
        if got != shape:
            task = key.split(".")[1] if key.startswith("heads.") else None
            if task and key.endswith(".weight"):
                raise ModelLoadError(
                    f"head {task!r} in {WEIGHTS_FILE} has {got[0]} outputs but {CARD_FILE} lists "
                    f"{shape[0]} classes for it"
                )
            raise ModelLoadError(f"tensor {key} has shape {list(got)}, the architecture needs {list(shape)}")
        if tensors[key].is_floating_point() and not torch.isfinite(tensors[key]).all():
            raise ModelLoadError(f"tensor {key} contains NaN or infinite values")
    unknown = sorted(set(tensors) - set(expected) - {OOD_BANK, OOD_BANK_LABELS})
    if unknown:
        raise ModelLoadError(f"{WEIGHTS_FILE} has tensors the card does not describe, e.g. {unknown[:3]}")
    bank = tensors.get(OOD_BANK)
    bank_labels = tensors.get(OOD_BANK_LABELS)
    if bank is not None:
        if bank.ndim != 2 or bank.shape[1] != EMBEDDING_DIM:
            raise ModelLoadError(f"{OOD_BANK} must be [N, {EMBEDDING_DIM}], found {list(bank.shape)}")
        if bank_labels is None or tuple(bank_labels.shape) != (bank.shape[0],):
            raise ModelLoadError(f"{OOD_BANK_LABELS} must hold one label per {OOD_BANK} row")
        bank = bank.float()
    if card.ood_threshold is not None and bank is None:
        raise ModelLoadError(f"{CARD_FILE} sets an ood_threshold but {WEIGHTS_FILE} has no {OOD_BANK}")

    model = DefectNet({t.name: len(t.classes) for t in card.tasks})
    model.load_state_dict({k: tensors[k] for k in expected}, strict=True)
    model.eval()
    return Checkpoint(card=card, model=model, ood_bank=bank, ood_bank_labels=bank_labels, directory=directory)


def save_checkpoint(
    model_dir: str | Path,
    model: DefectNet,
    card: ModelCard,
    ood_bank: torch.Tensor | None = None,
    ood_bank_labels: torch.Tensor | None = None,
) -> Path:
    """Write weights and card; the result round-trips through :func:`load_checkpoint` exactly."""
    directory = Path(model_dir)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if ood_bank is not None:
        tensors[OOD_BANK] = ood_bank.detach().to(torch.float16).contiguous()
        tensors[OOD_BANK_LABELS] = ood_bank_labels.detach().to(torch.int64).contiguous()
    card_json = card.to_json()
    parse_card(card_json)  # never write a card we could not read back
    tmp_weights = directory / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp_weights), metadata={"format": CARD_FORMAT})
    tmp_weights.replace(directory / WEIGHTS_FILE)
    tmp_card = directory / (CARD_FILE + ".tmp")
    tmp_card.write_text(json.dumps(card_json, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp_card.replace(directory / CARD_FILE)
    return directory
