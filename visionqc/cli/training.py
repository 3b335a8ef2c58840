"""``train``, ``evaluate`` and ``localise``: make a model from labelled images, measure it, score its heatmaps."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from visionqc import config
from visionqc.cli.anomaly import add_anomaly_options
from visionqc.cli.common import EXIT_BAD_MODEL, EXIT_OK, EXIT_USER_ERROR, add_runtime_option


def parse_loss_weights(text: str) -> dict[str, float]:
    """``1.0,0.7,0.7`` (defect, severity, location) or ``defect=1,severity=0.7,location=0.7``."""
    parts = [x.strip() for x in text.split(",") if x.strip()]
    try:
        if all("=" in x for x in parts):
            return {k.strip(): float(v) for k, v in (x.split("=", 1) for x in parts)}
        values = [float(x) for x in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError("give three weights: defect,severity,location (e.g. 1.0,0.7,0.7)")
    return dict(zip(("defect", "severity", "location"), values, strict=True))


def _thresholds(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("give two area shares, e.g. 0.003,0.03") from None
    if not 0 < low < high < 1:
        raise argparse.ArgumentTypeError("need 0 < low < high < 1, e.g. 0.003,0.03")
    return low, high


def _read_dataset(args: argparse.Namespace):
    from visionqc.training.datasets import load_dataset

    return load_dataset(
        args.data,
        labels_csv=args.labels,
        no_defect_class=args.no_defect_class,
        severity_thresholds=args.severity_thresholds,
    )


def cmd_train(args: argparse.Namespace) -> int:
    import shlex

    from visionqc.training.config import TrainConfig
    from visionqc.training.evaluation import format_report
    from visionqc.training.probability_labels import default_test_fraction
    from visionqc.training.trainer import train

    if args.anomaly:
        from visionqc.cli.anomaly import train_anomaly

        return train_anomaly(args)
    if args.dataset:
        from visionqc.cli.jobs import train_job

        return train_job(args)
    if args.data is None or args.out is None:
        print("error: give DATA and --out DIR, or --dataset NAME to train on a stored dataset", file=sys.stderr)
        return EXIT_USER_ERROR
    registry = None
    name = args.name or f"{Path(args.out).name}"
    if args.register:
        from visionqc.registry import ModelRegistry
        from visionqc.registry.registry import check_name

        registry = ModelRegistry(config.data_dir())
        registry.ensure_initialised()
        name = check_name(name)
    dataset = _read_dataset(args)
    cfg = TrainConfig(
        name=name,
        version=args.version or (registry.next_version(name) if registry else "1"),
        seed=args.seed,
        epochs=args.epochs,
        phase2=args.phase2,
        phase2_epochs=args.phase2_epochs,
        unfreeze_blocks=args.unfreeze_blocks,
        views=args.views or TrainConfig.views,
        dihedral_views=args.views or TrainConfig.dihedral_views,
        augmentation=args.augmentation,
        conv_head=args.conv_head,
        time_budget=args.time_budget * 60 if args.time_budget > 0 else None,
        loss_weights=args.loss_weights,
        repeats=args.repeats,
        val_fraction=args.val_fraction,
        test_fraction=default_test_fraction(dataset) if args.test_fraction is None else args.test_fraction,
        max_per_class=args.max_per_class,
        export=args.export,
        progress=not args.quiet,
    )
    command = "python -m visionqc " + " ".join(shlex.quote(a) for a in (args.argv or []))
    card = train(dataset, args.out, cfg, command=command, citation=args.citation)
    test = card["metrics"].get("test")
    if test:
        print(format_report(test))
    speed = card["metrics"].get("inference_speed")
    if speed:
        print(f"inference: {speed['images_per_second']:.1f} images/s ({speed['runtime']}, measured on the test split)")
    choices = card["training"].get("choices") or {}
    tta = (choices.get("test_time_augmentation") or {}).get("chosen_views", 1)
    if tta > 1:
        print(f"test-time augmentation: {tta} symmetries averaged (chosen on validation)")
    left_out = (choices.get("budget") or {}).get("left_out")
    if left_out:
        print(f"time budget: left out {', '.join(left_out)}")
    repeated = card["metrics"].get("repeated_splits")
    if repeated:
        ba = repeated["defect"]["balanced_accuracy"]
        print(f"\nrepeated splits ({repeated['splits']}): defect balanced accuracy {ba['mean']:.4f} ± {ba['std']:.4f}")
    print(f"\nphase {card['training']['phase_chosen']}: {card['training']['phase_reason']}")
    if card.get("runtimes"):
        print(format_runtimes(card["runtimes"]))
    _localise_after_training(args)
    print(f"model written to {args.out}")
    if registry is not None:
        version = registry.register(args.out, by=args.by, source="trained")
        print(f"registered as {version.label}; make it active with: python -m visionqc model activate {version.name}")
    return EXIT_OK


def _localise_after_training(args: argparse.Namespace) -> None:
    """Score the new model's heatmaps on its test split when the data has masks or boxes, so the card (and
    the Model page) never carries a previous model's localisation numbers."""
    from visionqc.training.localisation import find_samples, localise

    try:
        find_samples(args.data)
    except ValueError:
        return  # no masks or boxes: nothing to score the heatmaps against
    report, key = localise(args.data, args.out, split="test")
    print(f"heatmaps: pointing game {report.pointing_game:.3f} on {report.images} test defects (card: {key})")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from visionqc.model.card import ModelLoadError
    from visionqc.training.evaluation import evaluate_model_dir, format_report

    dataset = _read_dataset(args)
    try:
        report = evaluate_model_dir(
            args.model, dataset, split=args.split, progress=not args.quiet, runtime=args.runtime
        )
    except ModelLoadError as exc:
        print(f"error: cannot load model {args.model}: {exc}", file=sys.stderr)
        return EXIT_BAD_MODEL
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_report(report))
    return EXIT_OK


def format_runtimes(section: dict) -> str:
    """The export's parity, one line per graph, for the terminal."""

    def speed(numbers: dict) -> str:  # cards exported before 2026-12-07 do not record it
        rate = numbers.get("images_per_second")
        return f", {rate:.0f} images/s" if rate else ""

    lines = [f"runtimes (parity on {section['parity_split']['images']} test images; speed of the network alone):"]
    lines.append(f"  torch: balanced accuracy {section['torch']['balanced_accuracy']:.4f}{speed(section['torch'])}")
    for runtime, graph in section["graphs"].items():
        parity = graph["parity"]
        verdict = f"refused: {graph['refused']}" if graph.get("refused") else "allowed"
        lines.append(
            f"  {runtime}: agreement {parity['agreement']:.1%}, balanced accuracy {parity['balanced_accuracy']:.4f}"
            f"{speed(parity)} ({verdict})"
        )
    lines.append(f"  default runtime: {section['default']}")
    return "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> int:
    import shlex

    from visionqc.model.card import ModelLoadError, read_card
    from visionqc.training.datasets import load_dataset
    from visionqc.training.export import export_model, recorded_split

    try:
        card = read_card(args.model_dir)
    except ModelLoadError as exc:
        print(f"error: cannot load model {args.model_dir}: {exc}", file=sys.stderr)
        return EXIT_BAD_MODEL
    data = args.data or _recorded_data(card.raw)
    if data is None:
        print("error: the card does not say where the training data is; give it with --data", file=sys.stderr)
        return EXIT_USER_ERROR
    severity = (card.raw.get("severity") or {}).get("thresholds") or (0.003, 0.03)
    dataset = load_dataset(data, no_defect_class=card.no_defect_class, severity_thresholds=tuple(severity))
    train_idx, test_idx, note = recorded_split(card, dataset)
    command = "python -m visionqc " + " ".join(shlex.quote(a) for a in (args.argv or []))
    section = export_model(
        args.model_dir,
        dataset,
        train_idx,
        test_idx,
        calibration_images=args.calibration_images,
        command=command,
        note=note,
        progress=not args.quiet,
    )
    print(format_runtimes(section))
    return EXIT_OK


def _recorded_data(card: dict) -> Path | None:
    """The card's training_data.path, as given at training time (relative to where train ran, usually the
    project folder)."""
    path = (card.get("training_data") or {}).get("path")
    if not path:
        return None
    for base in (Path.cwd(), config.PROJECT_ROOT):
        if (base / path).is_dir():
            return base / path
    return Path(path)


def cmd_localise(args: argparse.Namespace) -> int:
    from visionqc.training.localisation import localise

    def progress(done: int, total: int) -> None:
        if done % 25 == 0 or done == total:
            print(f"  {done}/{total} images", file=sys.stderr, flush=True)

    report, key = localise(
        args.data, args.model, split=args.split, explain=args.explain, write=not args.dry_run, progress=progress
    )
    print(json.dumps(report.card_entry(), indent=2))
    where = (
        "not written (--dry-run)" if args.dry_run else f"written to {args.model}/model.json as localisation[{key!r}]"
    )
    print(
        f"{report.images} images: pointing game {report.pointing_game:.3f} "
        f"({report.pointing_game_tolerant:.3f} within {report.tolerance_px} px), box IoU {report.box_iou_mean:.3f}; "
        f"{where}",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    import shlex

    from visionqc.model.card import ModelLoadError
    from visionqc.training.config import TrainConfig
    from visionqc.training.recalibrate import recalibrate_miss_averse

    dataset = _read_dataset(args)
    cfg = TrainConfig(miss_target_recall=args.target_recall, miss_max_free_flagged=args.max_free_flagged)
    command = "python -m visionqc " + " ".join(shlex.quote(a) for a in (args.argv or []))
    try:
        result = recalibrate_miss_averse(args.model, dataset, cfg, command=command, progress=not args.quiet)
    except ModelLoadError as exc:
        print(f"error: cannot load model {args.model}: {exc}", file=sys.stderr)
        return EXIT_BAD_MODEL
    print(json.dumps(result, indent=2, ensure_ascii=False))
    val, test = result["validation"], result["test"]
    print(
        f"miss-averse cut {val['threshold']:.4f} written to {args.model}/model.json: validation defects caught or "
        f"flagged {val['val_defect_recall']:.1%} (without it {val['val_defect_recall_without']:.1%}); test: "
        f"{test['test_defects_predicted_free_flagged']} of {test['test_defects_predicted_free']} defective tiles "
        f"predicted free are flagged, {test['test_free_flagged_share']:.1%} of good tiles flagged by any rule",
        file=sys.stderr,
    )
    return EXIT_OK


DATA_HELP = (
    "labelled images: class folders DIR/<defect>/*.jpg (optional DIR/labels.csv with image,severity,location); "
    "DIR/images/<defect>/ with DIR/masks/ (PNG, white = defect) or DIR/boxes/ (Pascal VOC XML); "
    "a CSV manifest (image,defect[,severity,location]); or a COCO JSON file (as CarDD ships it)"
)


def add_dataset_options(p: argparse.ArgumentParser, optional: bool = False) -> None:
    p.add_argument("data", type=Path, metavar="DATA", help=DATA_HELP, **({"nargs": "?"} if optional else {}))
    p.add_argument("--labels", type=Path, help="CSV with severity/location for class folders (default DATA/labels.csv)")
    p.add_argument(
        "--no-defect-class",
        help="the class that means 'no defect' (default: a class named free, ok, "
        "good, normal, ...; if none exists, a 'no_defect' class that has no training images)",
    )
    p.add_argument(
        "--severity-thresholds",
        type=_thresholds,
        default=(0.003, 0.03),
        metavar="LOW,HIGH",
        help="defect area shares separating low/medium/high severity when derived from masks or "
        "boxes (default: %(default)s, i.e. <0.3%% low, 0.3-3%% medium, >=3%% high)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars on stderr")


def register(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    _add_evaluate(sub)
    _add_export(sub)
    _add_calibrate(sub)
    _add_localise(sub)


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="calibrate a trained model's miss-averse review cut on its validation split, without retraining",
        description="Recompute the model's validation and test split from its card (seed and fractions; the "
        "test split must equal the card's test files), choose the cut above which a 'no defect' prediction's "
        "defect probability asks for a second look (so that the target share of validation defects is caught "
        "or flagged, within the budget of good parts flagged), measure it on the test split and write both "
        "into model.json. Training does the same for every new model. DATA is the dataset the model was "
        "trained on.",
    )
    add_dataset_options(p)
    p.add_argument("--model", type=Path, default=config.model_dir(), help="model directory (default: %(default)s)")
    p.add_argument(
        "--target-recall",
        type=float,
        default=0.98,
        help="share of validation defects to catch or flag (default: %(default)s)",
    )
    p.add_argument(
        "--max-free-flagged",
        type=float,
        default=0.10,
        help="budget: share of defect-free validation images flagged by any rule (default: %(default)s)",
    )
    p.set_defaults(func=cmd_calibrate)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from labelled images and write a model directory",
        description="Train a model (weights + model card) from labelled images. The images are split train / "
        "validation / test, stratified by defect class with a fixed --seed. Phase 1 trains one linear head per "
        "task on cached backbone features of each image and a few augmented views; phase 2 fine-tunes the last "
        "backbone blocks with a cosine schedule and early stopping, and is kept only if it beats phase 1 on "
        "validation balanced accuracy. Needs-review thresholds are calibrated on the validation split; the test "
        "split's accuracy, balanced accuracy, macro F1, per-class precision/recall and confusion matrix are "
        "printed and written to the card, with the mean and spread over repeated splits.",
    )
    add_dataset_options(p, optional=True)
    p.add_argument("--out", type=Path, metavar="DIR", help="model directory to write (with DATA)")
    p.add_argument(
        "--dataset",
        metavar="NAME",
        help="train on a stored dataset (NAME or NAME@VERSION) as a job of this data folder, as the Models page "
        "does: queued behind other jobs, progress shown, the result registered as the next version of --name",
    )
    p.add_argument("--name", help="model name in the card (default: the --out folder name)")
    p.add_argument("--version", help="model version in the card (default: 1, or the next free version with --register)")
    p.add_argument(
        "--register",
        action="store_true",
        help="put the trained model in the registry of VISIONQC_HOME (always done with --dataset)",
    )
    p.add_argument("--detach", action="store_true", help="with --dataset: queue the job and return at once")
    add_anomaly_options(p)
    p.add_argument("--by", default=getpass.getuser(), help="your name, recorded with the model (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="split/initialisation seed (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=150, help="phase-1 epochs, with early stopping (default: %(default)s)")
    p.add_argument(
        "--phase2",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="try phase 2 (last backbone blocks + heads) and keep it if it wins on validation (default: on)",
    )
    p.add_argument("--phase2-epochs", type=int, default=10, help="phase-2 epochs (default: %(default)s)")
    p.add_argument(
        "--unfreeze-blocks", type=int, default=2, help="last backbone blocks trained in phase 2 (default: %(default)s)"
    )
    p.add_argument(
        "--views",
        type=int,
        help="cached views per image: with crops the original plus augmented ones (default 3), with dihedral the "
        "first n of the 8 symmetries (default 8); the time budget may lower it",
    )
    p.add_argument(
        "--augmentation",
        choices=("auto", "crops", "dihedral"),
        default="auto",
        help="cached views: crops (random crops, brightness, contrast), dihedral (the 8 flips and quarter turns; "
        "test-time augmentation over them is then chosen on validation), or auto: dihedral for data whose parts "
        "are symmetric (a defect-probability labels.csv such as elpv), else crops (default: %(default)s)",
    )
    p.add_argument(
        "--conv-head",
        choices=("auto", "off"),
        default="auto",
        help="also train a small convolutional head on the frozen backbone's activations entering block 15 and keep "
        "it if it beats the linear heads on validation: auto = unless the time budget leaves it out, off = never "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=10.0,
        metavar="MINUTES",
        help="the run should fit in this many minutes: the network is timed on this machine first and the card's "
        "repeated splits, then phase 2, then cached views, then the conv head are left out if the estimate does "
        "not fit; 0 = no limit "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--loss-weights",
        type=parse_loss_weights,
        default={"defect": 1.0, "severity": 0.7, "location": 0.7},
        metavar="D,S,L",
        help="multi-task loss weights for defect,severity,location (default: 1.0,0.7,0.7)",
    )
    p.add_argument("--val-fraction", type=float, default=0.15, help="validation share (default: %(default)s)")
    p.add_argument(
        "--test-fraction",
        type=float,
        help="held-out test share (default: 0.25 for a defect-probability labels.csv such as elpv, the paper's "
        "protocol; 0.15 otherwise)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="repeated random splits for the mean/std of phase 1 in the card; 0 skips (default: %(default)s)",
    )
    p.add_argument("--max-per-class", type=int, help="use at most this many images per defect class (quick runs)")
    p.add_argument("--citation", help="training-data citation for the card (default: from DATA/SOURCE.md)")
    p.add_argument(
        "--export",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="export ONNX graphs (fp32 and int8) and measure their parity at the end (default: on)",
    )
    p.set_defaults(func=cmd_train)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a model on labelled images",
        description="Classify labelled images with a model and print, per task, accuracy, balanced accuracy, "
        "macro F1, per-class precision/recall and the confusion matrix. Severity and location are scored on "
        "defective images whose region is known. DATA takes the same layouts as train.",
    )
    add_dataset_options(p)
    p.add_argument("--model", type=Path, default=config.model_dir(), help="model directory (default: %(default)s)")
    p.add_argument(
        "--split",
        choices=["all", "test"],
        default="all",
        help="all images, or only the test files recorded in the model card (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_runtime_option(p)
    p.set_defaults(func=cmd_evaluate)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a model's ONNX graphs (fp32 and int8) and record their parity with PyTorch in its card",
        description="Export the model's network as an ONNX graph (model.onnx) and an int8 version calibrated on "
        "training images (model.int8.onnx), next to model.safetensors. Both are run on the card's test split "
        "beside the PyTorch network; their agreement with it and balanced accuracy go into the card with each "
        "file's SHA-256, and decide the default runtime: int8 when it gives PyTorch's answer on at least 99%% of "
        "the test images for every answer (defect, severity, location, needs review, action) and its balanced "
        "accuracy is within 0.5 points, else fp32 ONNX under the same rule, else PyTorch. train runs this at its "
        "end.",
    )
    p.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="model directory (model.json + model.safetensors)")
    p.add_argument(
        "--data", type=Path, help="the data the model was trained on (default: the card's training_data.path)"
    )
    p.add_argument(
        "--calibration-images",
        type=int,
        default=128,
        help="training images the int8 ranges are calibrated on (default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars on stderr")
    p.set_defaults(func=cmd_export)


def _add_localise(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "localise",
        help="measure how well heatmaps point at real defects (masks or VOC boxes) and record it in the card",
        description="Compute the heatmap of every defect image in DATA (images/<class>/<name>.jpg with "
        "masks/<class>/<name>.png or boxes/<class>/<name>.xml) and score it: pointing game (is the hottest "
        "pixel on the defect) and box IoU. The summary is written into the model card's 'localisation' field.",
    )
    p.add_argument("data", type=Path, metavar="DATA", help="dataset folder with images/ and masks/ or boxes/")
    p.add_argument("--model", type=Path, default=config.model_dir(), help="model directory (default: %(default)s)")
    p.add_argument(
        "--split",
        choices=["auto", "test", "all"],
        default="auto",
        help="test = the card's held-out images; all = every image; auto = test if the model was trained on "
        "DATA, else all (default)",
    )
    p.add_argument(
        "--explain",
        choices=["true", "predicted"],
        default="true",
        help="explain the image's true class (standard) or the predicted one (what the app shows)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the numbers without changing the model card")
    p.set_defaults(func=cmd_localise)
