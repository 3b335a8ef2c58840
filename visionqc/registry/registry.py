"""The model registry under the data folder.

Layout (``<home>/models/``)::

    <name>/<version>/model.json, model.safetensors   the model, as training wrote it (never changed again)
    <name>/<version>/registered.json                 who registered it, when, from which dataset, its kind
    activations.jsonl                                the audit trail: one line per switch of the active model
    .staging/                                        copies being registered (renamed into place when complete)

A version appears only by one ``rename`` of a complete copy, so a crash (even ``kill -9``) mid-registration
leaves no half-written model: at most a staging folder, removed on the next start. Versions are immutable:
registering an existing name and version is refused. The active model is the last line of the activation
log for a station, else for the whole data folder (:func:`visionqc.config.active_entry`); a switch is one
appended line, so the log is the single truth and the audit trail at once. ``VISIONQC_MODEL`` still pins a
model for one process (tests, one-off runs) and overrides the registry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from visionqc import config
from visionqc.model.card import CARD_FILE, ModelLoadError, read_card

REGISTERED_FILE = "registered.json"
STAGING = ".staging"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SOURCES = ("shipped", "trained", "imported")


def _validate_classifier(directory: Path) -> None:
    """Load the checkpoint for real (weights against card): a non-model directory is refused before it is copied."""
    from visionqc.model.checkpoint import load_checkpoint  # torch: only when a model is registered

    load_checkpoint(directory)


def _validate_anomaly(directory: Path) -> None:
    """Load the bank and backbone for real against the card (shapes, finite values, settings)."""
    from visionqc.model.anomaly import load_anomaly  # torch: only when a model is registered

    load_anomaly(directory)


# Model kinds (the card's "kind", "classifier" when absent) and how a directory of each kind is checked before it
# is registered: "anomaly" models are trained on good photos only (visionqc.model.anomaly).
KINDS: dict[str, Callable[[Path], None]] = {"classifier": _validate_classifier, "anomaly": _validate_anomaly}


def card_kind(raw: dict[str, Any]) -> str:
    return str(raw.get("kind") or "classifier")


class RegistryError(ValueError):
    """A registry request the user can fix (unknown version, taken name, not a model); ``str(err)`` says what."""


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def check_name(value: str, what: str = "model name") -> str:
    value = (value or "").strip()
    if not NAME_PATTERN.match(value):
        raise RegistryError(
            f"{what} {value!r} is not usable: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def slug(text: str) -> str:
    """A usable model name from free text ("Door panel, line 2" -> "door-panel-line-2")."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", (text or "").strip()).strip("-._").lower()
    return cleaned[:64] or "model"


def _version_key(version: str) -> tuple[int, int, str]:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


@dataclass(frozen=True)
class ModelVersion:
    """One registered model version (what ``registered.json`` and the card say about it)."""

    name: str
    version: str
    path: Path
    kind: str = "classifier"
    registered_at: str = ""
    registered_by: str | None = None
    source: str = "imported"
    dataset: dict[str, Any] | None = None
    job_id: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def ref(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


def _test_metrics(card_raw: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a card's held-out test split (empty when the card has none)."""
    test = (card_raw.get("metrics") or {}).get("test") or {}
    defect = (test.get("tasks") or {}).get("defect") or {}
    review = test.get("needs_review") or {}
    out = {
        "test_images": test.get("n"),
        "accuracy": defect.get("accuracy"),
        "balanced_accuracy": defect.get("balanced_accuracy"),
        "needs_review_share": review.get("flagged_share"),
    }
    return {k: v for k, v in out.items() if v is not None}


class ModelRegistry:
    """The registry of the data folder ``home`` (default :func:`visionqc.config.data_dir`)."""

    def __init__(self, home: str | Path | None = None):
        self.home = Path(home) if home is not None else config.data_dir()
        self.root = self.home / config.REGISTRY_DIR

    # --- reading --------------------------------------------------------------------------------
    def versions(self, name: str | None = None) -> list[ModelVersion]:
        """Every registered version (of ``name``), newest registration first."""
        if not self.root.is_dir():
            return []
        out = []
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if name is not None and model_dir.name != name:
                continue
            for version_dir in model_dir.iterdir():
                if (
                    version_dir.is_dir()
                    and not version_dir.name.startswith(".")
                    and (version_dir / CARD_FILE).is_file()
                ):
                    out.append(self._read(model_dir.name, version_dir.name))
        return sorted(out, key=lambda v: (v.registered_at, v.name, _version_key(v.version)), reverse=True)

    def _read(self, name: str, version: str) -> ModelVersion:
        path = self.root / name / version
        try:
            meta = json.loads((path / REGISTERED_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            meta = {}
        return ModelVersion(
            name=name,
            version=version,
            path=path,
            kind=meta.get("kind", "classifier"),
            registered_at=meta.get("registered_at", ""),
            registered_by=meta.get("registered_by"),
            source=meta.get("source", "imported"),
            dataset=meta.get("dataset"),
            job_id=meta.get("job_id"),
            metrics=meta.get("metrics") or {},
        )

    def get(self, name: str, version: str) -> ModelVersion:
        path = self.root / name / version
        if not NAME_PATTERN.match(name or "") or not NAME_PATTERN.match(version or "") or not path.is_dir():
            raise RegistryError(f"there is no registered model {name!r} version {version!r}")
        return self._read(name, version)

    def find(self, text: str) -> ModelVersion:
        """A version named ``name/version``, ``name@version`` or ``name`` (its newest version)."""
        name, _, version = text.replace("@", "/").partition("/")
        if version:
            return self.get(name, version)
        versions = self.versions(name)
        if not versions:
            known = sorted({v.name for v in self.versions()})
            raise RegistryError(f"there is no registered model {name!r}; registered: {', '.join(known) or 'none'}")
        return max(versions, key=lambda v: _version_key(v.version))

    def next_version(self, name: str) -> str:
        numbers = [int(v.version) for v in self.versions(name) if v.version.isdigit()]
        return str(max(numbers, default=0) + 1)

    # --- registering ----------------------------------------------------------------------------
    def register(
        self,
        source_dir: str | Path,
        *,
        by: str | None,
        source: str = "imported",
        kind: str | None = None,
        dataset: dict[str, Any] | None = None,
        job_id: str | None = None,
    ) -> ModelVersion:
        """Copy a model directory into the registry as the card's name and version, all or nothing.

        The directory is checked first (a non-model directory, a broken card or weights that do not match it
        are refused with the reason, and nothing is copied); an existing name and version is refused.
        """
        source_dir = Path(source_dir)
        if kind is not None and kind not in KINDS:
            raise RegistryError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
        try:
            card = read_card(source_dir)
            found = card_kind(card.raw)
            if found not in KINDS:
                raise ModelLoadError(f"{CARD_FILE}: unknown model kind {found!r}; known: {', '.join(KINDS)}")
            if kind is not None and found != kind:
                raise ModelLoadError(f"{CARD_FILE} describes a model of kind {found!r}, not {kind!r}")
            kind = found
            KINDS[kind](source_dir)
        except ModelLoadError as exc:
            raise RegistryError(f"{source_dir} is not a usable model: {exc}") from None
        name = check_name(card.name)
        version = check_name(card.version, "model version")
        target = self.root / name / version
        if target.exists():
            raise RegistryError(f"{name} version {version} is already registered; versions never change")
        self._clear_stale_staging()
        staging = self.root / STAGING / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(source_dir, staging, ignore=shutil.ignore_patterns(".*", "*.tmp"))
            meta = {
                "name": name,
                "version": version,
                "kind": kind,
                "registered_at": _now(),
                "registered_by": by,
                "source": source,
                "dataset": dataset,
                "job_id": job_id,
                "metrics": _test_metrics(card.raw),
            }
            (staging / REGISTERED_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                staging.rename(target)  # the one step that makes the version exist
            except OSError:
                raise RegistryError(f"{name} version {version} is already registered; versions never change") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self._read(name, version)

    def _clear_stale_staging(self) -> None:
        """Remove staging copies left by a process that died mid-registration."""
        staging = self.root / STAGING
        if not staging.is_dir():
            return
        for leftover in staging.iterdir():
            pid = leftover.name.split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)

    def ensure_initialised(self, shipped: Path = config.DEFAULT_MODEL_DIR) -> ModelVersion | None:
        """On first start (an empty registry), register the shipped model and make it active. On a later start
        with a shipped model this registry has not seen (VisionQC was updated), register it **without** making it
        active: the lead compares it with the model in use and promotes it, or not. Returns the version registered,
        or ``None`` when there was nothing to register (or the shipped model is missing).

        A data folder that cannot be written (read-only, full) is left as it is: with no active version the
        shipped model is used in place (:func:`visionqc.config.model_dir`), and the next start that can write
        registers it."""
        if not (shipped / CARD_FILE).is_file():
            return None
        first_start = not self.versions()
        if not first_start:
            try:
                card = read_card(shipped)
                self.get(card.name, card.version)
                return None  # registered already (or the name is taken by the lead's own model of that version)
            except RegistryError:
                pass
            except (ModelLoadError, OSError):
                return None  # an unreadable shipped card: register() would refuse it too
        try:
            version = self.register(shipped, by="VisionQC", source="shipped")
            if first_start and not config.read_activations(self.home):
                self.activate(version.name, version.version, by="VisionQC", action="first start")
        except RegistryError:
            return None  # another process registered it at the same moment, or it is not a usable model
        except OSError:
            return None  # read-only or full data folder: nothing registered, the shipped model serves as it is
        return version

    def newer_shipped(self, station: str | None = None) -> ModelVersion | None:
        """The newest shipped version when it has never been in use here (anywhere in the audit trail): what a
        start after an update offers (see :meth:`ensure_initialised`) until the lead promotes it."""
        active = self.active(station)
        shipped = [v for v in self.versions() if v.source == "shipped"]  # newest registered first
        if active is None or not shipped:
            return None
        newest = shipped[0]
        used = {(e["name"], e["version"]) for e in self.activations()}
        return None if (newest.name, newest.version) in used else newest

    # --- the active model and its audit trail ---------------------------------------------------
    def active(self, station: str | None = None) -> ModelVersion | None:
        entry = config.active_entry(config.read_activations(self.home), station)
        if entry is None:
            return None
        try:
            return self.get(entry["name"], entry["version"])
        except RegistryError:
            return None

    def activations(self) -> list[dict[str, Any]]:
        """The audit trail, newest first: when, who, which station, from which version to which, and why."""
        return list(reversed(config.read_activations(self.home)))

    def stations(self) -> list[str]:
        """Stations that have a model of their own."""
        return sorted({e["station"] for e in config.read_activations(self.home) if e.get("station")})

    def activate(
        self,
        name: str,
        version: str,
        *,
        by: str,
        station: str | None = None,
        action: str = "promote",
        note: str | None = None,
    ) -> dict[str, Any]:
        """Make a registered version the active one (for ``station``, or the whole data folder) and record it."""
        target = self.get(name, version)
        by = (by or "").strip()
        if not by:
            raise RegistryError("switching the model needs your name (it is recorded in the audit trail)")
        previous = self.active(station) if station else self.active()
        entry = {
            "at": _now(),
            "by": by,
            "station": (station or "").strip() or None,
            "name": target.name,
            "version": target.version,
            "previous": previous.ref() if previous else None,
            "action": action,
            "note": note or None,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        # One O_APPEND write: concurrent switches never interleave, a crash never leaves half a line that counts.
        fd = os.open(self.root / config.ACTIVATIONS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def rollback_choices(self, station: str | None = None) -> list[ModelVersion]:
        """Earlier active versions (most recent first, without the current one): what a rollback can go back to."""
        current = self.active(station)
        seen: dict[tuple[str, str], ModelVersion] = {}
        for entry in self.activations():
            if entry.get("station") != station:
                continue
            key = (entry["name"], entry["version"])
            if current and key == (current.name, current.version):
                continue
            if key not in seen:
                try:
                    seen[key] = self.get(*key)
                except RegistryError:
                    continue
        return list(seen.values())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
