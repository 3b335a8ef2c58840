"""Where things live: the data directory, the model registry inside it and the active model. One place, read from
the environment and the registry's activation log."""

from __future__ import annotations

import json
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = PROJECT_ROOT / "models" / "magnetic-tile"
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
# The model registry under the data directory (see visionqc.registry): <home>/models/<name>/<version>/ and the
# append-only activation log, whose last entry for a station (else for the whole data folder) is the active model.
REGISTRY_DIR = "models"
ACTIVATIONS_FILE = "activations.jsonl"


def data_dir() -> Path:
    """``VISIONQC_HOME`` if set, else ``./visionqc-data`` in the working directory."""
    return Path(os.environ.get("VISIONQC_HOME") or "visionqc-data").resolve()


def database_url() -> str | None:
    """``VISIONQC_DATABASE_URL`` (``postgresql://user:password@host:port/database``): the shared PostgreSQL
    server every station and app writes to. Unset: the embedded DuckDB file in the data directory."""
    return os.environ.get("VISIONQC_DATABASE_URL") or None


def pinned_model_dir() -> Path | None:
    """``VISIONQC_MODEL`` when set: it pins the model and overrides the registry (tests, one-off runs)."""
    value = os.environ.get("VISIONQC_MODEL")
    return Path(value).resolve() if value else None


def model_dir(station: str | None = None) -> Path:
    """The model to inspect with: ``VISIONQC_MODEL`` if set, else the registry's active model (for ``station``
    when one is chosen for it), else the shipped default model (a data folder whose registry is still empty)."""
    return pinned_model_dir() or active_model_dir(data_dir(), station) or DEFAULT_MODEL_DIR


def read_activations(home: Path) -> list[dict]:
    """Every activation recorded in ``home``'s registry, oldest first. A line that is not a complete JSON object
    (a write cut off by a crash) is skipped: each activation is appended with one ``write``."""
    path = home / REGISTRY_DIR / ACTIVATIONS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return []
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("version"), str):
            entries.append(entry)
    return entries


def active_entry(entries: list[dict], station: str | None = None) -> dict | None:
    """The activation in force: the latest one for ``station`` if it has any, else the latest for the whole data
    folder (``station`` null)."""
    for wanted in ([station] if station else []) + [None]:
        for entry in reversed(entries):
            if entry.get("station") == wanted:
                return entry
    return None


def active_model_dir(home: Path, station: str | None = None) -> Path | None:
    """The registry's active model directory for ``station`` (or the data folder), ``None`` if none is set."""
    entry = active_entry(read_activations(home), station)
    if entry is None:
        return None
    path = home / REGISTRY_DIR / entry["name"] / entry["version"]
    return path if path.is_dir() else None


def runtime() -> str:
    """``VISIONQC_RUNTIME`` (torch, onnx, int8) if set, else ``auto``: the fastest the model card allows."""
    return os.environ.get("VISIONQC_RUNTIME") or "auto"
