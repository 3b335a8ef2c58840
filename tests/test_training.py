"""Training on real images: a short run writes a model that loads and predicts; the pieces, by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from visionqc import cli
from visionqc.cli.training import parse_loss_weights
from visionqc.jobs.progress import nested_fraction
from visionqc.model.card import read_card
from visionqc.model.checkpoint import load_checkpoint
from visionqc.model.network import DefectNet
from visionqc.model.predict import Predictor
from visionqc.training.calibration import calibrate_confidence_threshold, calibrate_miss_threshold
from visionqc.training.config import TrainConfig
from visionqc.training.datasets import load_dataset
from visionqc.training.evaluation import evaluate_model_dir
from visionqc.training.features import augment
from visionqc.training.loop import balanced_draws, better, multitask_loss
from visionqc.training.phases import phase2_parameter_groups, warmup_cosine
from visionqc.training.pipeline import Step, reporting_to


@pytest.fixture(scope="module")
def small_model(magnetic_tile, tmp_path_factory):
    """Train on 5 real images per class (30 images, 2 views, a few epochs, phase 2 tried) through the CLI."""
    out = tmp_path_factory.mktemp("model") / "mt-small"
    argv = [
        "train", str(magnetic_tile), "--out", str(out), "--max-per-class", "5", "--views", "2",
        "--epochs", "5", "--phase2-epochs", "2", "--repeats", "2", "--seed", "3", "--quiet",
        "--loss-weights", "1.0,0.5,0.5", "--name", "mt-small", "--version", "0.1",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    return out


def test_short_training_run_writes_a_model_that_loads_and_predicts(small_model, magnetic_tile):
    checkpoint = load_checkpoint(small_model)
    card = checkpoint.card
    assert (card.name, card.version) == ("mt-small", "0.1")
    assert card.input_size == 224 and card.mean == [127.0] * 3 and card.std == [128.0] * 3
    assert card.task_names == ["defect", "severity", "location"]
    assert card.classes("severity") == ["low", "medium", "high"]
    assert card.no_defect_class == "free"
    assert set(card.confidence_thresholds) == {"defect", "severity", "location"}
    assert card.ood_threshold is not None and checkpoint.ood_bank is not None
    # Every trained model gets the miss-averse cut, with what it does on validation.
    miss = card.raw["training"]["calibration"]["miss_averse"]
    assert card.miss_threshold == miss["threshold"] and 0 <= card.miss_threshold <= 1
    assert miss["val_defect_recall"] >= miss["val_defect_recall_without"]
    training = card.raw["training"]
    assert training["config"]["loss_weights"] == {"defect": 1.0, "severity": 0.5, "location": 0.5}
    assert training["command"].startswith("python -m visionqc train ")
    assert training["phase_chosen"] in (1, 2) and training["phase_reason"]
    # Magnetic tile does not say its parts are symmetric: the general phase-1 recipe, no choice among recipes.
    assert "phase1_recipe" not in training["choices"]
    # The conv-head candidate is tried on every dataset by default. Random crops are not symmetries: one view, no
    # averaging, compared on balanced accuracy (the metric phase 2 is chosen on here); kept only if it wins.
    conv = training["choices"]["conv_head"]
    assert training["choices"]["budget"]["conv_head"] is True and training["config"]["conv_head"] == "auto"
    assert conv["validation_metric"] == "balanced accuracy" and list(conv["validation_score_by_views"]) == ["1"]
    assert conv["kept"] == (conv["validation_score_by_views"]["1"] > conv["linear_heads_validation_score"])
    assert (card.conv_head is not None) == conv["kept"] == ("conv_head" in card.raw["architecture"])
    assert (load_checkpoint(small_model).model.conv_head is not None) == conv["kept"]
    assert training["config"]["balance_power"] == 1.0 and training["config"]["head_l2"] == 0.0
    assert training["sampler"].startswith("class-balanced")
    assert training["split"]["seed"] == 3 and len(training["split"]["test_files"]) == 6
    assert card.raw["training_data"]["citation"].startswith("Source:")
    test = card.raw["metrics"]["test"]
    assert test["tasks"]["defect"]["confusion_matrix"]["labels"] == card.classes("defect")
    assert card.raw["metrics"]["repeated_splits"]["splits"] == 2
    # The data has masks, so train also scored the new model's heatmaps on its test defects.
    localisation = card.raw["localisation"]["magnetic-tile test split"]
    assert 1 <= localisation["images"] <= 5 and 0.0 <= localisation["pointing_game"] <= 1.0

    # train exported the network as ONNX graphs and measured their parity on its 6 test images.
    runtimes = card.raw["runtimes"]
    assert set(runtimes["graphs"]) == {"onnx", "int8"} and runtimes["parity_split"]["images"] == 6
    assert all((small_model / graph["file"]).is_file() for graph in runtimes["graphs"].values())
    assert runtimes["graphs"]["onnx"]["parity"]["agreement"] == 1.0

    predictor = Predictor(small_model)
    assert predictor.runtime == runtimes["default"]
    image = Image.open(next((magnetic_tile / "images" / "crack").glob("*.jpg"))).convert("RGB")
    (prediction,) = predictor.predict_images([image])
    assert prediction.defect.label in card.classes("defect")
    assert sum(prediction.defect.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert prediction.ood_score is not None


def test_evaluate_reproduces_the_recorded_test_metrics(small_model, magnetic_tile, capsys):
    dataset = load_dataset(magnetic_tile)
    report = evaluate_model_dir(small_model, dataset, split="test", progress=False)
    recorded = load_checkpoint(small_model).card.raw["metrics"]["test"]
    assert report["n"] == recorded["n"] == 6
    assert report["tasks"]["defect"] == recorded["tasks"]["defect"]
    argv = ["evaluate", str(magnetic_tile), "--model", str(small_model), "--split", "test", "--json", "--quiet"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["tasks"]["defect"]["accuracy"] == recorded["tasks"]["defect"]["accuracy"]


def test_export_redoes_the_graphs_of_a_saved_model_on_its_recorded_split(small_model, magnetic_tile, capsys):
    before = read_card(small_model).raw["runtimes"]
    argv = ["export", str(small_model), "--data", str(magnetic_tile), "--calibration-images", "8", "--quiet"]
    seen: list[list[Step]] = []
    with reporting_to(seen.append):  # what a training job's progress file hears
        assert cli.main(argv) == 0
    assert "default runtime:" in capsys.readouterr().out
    after = read_card(small_model).raw["runtimes"]
    # The training split was re-derived from the card (no note), and the fp32 graph still matches PyTorch.
    assert after["parity_split"] == before["parity_split"] == {"split": "test", "images": 6}
    assert after["graphs"]["onnx"]["parity"]["agreement"] == 1.0
    assert after["exported"]["command"].startswith("python -m visionqc export ")
    assert Predictor(small_model, runtime="onnx").predict_images([Image.new("RGB", (64, 64))])
    # The export reports its four parts on one bar, weighted by their expected time, and the bar only moves on.
    export = [steps for steps in seen if steps and steps[0].desc == "exporting"]
    parts = list(dict.fromkeys(steps[0].info["step"] for steps in export if steps[0].info.get("step")))
    assert [p.split()[0] for p in parts] == ["writing", "reading", "quantizing", "checking"]
    assert "8 calibration images" in parts[1] and "6 test images" in parts[3]
    fractions = [nested_fraction(steps) for steps in export]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(len(steps) == 2 and steps[1].desc == "parity" for steps in export)  # the parity bar, inside it


def test_multitask_loss_masks_unknown_labels_and_weights_tasks():
    logits = {"defect": torch.tensor([[2.0, 0.0], [0.0, 2.0]]), "severity": torch.tensor([[1.0, 0.0], [0.0, 5.0]])}
    targets = {"defect": torch.tensor([0, 1]), "severity": torch.tensor([0, -1])}  # 2nd image: defect-free
    ce = torch.nn.functional.cross_entropy
    expected = ce(logits["defect"], targets["defect"]) + 0.7 * ce(logits["severity"][:1], torch.tensor([0]))
    got = multitask_loss(logits, targets, {"defect": 1.0, "severity": 0.7})
    assert got.item() == pytest.approx(expected.item())
    # nothing known for a task: that task adds nothing (and no NaN)
    got = multitask_loss(logits, {"defect": targets["defect"], "severity": torch.tensor([-1, -1])}, {})
    assert got.item() == pytest.approx(ce(logits["defect"], targets["defect"]).item())


def test_label_smoothing_is_cross_entropys_own():
    logits = {"defect": torch.tensor([[2.0, 0.0, -1.0], [0.0, 2.0, 1.0]])}
    targets = {"defect": torch.tensor([0, 2])}
    ce = torch.nn.functional.cross_entropy(logits["defect"], targets["defect"], label_smoothing=0.1)
    assert multitask_loss(logits, targets, {}, label_smoothing=0.1).item() == pytest.approx(ce.item())
    assert multitask_loss(logits, targets, {}, label_smoothing=0.1).item() != pytest.approx(
        multitask_loss(logits, targets, {}).item()
    )


def test_warmup_then_cosine_and_without_warmup_exactly_the_cosine():
    factor = warmup_cosine(3, 10)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]  # linear rise, then the cosine from 1
    assert factor(10) == pytest.approx(0.0) and factor(6) < factor(5) < 1.0
    # No warm-up: the factors CosineAnnealingLR gives (the plain phase 2 of before).
    param = torch.nn.Parameter(torch.zeros(1))
    optimiser = torch.optim.SGD([param], lr=1.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=10)
    plain = warmup_cosine(0, 10)
    for step in range(10):
        assert optimiser.param_groups[0]["lr"] == pytest.approx(plain(step), abs=1e-9)
        optimiser.step()
        schedule.step()


def test_phase2_learning_rates_fall_block_by_block_and_frozen_heads_stay_out():
    model = DefectNet({"defect": 4})
    groups = phase2_parameter_groups(model, 13, 1e-3, 0.5, 0.1)
    blocks = model.backbone_blocks()
    by_id = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert by_id[id(model.backbone._conv_head.weight)] == pytest.approx(1e-3)
    assert by_id[id(model.heads["defect"].weight)] == pytest.approx(1e-4)
    assert [by_id[id(next(blocks[i].parameters()))] for i in (15, 14, 13)] == pytest.approx([5e-4, 2.5e-4, 1.25e-4])
    assert (
        not any(p.requires_grad for p in blocks[12].parameters()) and id(blocks[12]._project_conv.weight) not in by_id
    )
    assert all(p.requires_grad for p in blocks[13].parameters())
    model = DefectNet({"defect": 4})
    frozen = phase2_parameter_groups(model, 14, 1e-3, 1.0, 0.0)  # heads left out: phase 1's heads are kept as they are
    trained = {id(p) for g in frozen for p in g["params"]}
    assert not any(id(p) in trained or p.requires_grad for p in model.heads.parameters())


def test_selection_on_accuracy_compares_accuracy_then_loss():
    assert better((0.4, 0.9, 0.80), (0.5, 0.5, 0.75), "accuracy")  # more accurate, though worse on the rest
    assert better((0.5, 0.4, 0.75), (0.5, 0.5, 0.75), "accuracy")  # a tie: the lower loss
    assert not better((0.9, 0.1, 0.70), (0.5, 0.5, 0.75), "accuracy")


def test_balanced_draws_give_each_class_an_equal_share():
    labels = np.array([0] * 90 + [1] * 10)
    draws = balanced_draws(labels, np.arange(100), torch.Generator().manual_seed(0))
    assert len(draws) == 100
    big = torch.cat([balanced_draws(labels, np.arange(100), torch.Generator().manual_seed(s)) for s in range(50)])
    share_minority = float((torch.from_numpy(labels)[big] == 1).float().mean())
    assert 0.45 < share_minority < 0.55


def test_confidence_threshold_by_hand():
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.array([1, 1, 1, 1, 0, 1, 0, 0], dtype=bool)
    # accuracy of the top-k: 1, 1, 1, 1, .8, .83, .71, .625 -> >= 0.95 down to k=4 -> threshold 0.8,
    # which flags 4 of 8; the 25 % cap (np.quantile(conf, 0.25) = 0.575) lowers it to 0.575.
    assert calibrate_confidence_threshold(conf, correct, 0.95, 0.25) == pytest.approx(0.575)
    assert calibrate_confidence_threshold(conf, correct, 0.95, 0.6) == pytest.approx(0.8)
    assert calibrate_confidence_threshold(conf, np.ones(8, dtype=bool), 0.95, 0.25) == pytest.approx(0.4)


def test_miss_averse_cut_by_hand():
    # Ten defective images, three predicted free (defect probability 0.40, 0.30, 0.05), none flagged otherwise;
    # twenty good images predicted free with defect probabilities 0.00 ... 0.38.
    p = np.array([0.9] * 7 + [0.40, 0.30, 0.05] + [i / 50 for i in range(20)])
    free = np.array([False] * 7 + [True] * 3 + [True] * 20)
    flagged = np.zeros(30, dtype=bool)
    defective = np.array([True] * 10 + [False] * 20)
    # 90 % recall needs the 0.40 and 0.30 images flagged: a cut below 0.30, i.e. 0.28 at most. A budget of 25 %
    # of the good images (5 of 20: 0.30 ... 0.38) allows exactly that cut.
    result = calibrate_miss_threshold(p, free, flagged, defective, target_recall=0.9, max_free_flagged=0.25)
    assert result["threshold"] == pytest.approx(0.28) and result["val_defect_recall"] == pytest.approx(0.9)
    assert result["val_free_flagged_share"] == pytest.approx(0.25) and result["met_target"]
    assert result["val_defect_recall_without"] == pytest.approx(0.7)
    # A larger budget buys more second looks: the lowest cut within it.
    result = calibrate_miss_threshold(p, free, flagged, defective, target_recall=0.9, max_free_flagged=0.30)
    assert result["threshold"] == pytest.approx(0.26) and result["val_free_flagged_share"] == pytest.approx(0.30)
    # A budget too small for the recall: the recall wins, with the highest cut that reaches it.
    result = calibrate_miss_threshold(p, free, flagged, defective, target_recall=0.9, max_free_flagged=0.05)
    assert result["threshold"] == pytest.approx(0.28) and result["val_free_flagged_share"] > 0.05
    # Nothing missed on validation and no budget: no second look is needed (the cut is 1).
    result = calibrate_miss_threshold(p[:7], free[:7], flagged[:7], defective[:7], 0.98, 0.0)
    assert result["threshold"] == 1.0 and result["val_defect_recall"] == 1.0


def test_augment_keeps_most_of_the_image_and_is_seeded(magnetic_tile):
    image = Image.open(next((magnetic_tile / "images" / "fray").glob("*.jpg"))).convert("RGB")
    a = augment(image, np.random.default_rng([0, 1, 2]))
    b = augment(image, np.random.default_rng([0, 1, 2]))
    assert a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))
    assert 0.87 * image.width <= a.width <= image.width and 0.87 * image.height <= a.height <= image.height


def test_train_config_defaults_match_the_documented_recipe():
    cfg = TrainConfig()
    assert cfg.loss_weights == {"defect": 1.0, "severity": 0.7, "location": 0.7}
    assert cfg.input_size == 224 and cfg.phase2 and cfg.seed == 0
    assert (cfg.unfreeze_blocks, cfg.phase2_epochs, cfg.select_on) == (2, 10, "loss")
    assert (cfg.val_fraction, cfg.test_fraction, cfg.views) == (0.15, 0.15, 3)


def test_train_and_evaluate_help_explain_the_options(capsys):
    for command, options in (
        (
            "train",
            [
                "--out",
                "--epochs",
                "--seed",
                "--loss-weights",
                "--phase2",
                "--no-phase2",
                "--name",
                "--version",
                "--conv-head",
                "--time-budget",
            ],
        ),
        ("evaluate", ["--model", "--split", "--json"]),
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        for option in options:
            assert option in text, (command, option)


def test_loss_weights_option_parses_both_forms():
    assert parse_loss_weights("1.0,0.7,0.7") == {"defect": 1.0, "severity": 0.7, "location": 0.7}
    assert parse_loss_weights("defect=1,location=0.2") == {"defect": 1.0, "location": 0.2}
    with pytest.raises(Exception, match="three weights"):
        parse_loss_weights("1,2")


def test_a_folder_that_is_not_a_dataset_is_a_message_not_a_traceback(tmp_path, capsys):
    assert cli.main(["train", str(tmp_path), "--out", str(tmp_path / "m"), "--quiet"]) == 1
    assert "no class folders" in capsys.readouterr().err
