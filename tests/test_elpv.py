"""The elpv solar-cell set as it ships: labels.csv (image, defect_probability, type) -> four ordered defect levels,
splits stratified by level and type, clear messages for damaged labels, and a short training run on real cells."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionqc import cli
from visionqc.model.card import EMBEDDING_DIM, ModelLoadError, read_card
from visionqc.model.checkpoint import load_checkpoint, write_card
from visionqc.model.network import DIHEDRAL, dihedral
from visionqc.model.predict import Predictor
from visionqc.training.budget import SLOW_PASS, estimate, plan_run, plan_timed
from visionqc.training.config import TrainConfig
from visionqc.training.datasets import DatasetError, load_dataset, stratified_split
from visionqc.training.export import export_model
from visionqc.training.phases import train_heads
from visionqc.training.probability_labels import PROBABILITY_TEST_FRACTION, default_test_fraction
from visionqc.training.trainer import SYMMETRIC_PHASE1, limit_per_class

LEVELS = ["functional", "defective_33", "defective_67", "defective_100"]


@pytest.fixture
def small_copy(elpv, tmp_path) -> Path:
    """A folder laid out like elpv: images/ with four real cells and a labels.csv the test rewrites."""
    rows = [line.split(",") for line in (elpv / "labels.csv").read_text(encoding="utf-8").splitlines()[1:5]]
    (tmp_path / "images").mkdir()
    for image, _, _ in rows:
        shutil.copy(elpv / image, tmp_path / image)
    (tmp_path / "labels.csv").write_text(
        "image,defect_probability,type\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8"
    )
    return tmp_path


def test_the_real_elpv_folder_reads_as_four_ordered_levels_with_types(elpv):
    dataset = load_dataset(elpv)
    assert dataset.format == "defect-probability"
    assert dataset.tasks == {"defect": LEVELS}  # no severity or location task: elpv has no regions
    assert dataset.no_defect_class == "functional"
    counts = {"functional": 1508, "defective_33": 295, "defective_67": 106, "defective_100": 715}
    assert dataset.class_counts() == counts
    assert dataset.group_by == "type"
    assert Counter(s.group for s in dataset.samples) == {"poly": 1550, "mono": 1074}
    by_level_and_type = Counter((s.defect, s.group) for s in dataset.samples)
    assert by_level_and_type[("defective_67", "mono")] == 56 and by_level_and_type[("functional", "poly")] == 920
    assert dataset.key(dataset.samples[0]) == "images/cell0001.png" and dataset.samples[0].defect == "defective_100"
    assert default_test_fraction(dataset) == PROBABILITY_TEST_FRACTION == 0.25
    # Naming the CSV itself reads the same dataset.
    assert load_dataset(elpv / "labels.csv").class_counts() == dataset.class_counts()


def test_splits_are_stratified_by_level_and_type(elpv):
    dataset = load_dataset(elpv)
    strata = dataset.strata()
    assert len(np.unique(strata)) == 8  # 4 levels x 2 types
    train, val, test = stratified_split(strata, 0.15, 0.25, seed=0)
    assert len(set(train) | set(val) | set(test)) == len(dataset.samples)
    assert not (set(train) & set(test)) and not (set(val) & set(test))
    everything = Counter((s.defect, s.group) for s in dataset.samples)
    held_out = Counter((dataset.samples[i].defect, dataset.samples[i].group) for i in test)
    for key, n in everything.items():  # every level-and-type cell holds out its own quarter (rounded)
        assert held_out[key] == round(n * 0.25), key
    # A dataset without groups stratifies exactly as before: on the defect class alone.
    plain = dataset.subset(range(len(dataset.samples)))
    plain.group_by = None
    assert np.array_equal(plain.strata(), dataset.labels("defect"))


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        ("image,defect_probability\n", None, r"needs the column\(s\) \['type'\]"),
        ("image,type\n", None, r"needs the column\(s\) \['defect_probability'\]"),
        ("file,prob,kind\n", None, r"needs the column\(s\) \['image', 'defect_probability', 'type'\]"),
        (None, "images/cell0001.png,0.5000,mono", r"labels.csv line 6: defect_probability '0.5000' is not one of"),
        (None, "images/cell0001.png,high,mono", r"labels.csv line 6: defect_probability 'high' is not one of"),
        (None, "images/nope.png,1.0000,mono", r"labels.csv line 6: image not found: images/nope.png"),
        (None, "images/cell0001.png,1.0000,", r"labels.csv line 6: 'type' must not be empty"),
        (None, "../elsewhere.png,1.0000,mono", r"labels.csv line 6: image '../elsewhere.png' is outside"),
        (None, "images/cell0001.png,1.0000,mono", r"line 6: image images/cell0001.png is listed twice \(first"),
    ],
)
def test_damaged_labels_get_a_message_naming_the_row(small_copy, header, row, message):
    labels = small_copy / "labels.csv"
    text = labels.read_text(encoding="utf-8")
    if header is not None:
        body = "\n".join(",".join(line.split(",")[: header.count(",") + 1]) for line in text.splitlines()[1:])
        labels.write_text(header + body + "\n", encoding="utf-8")
    else:
        labels.write_text(text + row + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        load_dataset(small_copy)


def test_the_intact_small_copy_reads_and_probabilities_match_within_rounding(small_copy):
    labels = small_copy / "labels.csv"
    labels.write_text(labels.read_text(encoding="utf-8").replace("0.0000", "0"), encoding="utf-8")
    dataset = load_dataset(small_copy)
    assert len(dataset.samples) == 4 and {s.defect for s in dataset.samples} <= set(LEVELS)


def test_a_damaged_labels_csv_is_a_message_through_the_cli(small_copy, capsys):
    (small_copy / "labels.csv").write_text("image,defect_probability,type\nimages/x.png,1,mono\n", encoding="utf-8")
    assert cli.main(["train", str(small_copy), "--out", str(small_copy / "m"), "--quiet"]) == 1
    assert "line 2: image not found: images/x.png" in capsys.readouterr().err
    assert not (small_copy / "m").exists()


@pytest.fixture(scope="module")
def small_elpv_model(elpv, tmp_path_factory) -> Path:
    """6 real cells per level (24 images), the default symmetric views (4 of them to stay quick), a few epochs,
    phase 2 tried, no export (the TTA test below exports)."""
    out = tmp_path_factory.mktemp("elpv") / "elpv-small"
    argv = [
        "train", str(elpv), "--out", str(out), "--max-per-class", "6", "--epochs", "5", "--phase2-epochs", "1",
        "--repeats", "0", "--no-export", "--seed", "1", "--quiet",
    ]  # fmt: skip
    assert cli.main([*argv, "--views", "4"]) == 0
    return out


def test_a_short_training_run_on_real_cells(small_elpv_model, elpv):
    """The card records the four levels, the split by level and type with the paper's 25 % test share, the
    choices the trainer made and the inference speed, and the model predicts."""
    out = small_elpv_model
    card = read_card(out)
    assert card.classes("defect") == LEVELS and card.task_names == ["defect"]
    assert card.no_defect_class == "functional"
    split = card.raw["training"]["split"]
    assert split["method"].startswith("stratified by defect class and type")
    assert split["fractions"]["test"] == 0.25
    # The recorded test files are exactly what the seed gives on the same subset, stratified by level and type.
    subset = limit_per_class(load_dataset(elpv), 6, 1)
    _, _, test = stratified_split(subset.strata(), 0.15, 0.25, 1)
    assert sorted(split["test_files"]) == sorted(subset.key(subset.samples[i]) for i in test)
    assert card.raw["metrics"]["test"]["n"] == len(test)
    image = Image.open(elpv / "images" / "cell0001.png").convert("RGB")
    (prediction,) = Predictor(out).predict_images([image])
    assert prediction.defect.label in LEVELS
    assert sum(prediction.defect.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    choices = card.raw["training"]["choices"]
    assert choices["augmentation"]["chosen"] == "dihedral" and choices["augmentation"]["views"] == 4
    tta = choices["test_time_augmentation"]
    assert set(tta["validation_balanced_accuracy"]) == {"1", "2", "4"} and tta["chosen_views"] in (1, 2, 4)
    assert card.tta_views == tta["chosen_views"]
    assert choices["budget"]["budget_seconds"] == 600 and choices["budget"]["left_out"] == []
    assert card.raw["metrics"]["inference_speed"]["images_per_second"] > 0


def test_the_conv_head_is_tried_on_symmetric_parts_and_kept_only_if_it_wins(small_elpv_model):
    """elpv's parts are symmetric, so the conv-head candidate is trained (on the cache phase 2 made, at block 14,
    run through block 14 once); it replaces the linear heads only when its validation accuracy, with the views
    averaged chosen on validation, is above theirs; the card and the saved network say which happened."""
    card = read_card(small_elpv_model)
    training = card.raw["training"]
    conv = training["choices"]["conv_head"]
    assert training["choices"]["budget"]["conv_head"] is True
    assert conv["architecture"] == {"split_block": 15, "width": 128, "depth": 2}
    assert conv["validation_metric"] == "accuracy" and set(conv["validation_score_by_views"]) == {"1", "2", "4"}
    scores = conv["validation_score_by_views"]
    best = max(scores.values())
    assert conv["chosen_views"] == min(int(n) for n, v in scores.items() if v == best)  # ties to fewer views
    assert conv["kept"] == (best > conv["linear_heads_validation_score"])
    if training["phase_chosen"] == 2:  # the linear-head network it was compared with is phase 2's
        assert conv["linear_heads_validation_score"] == pytest.approx(training["phase2"]["val_accuracy"], abs=1e-4)
    checkpoint = load_checkpoint(small_elpv_model)
    if conv["kept"]:
        assert card.conv_head is not None and checkpoint.model.conv_head is not None
        assert card.tta_views == conv["chosen_views"] and "conv head" in training["phase_reason"]
    else:
        assert card.conv_head is None and checkpoint.model.conv_head is None
        assert "conv head" not in training["phase_reason"]


def test_phase1_sampling_and_penalty_are_chosen_on_validation_accuracy(small_elpv_model):
    """elpv says its parts are symmetric: phase 1 is run with each recipe of SYMMETRIC_PHASE1, the one with the
    best validation accuracy (ties to the earlier) is kept, and the rest of the run and the card use it; phase 2
    is chosen on validation accuracy too."""
    training = read_card(small_elpv_model).raw["training"]
    recipe = training["choices"]["phase1_recipe"]
    tried = recipe["tried"]
    assert [(t["balance_power"], t["head_l2"]) for t in tried] == [
        (1.0 if power is None else power, l2) for power, l2 in SYMMETRIC_PHASE1
    ]
    accuracies = [t["validation_accuracy"] for t in tried]
    first_best = tried[accuracies.index(max(accuracies))]
    assert recipe["chosen"] == {"balance_power": first_best["balance_power"], "head_l2": first_best["head_l2"]}
    assert training["config"]["balance_power"] == recipe["chosen"]["balance_power"]
    assert training["config"]["head_l2"] == recipe["chosen"]["head_l2"]
    assert training["phase1"]["best_epoch"] == first_best["best_epoch"]
    plain = recipe["chosen"]["balance_power"] == 0
    assert training["sampler"].startswith("plain" if plain else "class-balanced")
    # Phase 2 keeps its epoch on, and is compared with phase 1 on, the same metric: validation accuracy.
    assert training["config"]["phase2_select_on"] == "accuracy"
    phase2 = training["phase2"]
    assert all("val_accuracy" in epoch for epoch in phase2["history"])
    kept = "beat" if training["phase_chosen"] == 2 else "did not beat"
    assert training["phase_reason"].startswith(f"phase 2 {kept} phase 1 on validation accuracy (")
    best = max(phase2["history"], key=lambda e: (e["val_accuracy"], -e["val_loss"]))
    assert phase2["best_epoch"] == best["epoch"] and phase2["val_accuracy"] == best["val_accuracy"]


def test_the_l2_penalty_shrinks_the_heads():
    """The same phase 1 with and without ``head_l2`` on embeddings where one feature carries the class: the
    penalised heads are smaller (the penalty is in the loss the optimiser sees)."""
    rng = np.random.default_rng(0)
    labels = {"defect": np.repeat(np.arange(4), 10)}
    embeddings = torch.from_numpy(rng.normal(size=(1, 40, EMBEDDING_DIM)).astype(np.float32))
    embeddings[0, :, 0] += torch.from_numpy(labels["defect"].astype(np.float32))  # one informative feature
    train_idx, val_idx = np.arange(0, 40, 2), np.arange(1, 40, 2)
    norms = []
    for l2 in (0.0, 1.0):
        cfg = TrainConfig(epochs=100, patience=100, lr=0.05, head_l2=l2, progress=False)
        heads, _ = train_heads(embeddings, labels, {"defect": 4}, train_idx, val_idx, cfg, 0, progress=False)
        norms.append(float(heads["defect"][0].norm()))
    assert norms[1] < 0.5 * norms[0]


def _logits_by_hand(model, x: torch.Tensor, views: int) -> torch.Tensor:
    """The mean of the defect logits over the first ``views`` symmetries, one flipped image at a time (for linear
    heads the logits of the mean embedding; for a conv head, which the trainer may keep, its own logits)."""
    model.tta_views = 1
    with torch.no_grad():
        return torch.stack([model.logits_and_embedding(dihedral(x, v))[0]["defect"] for v in range(views)]).mean(0)


def test_test_time_augmentation_runs_in_torch_and_in_the_onnx_graph(small_elpv_model, elpv, tmp_path):
    """A card asking for 4 symmetries: the loaded network averages them (checked against the flips done by
    hand), and the exported ONNX graph computes the same probabilities."""
    out = tmp_path / "tta4"
    shutil.copytree(small_elpv_model, out)
    card = read_card(out)
    card.raw["architecture"]["test_time_augmentation"] = {"views": 4}
    write_card(out, card)
    checkpoint = load_checkpoint(out)
    assert checkpoint.model.tta_views == 4
    image = Image.open(elpv / "images" / "cell0002.png").convert("RGB")
    torch_predictor = Predictor(out, runtime="torch")
    x = torch.from_numpy(torch_predictor.preprocess(image)[None]).permute(0, 3, 1, 2)
    expected = torch.softmax(_logits_by_hand(checkpoint.model, x, 4), 1)[0].numpy()
    (prediction,) = torch_predictor.predict_images([image])
    got = np.array([prediction.defect.probabilities[c] for c in LEVELS])
    # The fused, channels-last inference copy rounds differently from the trainable network: 1e-3 apart at most.
    assert np.allclose(got, expected, atol=2e-3)
    # And the average is really taken: one view alone gives a farther answer.
    one_view = torch.softmax(_logits_by_hand(checkpoint.model, x, 1), 1)[0].numpy()
    assert np.abs(got - expected).max() < np.abs(got - one_view).max()

    dataset = load_dataset(elpv)
    subset = limit_per_class(dataset, 6, 1)
    section = export_model(out, subset, list(range(8)), list(range(8, 14)), calibration_images=8, progress=False)
    assert section["graphs"]["onnx"]["parity"]["agreement"] == 1.0
    (from_graph,) = Predictor(out, runtime="onnx").predict_images([image])
    graph = np.array([from_graph.defect.probabilities[c] for c in LEVELS])
    assert np.allclose(graph, got, atol=2e-3)


def test_a_card_with_an_unknown_test_time_augmentation_is_refused(small_elpv_model, tmp_path):
    out = tmp_path / "bad"
    shutil.copytree(small_elpv_model, out)
    card = json.loads((out / "model.json").read_text(encoding="utf-8"))
    card["architecture"]["test_time_augmentation"] = {"views": 3}
    (out / "model.json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="test_time_augmentation"):
        load_checkpoint(out)


def test_dihedral_views_are_the_eight_symmetries_of_the_square():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    views = [dihedral(x, i) for i in range(len(DIHEDRAL))]
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    assert torch.equal(views[0], x) and torch.equal(views[1], torch.flip(x, (2, 3)))  # identity, half turn
    assert torch.equal(views[2], torch.flip(x, (3,))) and torch.equal(views[3], torch.flip(x, (2,)))  # mirrors


def test_the_time_budget_leaves_out_repeats_then_phase2_then_views():
    common = {
        "images": 1000, "phase2_epochs": 10, "export": False, "train_share": 0.6, "test_share": 0.25, "tta": 8,
    }  # fmt: skip
    everything = plan_run(0.01, None, views=8, phase2=True, repeats=5, **common)
    assert (everything.views, everything.phase2, everything.repeats, everything.left_out) == (8, True, 5, [])
    full = everything.estimated_seconds
    assert full == pytest.approx(estimate(0.01, views=8, phase2=True, repeats=5, **common))
    # Just too little time for the repeated splits: only they go.
    plan = plan_run(0.01, full - 1, views=8, phase2=True, repeats=5, **common)
    assert (plan.views, plan.phase2, plan.repeats) == (8, True, 0) and plan.left_out == ["the card's 5 repeated splits"]
    # Far too little: phase 2 goes, then the views are halved until the run fits, down to one.
    plan = plan_run(0.01, 100, views=8, phase2=True, repeats=5, **common)
    assert plan.repeats == 0 and not plan.phase2 and plan.views < 8 and plan.estimated_seconds <= 100
    assert plan.left_out[1:] == ["phase 2", f"cached views 8 -> {plan.views}"]
    smallest = plan_run(0.01, 1, views=8, phase2=True, repeats=5, **common)
    assert (smallest.views, smallest.phase2, smallest.repeats) == (1, False, 0)  # made even though it cannot fit


def test_the_network_is_timed_only_when_the_plan_depends_on_it():
    """A run that fits its budget even at SLOW_PASS seconds a pass (a few dozen images), or has no budget, is
    planned without timing the network; a real dataset is timed and planned at the measured pace."""
    timings = []

    def time_pass() -> float:
        timings.append(1)
        return 0.01

    asked = {"views": 3, "phase2": True, "repeats": 5, "tta": 1, "conv_head": True, "phase2_epochs": 10,
             "export": True, "train_share": 0.7, "test_share": 0.15}  # fmt: skip
    small = plan_timed(time_pass, 600, images=30, **asked)
    assert timings == [] and small.seconds_per_pass is None and small.left_out == []
    assert small.estimated_seconds == pytest.approx(plan_run(SLOW_PASS, 600, images=30, **asked).estimated_seconds)
    assert small.to_json()["seconds_per_pass"] is None
    unbounded = plan_timed(time_pass, None, images=100_000, **asked)
    assert timings == [] and unbounded.left_out == [] and unbounded.views == 3
    large = plan_timed(time_pass, 600, images=1344, **asked)
    assert timings == [1] and large.seconds_per_pass == 0.01
    assert large == plan_run(0.01, 600, images=1344, **asked)
