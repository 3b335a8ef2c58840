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

from visionqc.model.card import CARD_FILE, CARD_FORMAT, ModelCard, ModelLoadError, parse_card, read_card
from visionqc.model.network import DefectNet
from visionqc.model.weights import OOD_BANK, OOD_BANK_LABELS, WEIGHTS_FILE, check_bank, weights_path


@dataclass
class Checkpoint:
    card: ModelCard
    model: DefectNet  # eval mode, weights loaded
    ood_bank: torch.Tensor | None  # [N, 1280] L2-normalised training embeddings
    ood_bank_labels: torch.Tensor | None  # [N] defect class index of each bank row
    directory: Path


def load_checkpoint(model_dir: str | Path) -> Checkpoint:
    """Read and cross-check a model directory. Raises :class:`ModelLoadError` with the exact problem."""
    directory = Path(model_dir)
    card = read_card(directory)
    path = weights_path(directory)
    # Built once: its state dict gives the shapes every tensor must have, then it receives the weights.
    model = DefectNet({t.name: len(t.classes) for t in card.tasks}, conv_head=card.conv_head)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            keys = set(fh.keys())
            has_conv_head = any(k.startswith("conv_head.") for k in keys)
            if has_conv_head != (card.conv_head is not None):
                raise ModelLoadError(
                    f"{WEIGHTS_FILE} holds a conv head but {CARD_FILE} has no 'architecture.conv_head'"
                    if has_conv_head
                    else f"{CARD_FILE} asks for a conv head ('architecture.conv_head') but {WEIGHTS_FILE} has "
                    "linear heads only"
                )
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
            task = key.split(".")[-2] if key.startswith(("heads.", "conv_head.out.")) else None
            if task and key.endswith(".weight"):
                raise ModelLoadError(
                    f"head {task!r} in {WEIGHTS_FILE} has {got[0]} outputs but {CARD_FILE} lists "
                    f"{shape[0]} classes for it"
                )
            raise ModelLoadError(
                f"tensor {key} has shape {list(got)}, the architecture in {CARD_FILE} needs {list(shape)}"
            )
        if tensors[key].is_floating_point() and not torch.isfinite(tensors[key]).all():
            raise ModelLoadError(f"tensor {key} contains NaN or infinite values")
    unknown = sorted(set(tensors) - set(expected) - {OOD_BANK, OOD_BANK_LABELS})
    if unknown:
        raise ModelLoadError(f"{WEIGHTS_FILE} has tensors the card does not describe, e.g. {unknown[:3]}")
    bank = tensors.get(OOD_BANK)
    bank_labels = tensors.get(OOD_BANK_LABELS)
    check_bank(
        card, None if bank is None else tuple(bank.shape), None if bank_labels is None else tuple(bank_labels.shape)
    )
    if bank is not None:
        bank = bank.float()

    model.load_state_dict({k: tensors[k] for k in expected}, strict=True)
    model.tta_views = card.tta_views
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
