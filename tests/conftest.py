"""Shared fixtures: where the real data and the shipped model live, and an isolated data directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionqc import config

SHARED_DATA = config.SHARED_DATA


def shared_dataset(name: str) -> Path:
    """Path to ../shared/data/<name>, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real images not available: {path} is absent (CI provides ../shared/data)")
    return path


@pytest.fixture(scope="session")
def magnetic_tile() -> Path:
    return shared_dataset("magnetic-tile")


@pytest.fixture(scope="session")
def neu_det() -> Path:
    return shared_dataset("neu-det")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    path = config.DEFAULT_MODEL_DIR
    assert (path / "model.json").is_file(), f"the shipped model is missing from {path}"
    return path


@pytest.fixture
def visionqc_home(tmp_path, monkeypatch) -> Path:
    """An empty data directory, set as VISIONQC_HOME for the test."""
    home = tmp_path / "visionqc-data"
    monkeypatch.setenv("VISIONQC_HOME", str(home))
    return home
