"""The model registry on real model directories: first start, immutable versions, refusing non-models, the active
model and its audit trail, per-station choice, rollback, and what a crash mid-registration leaves."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from visionqc import config
from visionqc.registry import ModelRegistry, RegistryError
from visionqc.registry.fit import batch_fit
from visionqc.registry.registry import STAGING


@pytest.fixture
def registry(visionqc_home, monkeypatch) -> ModelRegistry:
    monkeypatch.delenv("VISIONQC_MODEL", raising=False)
    return ModelRegistry(visionqc_home)


def second_version(tmp_path, default_model_dir, version: str = "3", name: str | None = None):
    """A copy of the shipped model whose card says another version (and name): a real, loadable model."""
    target = tmp_path / f"model-{name or 'mt'}-{version}"
    shutil.copytree(default_model_dir, target)
    card = json.loads((target / "model.json").read_text())
    card["version"] = version
    if name:
        card["name"] = name
    (target / "model.json").write_text(json.dumps(card))
    return target


def test_first_start_registers_the_shipped_model_and_makes_it_active(registry, default_model_dir, visionqc_home):
    assert config.model_dir() == default_model_dir  # an empty registry: the shipped model, nothing written
    version = registry.ensure_initialised()
    assert (version.name, version.version, version.source) == ("magnetic-tile", "2", "shipped")
    assert version.metrics["balanced_accuracy"] == pytest.approx(0.964, abs=1e-3)
    assert config.model_dir() == visionqc_home / "models" / "magnetic-tile" / "2"
    assert (config.model_dir() / "model.safetensors").read_bytes() == (
        default_model_dir / "model.safetensors"
    ).read_bytes()
    [entry] = registry.activations()
    assert (entry["action"], entry["by"], entry["previous"]) == ("first start", "VisionQC", None)
    assert registry.ensure_initialised() is None  # the second start changes nothing
    assert len(registry.activations()) == 1


def test_an_update_registers_the_new_shipped_model_without_switching_to_it(registry, default_model_dir, tmp_path):
    # A data folder from before the update: the shipped model of then (version 1) registered and in use.
    old = registry.register(second_version(tmp_path, default_model_dir, "1"), by="VisionQC", source="shipped")
    registry.activate(old.name, old.version, by="VisionQC", action="first start")
    assert registry.newer_shipped() is None
    offered = registry.ensure_initialised()  # the first start after the update
    assert (offered.label, offered.source) == ("magnetic-tile v2", "shipped")
    assert registry.active().label == "magnetic-tile v1"  # the lead decides, not the update
    assert [e["action"] for e in registry.activations()] == ["first start"]
    assert registry.newer_shipped().label == "magnetic-tile v2"
    assert registry.ensure_initialised() is None  # registered once
    assert [v.label for v in registry.versions()] == ["magnetic-tile v2", "magnetic-tile v1"]
    registry.activate(offered.name, offered.version, by="ana")
    assert registry.newer_shipped() is None
    registry.activate(old.name, old.version, by="ana", action="rollback")  # tried, then rolled back: not offered
    assert registry.newer_shipped() is None


def test_the_leads_own_model_of_the_shipped_name_and_version_is_left_alone(registry, default_model_dir, tmp_path):
    own = second_version(tmp_path, default_model_dir, "2")
    card = json.loads((own / "model.json").read_text())
    card["description"] = "trained by the lead"
    (own / "model.json").write_text(json.dumps(card))
    registry.register(own, by="ana", source="trained")
    assert registry.ensure_initialised() is None
    [version] = registry.versions()
    assert version.source == "trained" and registry.active() is None


def test_visionqc_model_pins_a_process_whatever_the_registry_says(registry, default_model_dir, monkeypatch, tmp_path):
    registry.ensure_initialised()
    monkeypatch.setenv("VISIONQC_MODEL", str(tmp_path / "elsewhere"))
    assert config.model_dir() == (tmp_path / "elsewhere").resolve()


def test_versions_are_immutable_and_registering_is_all_or_nothing(registry, tmp_path, default_model_dir):
    registry.ensure_initialised()
    with pytest.raises(RegistryError, match="already registered"):
        registry.register(default_model_dir, by="ana")
    not_a_model = tmp_path / "photos"
    not_a_model.mkdir()
    (not_a_model / "a.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(RegistryError, match="not a usable model: .*has no model.json"):
        registry.register(not_a_model, by="ana")
    broken = second_version(tmp_path, default_model_dir, "3")
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(RegistryError, match="not a valid safetensors"):
        registry.register(broken, by="ana")
    assert [v.label for v in registry.versions()] == ["magnetic-tile v2"]
    assert not any((registry.root / STAGING).iterdir())


def test_activate_rollback_and_the_audit_trail(registry, tmp_path, default_model_dir, visionqc_home):
    registry.ensure_initialised()
    newer = registry.register(second_version(tmp_path, default_model_dir), by="ana", source="trained")
    assert registry.next_version("magnetic-tile") == "4"
    with pytest.raises(RegistryError, match="needs your name"):
        registry.activate(newer.name, newer.version, by=" ")
    registry.activate(newer.name, newer.version, by="ana", action="promote")
    assert registry.active().label == "magnetic-tile v3"
    assert config.model_dir() == newer.path
    [back] = registry.rollback_choices()
    assert back.label == "magnetic-tile v2"
    registry.activate(back.name, back.version, by="ben", action="rollback")
    assert config.model_dir() == visionqc_home / "models" / "magnetic-tile" / "2"
    trail = registry.activations()
    assert [(e["action"], e["by"], e["version"]) for e in trail] == [
        ("rollback", "ben", "2"),
        ("promote", "ana", "3"),
        ("first start", "VisionQC", "2"),
    ]
    assert trail[0]["previous"] == {"name": "magnetic-tile", "version": "3"}
    with pytest.raises(RegistryError, match="no registered model"):
        registry.activate("magnetic-tile", "9", by="ana")


def test_a_station_can_have_its_own_model(registry, tmp_path, default_model_dir):
    registry.ensure_initialised()
    newer = registry.register(second_version(tmp_path, default_model_dir), by="ana")
    registry.activate(newer.name, newer.version, by="ana", station="Line 2", action="station")
    assert registry.stations() == ["Line 2"]
    assert config.model_dir("Line 2") == newer.path
    assert config.model_dir("Line 1") == config.model_dir() != newer.path
    assert registry.active().label == "magnetic-tile v2"


def test_a_torn_last_line_of_the_log_is_ignored(registry, tmp_path, default_model_dir):
    registry.ensure_initialised()
    newer = registry.register(second_version(tmp_path, default_model_dir), by="ana")
    registry.activate(newer.name, newer.version, by="ana")
    with (registry.root / config.ACTIVATIONS_FILE).open("a") as fh:
        fh.write('{"at": "2026-01-01", "name": "magnetic-tile", "vers')  # a write cut off by a crash
    assert registry.active().label == "magnetic-tile v3"
    assert len(registry.activations()) == 2


def test_a_registration_killed_midway_leaves_no_version(registry, tmp_path, default_model_dir):
    """A process killed (SIGKILL) while copying leaves only its staging folder: invisible, removed next time."""
    registry.ensure_initialised()
    source = second_version(tmp_path, default_model_dir, "7")
    code = (
        "import os, shutil, signal, sys\n"
        "from visionqc.registry import ModelRegistry\n"
        "real = shutil.copytree\n"
        "def copy_then_die(src, dst, **kw):\n"
        "    real(src, dst, **kw)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "shutil.copytree = copy_then_die\n"
        f"ModelRegistry({str(registry.home)!r}).register({str(source)!r}, by='ana')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=config.PROJECT_ROOT, capture_output=True)
    assert result.returncode == -9
    leftovers = list((registry.root / STAGING).iterdir())
    assert len(leftovers) == 1 and (leftovers[0] / "model.safetensors").is_file()
    assert [v.label for v in registry.versions()] == ["magnetic-tile v2"]
    registry.register(source, by="ana")  # the next registration clears what the dead process left
    assert [p.name for p in (registry.root / STAGING).iterdir()] == []
    assert {v.label for v in registry.versions()} == {"magnetic-tile v2", "magnetic-tile v7"}


def test_find_names_a_version_or_the_newest_of_a_model(registry, tmp_path, default_model_dir):
    registry.ensure_initialised()
    registry.register(second_version(tmp_path, default_model_dir, "3"), by="ana")
    assert registry.find("magnetic-tile").version == "3"
    assert registry.find("magnetic-tile/2").version == "2"
    assert registry.find("magnetic-tile@2").version == "2"
    with pytest.raises(RegistryError, match="registered: magnetic-tile"):
        registry.find("door-panel")


def test_batch_fit_flags_a_batch_when_most_images_are_out_of_distribution():
    assert batch_fit([0.5, 0.6, 0.7, 0.8, 0.1], 0.3).looks_foreign
    assert not batch_fit([0.5, 0.6, 0.1, 0.2, 0.1], 0.3).looks_foreign  # 2 of 5 is not most
    assert not batch_fit([0.9, 0.9, 0.9], 0.3).looks_foreign  # too few to say
    assert not batch_fit([0.9] * 10, None).looks_foreign  # the model has no calibrated cut
    fit = batch_fit([0.9, None, 0.9, 0.9, 0.9, float("nan"), 0.1], 0.3)
    assert (fit.images, fit.foreign) == (5, 4)
