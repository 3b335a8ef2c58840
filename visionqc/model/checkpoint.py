"""The checkpoint format: a directory with ``model.safetensors`` (tensors) and ``model.json`` (the model card).

Loading never unpickles: safetensors holds raw tensors only, and the card is plain JSON. Both are
checked against each other before a single weight is used, and every problem is reported as a
:class:`ModelLoadError` that says exactly which file and which field is wrong. The card carries
everything prediction needs (input size, normalisation, tasks and classes, thresholds), so prediction
code hard-codes none of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from visionqc.model.card import (
    CARD_FILE,
    CARD_FORMAT,
    EMBEDDING_DIM,
    ModelCard,
    ModelLoadError,
    parse_card,
    read_card,
)
from visionqc.model.network import DefectNet

WEIGHTS_FILE = "model.safetensors"
MAX_WEIGHTS_BYTES = 512 * 1024 * 1024
# Tensors saved beside the network weights: training embeddings for the out-of-distribution score.
OOD_BANK = "ood.bank"
OOD_BANK_LABELS = "ood.bank_labels"


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
    parse_card(card.to_json())  # never write a card we could not read back
    tmp_weights = directory / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp_weights), metadata={"format": CARD_FORMAT})
    tmp_weights.replace(directory / WEIGHTS_FILE)
    return write_card(directory, card)


def write_card(model_dir: str | Path, card: ModelCard) -> Path:
    """Write (replace atomically) only the card: e.g. a threshold calibrated after training."""
    directory = Path(model_dir)
    card_json = card.to_json()
    parse_card(card_json)  # never write a card we could not read back
    tmp_card = directory / (CARD_FILE + ".tmp")
    tmp_card.write_text(json.dumps(card_json, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp_card.replace(directory / CARD_FILE)
    return directory
