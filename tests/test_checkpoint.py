"""The checkpoint format: exact round trip, precise errors, and no code execution from a model file."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch

from visionqc.model.card import CARD_FILE, CARD_FORMAT, ModelLoadError, parse_card
from visionqc.model.checkpoint import WEIGHTS_FILE, load_checkpoint, save_checkpoint
from visionqc.model.network import DefectNet, load_imagenet_backbone

TASKS = {"defect": ["crack", "scratch", "ok"], "severity": ["low", "medium", "high"], "location": ["left", "right"]}


def card_dict(**overrides):
    data = {
        "format": CARD_FORMAT,
        "name": "unit-test-model",
        "version": "0.0.1",
        "no_defect_class": "ok",
        "architecture": {"backbone": "efficientnet-lite0"},
        "input": {"size": 224, "normalization": {"mean": [127, 127, 127], "std": [128, 128, 128]}},
        "tasks": [{"name": k, "classes": v} for k, v in TASKS.items()],
        "needs_review": {"confidence_thresholds": {"defect": 0.5}, "ood_threshold": 0.4, "ood_k": 3},
    }
    data.update(overrides)
    return data


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A model with the real ImageNet backbone and seeded heads, saved in our format."""
    torch.manual_seed(0)
    model = DefectNet({k: len(v) for k, v in TASKS.items()})
    load_imagenet_backbone(model)
    model.eval()
    directory = tmp_path_factory.mktemp("model")
    bank = torch.nn.functional.normalize(torch.randn(12, 1280), dim=1)
    save_checkpoint(directory, model, parse_card(card_dict()), bank, torch.arange(12) % 3)
    return directory, model


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_round_trip_gives_identical_outputs(saved_model):
    directory, original = saved_model
    loaded = load_checkpoint(directory)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, want_emb = original(x)
        got, got_emb = loaded.model(x)
    for task in TASKS:
        assert torch.equal(want[task], got[task])
    assert torch.equal(want_emb, got_emb)
    assert loaded.card.classes("defect") == TASKS["defect"]
    assert loaded.card.confidence_thresholds == {"defect": 0.5}
    assert loaded.ood_bank.shape == (12, 1280)


def test_pickle_disguised_as_weights_is_refused_without_running(saved_model, tmp_path):
    directory = copy_model(saved_model[0], tmp_path / "evil")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (directory / WEIGHTS_FILE).write_bytes(pickle.dumps({"state_dict": Exploit()}))
    with pytest.raises(ModelLoadError, match="not a valid safetensors file"):
        load_checkpoint(directory)
    assert not marker.exists(), "loading a model file executed code from it"


def test_torch_pth_file_is_refused(saved_model, tmp_path):
    directory = copy_model(saved_model[0], tmp_path / "pth")
    torch.save(saved_model[1].state_dict(), directory / WEIGHTS_FILE)
    with pytest.raises(ModelLoadError, match=WEIGHTS_FILE):
        load_checkpoint(directory)


def test_head_size_mismatch_names_the_task(saved_model, tmp_path):
    directory = copy_model(saved_model[0], tmp_path / "mismatch")
    data = card_dict()
    data["tasks"][0]["classes"] = ["crack", "scratch", "dent", "ok"]
    (directory / CARD_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="head 'defect' .* has 3 outputs but model.json lists 4 classes"):
        load_checkpoint(directory)


def test_missing_task_head_is_reported(saved_model, tmp_path):
    directory = copy_model(saved_model[0], tmp_path / "extra-task")
    data = card_dict()
    data["tasks"].append({"name": "colour", "classes": ["red", "blue"]})
    (directory / CARD_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="lacks 2 tensors"):
        load_checkpoint(directory)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other/9"}, "'format' must be"),
        ({"no_defect_class": "fine"}, "no_defect_class 'fine' is not one of the defect classes"),
        ({"input": {"size": 5000, "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]}}}, "input.size"),
        ({"architecture": {"backbone": "resnet50"}}, "architecture.backbone"),
        ({"tasks": [{"name": "severity", "classes": ["low", "high"]}]}, "must include 'defect'"),
        ({"needs_review": {"confidence_thresholds": {"defect": 1.5}}}, "must be in 0-1"),
    ],
)
def test_bad_card_fields_are_named(change, message):
    with pytest.raises(ModelLoadError, match=message):
        parse_card(card_dict(**change))


def test_missing_files_and_bad_json(saved_model, tmp_path):
    with pytest.raises(ModelLoadError, match="model directory not found"):
        load_checkpoint(tmp_path / "nowhere")
    directory = copy_model(saved_model[0], tmp_path / "broken")
    (directory / CARD_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_checkpoint(directory)
    (directory / CARD_FILE).unlink()
    with pytest.raises(ModelLoadError, match="has no model.json"):
        load_checkpoint(directory)


def test_nan_weights_are_refused(saved_model, tmp_path):
    from safetensors.torch import load_file, save_file

    directory = copy_model(saved_model[0], tmp_path / "nan")
    tensors = load_file(directory / WEIGHTS_FILE)
    tensors["heads.defect.bias"][0] = float("nan")
    save_file(tensors, directory / WEIGHTS_FILE)
    with pytest.raises(ModelLoadError, match="heads.defect.bias contains NaN"):
        load_checkpoint(directory)
