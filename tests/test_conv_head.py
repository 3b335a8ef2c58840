"""A classifier whose logits come from a conv head (visionqc.model.network.ConvHead), trained on real elpv cells:
the card describes it, the loader builds it and refuses files that do not match, the Predictor computes what the
training code computed, the ONNX graph agrees, and heatmaps take their gradients through the head."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionqc.cli.training import format_runtimes
from visionqc.model.card import ModelLoadError
from visionqc.model.checkpoint import load_checkpoint, save_checkpoint
from visionqc.model.heatmaps import class_activation_maps, heatmap_for_image
from visionqc.model.network import DefectNet, load_imagenet_backbone
from visionqc.model.predict import Predictor
from visionqc.training import conv_head
from visionqc.training.budget import plan_run
from visionqc.training.config import TrainConfig
from visionqc.training.conv_head import (
    SPEC,
    choose_views,
    conv_head_network,
    head_maps,
    head_wins,
    other_tasks_accuracy,
    train_conv_head,
    view_logits,
)
from visionqc.training.datasets import load_dataset
from visionqc.training.export import export_model
from visionqc.training.features import extract_features
from visionqc.training.trainer import base_card, in_memory_predictor, limit_per_class

LEVELS = ["functional", "defective_33", "defective_67", "defective_100"]
VIEWS = 2


@pytest.fixture(scope="module")
def trained(elpv, tmp_path_factory):
    """32 real cells, 2 cached symmetries at the conv head's block, a head trained for 4 epochs, saved with a card
    that asks for it and for 2-view test-time augmentation. Returns (model dir, dataset, maps)."""
    dataset = limit_per_class(load_dataset(elpv), 8, 0)
    cfg = TrainConfig(progress=False)
    task_sizes = {t: len(c) for t, c in dataset.tasks.items()}
    backbone = DefectNet(task_sizes)
    load_imagenet_backbone(backbone)
    backbone.eval()
    card = base_card(dataset, cfg)
    paths = [s.path for s in dataset.samples]
    cache = extract_features(
        in_memory_predictor(card, backbone), paths, VIEWS, 0, SPEC.split_block, progress=False, augmentation="dihedral"
    )
    assert not cache.failed
    maps = head_maps(backbone, cache)
    model = conv_head_network(backbone, task_sizes)
    labels = {t: dataset.labels(t) for t in dataset.tasks}
    train_conv_head(model, maps, labels, np.arange(len(paths)), cfg, epochs=4)
    model.tta_views = VIEWS
    card.raw = {
        "architecture": {
            "backbone": "efficientnet-lite0",
            "embedding_dim": 1280,
            "conv_head": SPEC.to_json(),
            "test_time_augmentation": {"views": VIEWS},
        }
    }
    out = tmp_path_factory.mktemp("conv") / "conv-head"
    save_checkpoint(out, model, card)
    return out, dataset, maps


def test_the_loaded_network_predicts_what_training_computed(trained):
    """The Predictor (fused inference copy, test-time augmentation over 2 symmetries) gives the probabilities the
    training code computes from the cached maps: the mean of the head's logits over the same 2 views."""
    out, dataset, maps = trained
    checkpoint = load_checkpoint(out)
    assert checkpoint.card.conv_head == SPEC and checkpoint.model.conv_head is not None
    assert checkpoint.model.heads is None and checkpoint.model.tta_views == VIEWS
    idx = np.arange(6)
    expected = torch.softmax(view_logits(checkpoint.model, maps, idx, VIEWS)["defect"], 1).numpy()
    images = [Image.open(dataset.samples[i].path).convert("RGB") for i in idx]
    predictions = Predictor(out, runtime="torch").predict_images(images)
    got = np.array([[p.defect.probabilities[c] for c in LEVELS] for p in predictions])
    assert np.allclose(got, expected, atol=2e-3)
    # The head really is what decides: other head weights give other answers on the same backbone.
    with torch.no_grad():
        for param in checkpoint.model.conv_head.out.parameters():
            param.mul_(-1)
    flipped = torch.softmax(view_logits(checkpoint.model, maps, idx, VIEWS)["defect"], 1).numpy()
    assert np.abs(flipped - got).max() > 0.05


def test_the_onnx_graph_computes_the_same_conv_head(trained, tmp_path):
    out, dataset, _ = trained
    copy = tmp_path / "m"
    shutil.copytree(out, copy)
    section = export_model(copy, dataset, list(range(8)), list(range(8, 20)), calibration_images=8, progress=False)
    assert section["graphs"]["onnx"]["parity"]["agreement"] == 1.0
    # Each runtime's speed beside its accuracy, so a lead can trade one for the other knowingly.
    speeds = [section["torch"]] + [g["parity"] for g in section["graphs"].values()]
    assert all(s["images_per_second"] > 0 for s in speeds)
    printed = format_runtimes(section).splitlines()
    assert [line.split(":")[0].strip() for line in printed[1:4]] == ["torch", "onnx", "int8"]
    assert all(line.count(" images/s") == 1 for line in printed[1:4])
    image = Image.open(dataset.samples[3].path).convert("RGB")
    (torch_prediction,) = Predictor(copy, runtime="torch").predict_images([image])
    (graph_prediction,) = Predictor(copy, runtime="onnx").predict_images([image])
    for level in LEVELS:
        assert graph_prediction.defect.probabilities[level] == pytest.approx(
            torch_prediction.defect.probabilities[level], abs=2e-3
        )


def test_heatmaps_take_their_gradients_through_the_conv_head(trained):
    """The "head" layer of a conv-head network is the head's own map, and the gradient reaches block 10 through
    it; a layer after the head's block has no say in the logits and is refused with the reason."""
    out, dataset, _ = trained
    predictor = Predictor(out, runtime="torch")
    model = predictor.model
    image = Image.open(dataset.samples[-1].path).convert("RGB")
    batch = torch.from_numpy(predictor.preprocess(image)[None]).permute(0, 3, 1, 2)
    maps = class_activation_maps(model, batch, target=3, contrast=0, layers=(10, "head"))
    assert maps["head"].shape == (1, 7, 7) and maps[10].shape == (1, 14, 14)
    # Grad-CAM rectifies: the evidence for 3 over 0 may be negative everywhere, but then the evidence for 0 over 3
    # (the same gradient, negated) is positive somewhere; both are zero only if no gradient reaches the map.
    reverse = class_activation_maps(model, batch, target=0, contrast=3, layers=(10, "head"))
    for layer in (10, "head"):
        assert max(float(maps[layer].max()), float(reverse[layer].max())) > 0, layer
    with pytest.raises(ValueError, match=r"do not depend on block\(s\) \[15\]"):
        class_activation_maps(model, batch, target=3, contrast=0, layers=(15, "head"))
    heatmap = heatmap_for_image(predictor, image)
    assert heatmap.array.shape == (image.height, image.width)
    assert 0.0 <= heatmap.array.min() < heatmap.array.max() <= 1.0
    x0, y0, x1, y1 = heatmap.box
    assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height


def _edit_card(directory: Path, edit) -> None:
    card = json.loads((directory / "model.json").read_text(encoding="utf-8"))
    edit(card["architecture"])
    (directory / "model.json").write_text(json.dumps(card), encoding="utf-8")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: a.pop("conv_head"), "model.safetensors holds a conv head but model.json has no 'architecture"),
        (lambda a: a["conv_head"].update(width=64), r"tensor conv_head\.\S+ has shape \[128.*needs \[64"),
        (
            lambda a: a["conv_head"].update(depth=3),
            r"lacks 6 tensors the card's architecture needs, e.g. \['conv_head.features.7",
        ),
        (lambda a: a["conv_head"].update(split_block=16), r"'architecture\.conv_head\.split_block' must be .* 8-15"),
        (lambda a: a["conv_head"].update(width="128"), r"'architecture\.conv_head\.width' must be an integer"),
        (lambda a: a.update(conv_head=[15, 128, 2]), "'architecture.conv_head' must be an object"),
    ],
    ids=["card-without-head", "other-width", "deeper", "block-out-of-range", "width-not-int", "not-object"],
)
def test_a_card_and_weights_that_disagree_on_the_conv_head_are_refused(trained, tmp_path, edit, message):
    out, _, _ = trained
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    _edit_card(bad, edit)
    with pytest.raises(ModelLoadError, match=message):
        load_checkpoint(bad)


def test_linear_head_weights_under_a_conv_head_card_are_refused(trained, tmp_path):
    _, dataset, _ = trained
    linear = DefectNet({t: len(c) for t, c in dataset.tasks.items()})
    card = base_card(dataset, TrainConfig(progress=False))
    card.raw = {"architecture": {"backbone": "efficientnet-lite0", "embedding_dim": 1280, "conv_head": SPEC.to_json()}}
    with pytest.raises(ModelLoadError, match="asks for a conv head .* but model.safetensors has linear heads only"):
        save_checkpoint(tmp_path / "linear", linear, card)
        load_checkpoint(tmp_path / "linear")


def test_the_budget_leaves_out_the_conv_head_last():
    common = {
        "images": 1000, "phase2_epochs": 10, "export": False, "train_share": 0.6, "test_share": 0.25, "tta": 8,
    }  # fmt: skip
    everything = plan_run(0.01, None, views=8, phase2=True, repeats=5, conv_head=True, **common)
    assert everything.conv_head and everything.left_out == []
    without = plan_run(0.01, None, views=8, phase2=True, repeats=5, **common)
    assert everything.estimated_seconds > without.estimated_seconds
    # Views halved to 1 and still too little time: the conv head goes too.
    tight = plan_run(0.01, 1, views=8, phase2=True, repeats=5, conv_head=True, **common)
    assert not tight.conv_head and tight.views == 1 and tight.left_out[-1] == "the conv-head candidate"
    # Enough for one view and the head: the head stays.
    one_view = plan_run(0.01, 1, views=1, phase2=False, repeats=0, **common).estimated_seconds
    roomy = plan_run(0.01, one_view + 30, views=8, phase2=True, repeats=5, conv_head=True, **common)
    assert roomy.conv_head and "the conv-head candidate" not in roomy.left_out


def _oriented_strokes(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Maps [1, n, 192, 7, 7] with one short diagonal stroke each, "\\" (class 0) or "/" (class 1), at a random
    place, in noise: only the stroke's orientation tells the classes apart, and a mirror swaps it."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(0, 0.1, size=(1, n, 192, 7, 7)).astype(np.float32)
    labels = np.arange(n) % 2
    for i, label in enumerate(labels):
        r, c = rng.integers(0, 5, size=2)
        for k in range(3):
            maps[0, i, :8, r + k, c + (2 - k if label else k)] += 3.0
    return torch.from_numpy(maps), labels


def test_the_map_is_flipped_only_for_symmetric_parts():
    """Mirror flips are augmentation only for parts that look the same mirrored: on strokes whose orientation is
    the class, a head trained with flips cannot tell new strokes apart, and one trained without flips can."""
    maps, labels = _oriented_strokes(128, 0)
    unseen, truth = _oriented_strokes(128, 1)
    scores = {}
    for symmetric in (False, True):
        torch.manual_seed(0)
        model = DefectNet({"defect": 2}, conv_head=SPEC)
        train_conv_head(model, maps, {"defect": labels}, np.arange(128), TrainConfig(progress=False), 30, symmetric)
        predicted = view_logits(model, unseen, np.arange(128), 1)["defect"].argmax(1).numpy()
        scores[symmetric] = float((predicted == truth).mean())
    assert scores[False] >= 0.75 and scores[True] <= 0.6, scores  # measured 0.89 and 0.48


def test_only_symmetric_views_are_averaged_at_prediction():
    """Random-crop views are augmentation only: the network averages symmetries, so with crops the conv head's
    test-time augmentation is one view whatever the cache holds."""
    maps, labels = _oriented_strokes(16, 1)
    maps = maps.expand(4, -1, -1, -1, -1)
    model = DefectNet({"defect": 2}, conv_head=SPEC)
    views, scores = choose_views(model, maps, labels, np.arange(16), on_accuracy=True, max_views=1)
    assert views == 1 and list(scores) == [1]
    views, scores = choose_views(model, maps, labels, np.arange(16), on_accuracy=True, max_views=4)
    assert list(scores) == [1, 2, 4] and views == 1  # identical views: ties go to fewer


def test_the_head_draws_rare_classes_as_often_as_phase_1_does(monkeypatch):
    """Batches are drawn class-balanced with phase 1's ``balance_power`` (1 by default: each defect class as often
    as any other; magnetic tile's fray, 2 % of the images, cost balanced accuracy when shuffled); with power 0 it is
    a shuffle, every training image once an epoch."""
    maps, labels = _oriented_strokes(128, 0)
    keep = np.concatenate([np.flatnonzero(labels == 0)[:56], np.flatnonzero(labels == 1)[:8]])  # 1 in 8 is rare
    maps, labels = maps[:, keep], labels[keep]
    drawn: list[np.ndarray] = []
    real_draws = conv_head.balanced_draws

    def recording_draws(*args, **kwargs):
        order = real_draws(*args, **kwargs)
        drawn.append(order.numpy())
        return order

    monkeypatch.setattr(conv_head, "balanced_draws", recording_draws)
    for power in (1.0, 0.0):
        drawn.clear()
        model = DefectNet({"defect": 2}, conv_head=SPEC)
        cfg = TrainConfig(progress=False, balance_power=power)
        train_conv_head(model, maps, {"defect": labels}, np.arange(64), cfg, epochs=20, symmetric=False)
        if power:
            assert len(drawn) == 20 and all(len(order) == 64 for order in drawn)
            share = float(np.mean(labels[np.concatenate(drawn)] == 1))
            assert 0.4 <= share <= 0.6, share  # 0.125 in the data
        else:
            assert drawn == []


def test_a_tie_on_the_defect_goes_to_the_head_that_answers_the_other_tasks_better():
    assert head_wins(0.99, 0.98, None, None) and not head_wins(0.98, 0.99, 0.9, 0.5)
    # NEU seed 2: both reach 1.000 on the defect; severity and location decide.
    assert head_wins(1.0, 1.0, 0.75, 0.69) and not head_wins(1.0, 1.0, 0.69, 0.75)
    assert not head_wins(1.0, 1.0, 0.75, 0.75)  # a tie everywhere keeps the linear heads
    assert not head_wins(0.8, 0.8, None, None)  # elpv has the defect task only
    assert head_wins(0.1 + 0.2, 0.3, 0.7, 0.6)  # the same score summed in another order is still a tie


def test_other_tasks_accuracy_counts_the_labelled_images_of_each_task():
    probabilities = {
        "defect": np.array([[0.9, 0.1], [0.1, 0.9], [0.1, 0.9]]),  # not counted: the defect is compared first
        "severity": np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]),
        "location": np.array([[0.3, 0.7], [0.3, 0.7], [0.8, 0.2]]),
    }
    labels = {
        "defect": np.array([1, 1, 1, 1]),
        "severity": np.array([-1, 0, 0, -1]),  # image 3 has no severity (a defect-free part)
        "location": np.array([-1, 1, 1, 1]),
    }
    idx = np.array([1, 2, 3])
    # severity: 1 of 2 labelled right; location: 2 of 3 right.
    assert other_tasks_accuracy(probabilities, labels, idx) == pytest.approx((0.5 + 2 / 3) / 2)
    assert other_tasks_accuracy({"defect": probabilities["defect"]}, labels, idx) is None
