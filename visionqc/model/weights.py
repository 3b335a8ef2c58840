"""What ``model.safetensors`` holds besides the network, read without torch: the out-of-distribution bank.

The ONNX runtimes need the bank (the OOD score) but not the network's weights, so they read these two tensors
with safetensors' numpy reader and never import torch. :mod:`~visionqc.model.checkpoint` reads the whole file
with torch and checks the bank with the same rule.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from visionqc.model.card import CARD_FILE, EMBEDDING_DIM, ModelCard, ModelLoadError

WEIGHTS_FILE = "model.safetensors"
MAX_WEIGHTS_BYTES = 512 * 1024 * 1024
# Tensors saved beside the network weights: training embeddings for the out-of-distribution score.
OOD_BANK = "ood.bank"
OOD_BANK_LABELS = "ood.bank_labels"


def weights_path(directory: Path) -> Path:
    """``directory/model.safetensors``, checked to exist and to be within the size limit."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise ModelLoadError(f"{directory} has no {WEIGHTS_FILE} (the weights)")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise ModelLoadError(f"{WEIGHTS_FILE} is larger than {MAX_WEIGHTS_BYTES // 1_000_000} MB; refusing to load it")
    return path


def check_bank(card: ModelCard, bank_shape: tuple[int, ...] | None, labels_shape: tuple[int, ...] | None) -> None:
    """The bank must be [N, 1280] with one label per row, and a card with an OOD cut must have one."""
    if bank_shape is not None:
        if len(bank_shape) != 2 or bank_shape[1] != EMBEDDING_DIM:
            raise ModelLoadError(f"{OOD_BANK} must be [N, {EMBEDDING_DIM}], found {list(bank_shape)}")
        if labels_shape is None or tuple(labels_shape) != (bank_shape[0],):
            raise ModelLoadError(f"{OOD_BANK_LABELS} must hold one label per {OOD_BANK} row")
    if card.ood_threshold is not None and bank_shape is None:
        raise ModelLoadError(f"{CARD_FILE} sets an ood_threshold but {WEIGHTS_FILE} has no {OOD_BANK}")


def read_ood_bank(directory: str | Path, card: ModelCard) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The bank as float32 [N, 1280] and its labels as int64 [N] (``None, None`` when the model has none)."""
    path = weights_path(Path(directory))
    try:
        with safe_open(str(path), framework="np") as fh:
            keys = set(fh.keys())
            bank = fh.get_tensor(OOD_BANK) if OOD_BANK in keys else None
            labels = fh.get_tensor(OOD_BANK_LABELS) if OOD_BANK_LABELS in keys else None
    except SafetensorError as exc:
        raise ModelLoadError(f"{WEIGHTS_FILE} is not a valid safetensors file ({exc})") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{WEIGHTS_FILE} could not be read ({exc})") from None
    check_bank(card, None if bank is None else bank.shape, None if labels is None else labels.shape)
    if bank is None:
        return None, None
    bank = bank.astype(np.float32)
    if not np.isfinite(bank).all():
        raise ModelLoadError(f"{OOD_BANK} contains NaN or infinite values")
    return bank, labels.astype(np.int64)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
