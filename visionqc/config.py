"""Where things live: the data directory and the shipped model. One place, read from the environment."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = PROJECT_ROOT / "models" / "magnetic-tile"
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def data_dir() -> Path:
    """``VISIONQC_HOME`` if set, else ``./visionqc-data`` in the working directory."""
    return Path(os.environ.get("VISIONQC_HOME") or "visionqc-data").resolve()


def model_dir() -> Path:
    """``VISIONQC_MODEL`` if set, else the shipped default model."""
    value = os.environ.get("VISIONQC_MODEL")
    return Path(value).resolve() if value else DEFAULT_MODEL_DIR


def runtime() -> str:
    """``VISIONQC_RUNTIME`` (torch, onnx, int8) if set, else ``auto``: the fastest the model card allows."""
    return os.environ.get("VISIONQC_RUNTIME") or "auto"
