"""The training job: a stored dataset -> the trainer -> a new registered model version.

The job exports the dataset as the folder ``python -m visionqc train`` reads (hard links, no copies), trains on it
with :func:`visionqc.training.trainer.train` exactly as the command does, and registers the result. The model is
written inside the job's folder and enters the registry in one rename (:meth:`ModelRegistry.register`): a crash or
a ``kill -9`` at any point leaves no half-written version.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, fields
from typing import Any

from visionqc.datasets.export import export_dataset
from visionqc.jobs.progress import ProgressFile, Stage
from visionqc.model.card import ModelLoadError, read_card
from visionqc.model.runtime import CALIBRATION_IMAGES, expected_export_seconds
from visionqc.registry import ModelRegistry
from visionqc.registry.registry import check_name

KIND = "train"


@dataclass(frozen=True)
class TrainingOptions:
    """What the Models page and ``python -m visionqc train --dataset`` let a user choose; the rest of
    :class:`~visionqc.training.config.TrainConfig` keeps its defaults."""

    views: int = 3
    epochs: int = 150
    phase2: bool = True
    phase2_epochs: int = 10
    repeats: int = 0
    max_per_class: int | None = None
    seed: int = 0
    conv_head: str = "auto"  # TrainConfig.conv_head: "auto" tries the conv-head candidate, "off" never
    export: bool = True  # the ONNX graphs and their parity (``train --dataset ... --no-export`` turns it off)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> TrainingOptions:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# Seconds per unit of work, from the shipped model's training run (2 shared cores; see its card's timings):
# used until the registry holds a trained model whose card has timings of its own.
_FALLBACK_TIMINGS = {
    "feature_extraction": 169.0,
    "phase1_heads": 2.6,
    "phase2": 27.0,
    "conv_head": 15.7,
    "test_evaluation": 4.4,
}
_FALLBACK_SHAPE = {"images": 1344, "views": 3, "phase2_epochs": 4, "test": 202}
# A run on fewer images is dominated by fixed costs (loading the network, warming up) and would over-estimate.
MIN_REFERENCE_IMAGES = 300


def _reference(registry: ModelRegistry | None) -> tuple[dict[str, float], dict[str, float]]:
    """Timings of the newest model trained here on enough images (and what it was trained on), else the shipped
    model's."""
    for version in registry.versions() if registry else []:
        try:
            raw = read_card(version.path).raw
        except ModelLoadError:
            continue
        training = raw.get("training") or {}
        timings, config = training.get("timings_seconds") or {}, training.get("config") or {}
        images = (raw.get("training_data") or {}).get("images")
        sizes = (training.get("split") or {}).get("sizes") or {}
        if timings.get("feature_extraction") and images and images >= MIN_REFERENCE_IMAGES:
            shape = {
                "images": images,
                "views": config.get("views", 3),
                "phase2_epochs": max((training.get("phase2") or {}).get("epochs_run") or 0, 1),
                "test": max(sizes.get("test", 1), 1),
            }
            return timings, shape
    return _FALLBACK_TIMINGS, _FALLBACK_SHAPE


def training_images(class_counts: dict[str, int], options: TrainingOptions) -> int:
    """How many images the trainer will use (at most ``max_per_class`` of each class)."""
    cap = options.max_per_class
    return sum(min(n, cap) if cap else n for n in class_counts.values())


def plan(class_counts: dict[str, int], options: TrainingOptions, registry: ModelRegistry | None = None) -> list[Stage]:
    """The job's stages with their estimated seconds, scaled from a reference run by images, views and epochs."""
    timings, ref = _reference(registry)
    images = training_images(class_counts, options)
    per_view = timings["feature_extraction"] / (ref["images"] * ref["views"])
    test_images = max(1, round(images * 0.15))
    stages = [
        Stage("prepare", "Preparing the dataset", (), 2 + 0.002 * images),
        Stage("features", "Reading the images", ("features",), per_view * images * options.views),
        Stage("phase1", "Training the heads", ("phase 1",), timings.get("phase1_heads", 4.0) * images / ref["images"]),
    ]
    per_epoch = timings.get("phase2", 48.0) / ref["phase2_epochs"] * images / ref["images"]
    if options.phase2:
        stages.append(Stage("phase2", "Fine-tuning the last blocks", ("phase 2",), per_epoch * options.phase2_epochs))
    if options.conv_head != "off":  # trained after phase 2, before calibration (visionqc.training.trainer)
        seconds = timings.get("conv_head", _FALLBACK_TIMINGS["conv_head"]) * images / ref["images"]
        stages.append(Stage("conv_head", "Trying a convolutional head", ("conv head",), seconds))
    if options.phase2:
        stages.append(Stage("calibrate", "Calibrating the needs-review thresholds", ("calibrating",), per_epoch))
    if options.repeats:
        per_split = max(timings.get("phase1_heads", 4.0) * images / ref["images"], 1.0)
        stages.append(
            Stage("repeats", "Stability check (repeated splits)", ("repeated splits",), per_split * options.repeats)
        )
    per_test = timings.get("test_evaluation", 19.0) / ref["test"]
    stages.append(Stage("test", "Testing on held-out images", ("evaluating",), 3 + per_test * test_images))
    if options.export:
        calibration = min(CALIBRATION_IMAGES, images - 2 * test_images)
        export = sum(expected_export_seconds(test_images, calibration).values())
        stages.append(Stage("export", "Exporting the fast runtimes (ONNX, int8)", ("exporting",), export))
    stages.append(Stage("register", "Registering the model", (), 2.0))
    return stages


def estimate_seconds(
    class_counts: dict[str, int], options: TrainingOptions, registry: ModelRegistry | None = None
) -> float:
    return sum(s.seconds for s in plan(class_counts, options, registry))


def run(ctx) -> dict[str, Any]:
    """Run one training job (``ctx``: :class:`visionqc.jobs.worker.JobContext`); returns the registered version."""
    from visionqc.training.config import TrainConfig
    from visionqc.training.datasets import load_dataset
    from visionqc.training.trainer import train

    params = ctx.job["params"]
    store, registry = ctx.store, ModelRegistry(ctx.home)
    name = check_name(params["name"])
    options = TrainingOptions.from_json(params.get("options"))
    dataset_row = store.dataset(params["dataset"])
    if dataset_row is None:
        raise ValueError(f"the dataset {params['dataset']!r} no longer exists")
    version = registry.next_version(name)
    store.set_job_model(ctx.job_id, name, version)
    progress = ProgressFile(
        ctx.home,
        ctx.job_id,
        plan(dataset_row["class_counts"], options, registry),
        extra={"model": {"name": name, "version": version}, "dataset": dataset_row["dataset_id"]},
    )
    ctx.progress = progress
    progress.stage("prepare", f"Exporting {dataset_row['dataset_id']} for training")
    data_dir = ctx.work_dir / "data" / dataset_row["dataset_id"].replace("@", "-v")
    export_dataset(store, dataset_row["dataset_id"], data_dir)
    dataset = load_dataset(data_dir)
    cfg = TrainConfig(name=name, version=version, progress=False, **options.to_json())
    model_dir = ctx.work_dir / "model"
    command = f"job {ctx.job_id}: train dataset {dataset_row['dataset_id']} as {name} v{version} ({options.to_json()})"
    card = train(dataset, model_dir, cfg, command=command, progress=progress)
    progress.stage("register", f"Registering {name} v{version}")
    registered = registry.register(
        model_dir,
        by=ctx.job.get("created_by"),
        source="trained",
        dataset={"id": dataset_row["dataset_id"], "name": dataset_row["name"], "version": int(dataset_row["version"])},
        job_id=ctx.job_id,
    )
    shutil.rmtree(ctx.work_dir, ignore_errors=True)
    test = (card.get("metrics") or {}).get("test") or {}
    return {
        "model": registered.ref(),
        "metrics": registered.metrics,
        "phase_chosen": card["training"]["phase_chosen"],
        "images": (card.get("training_data") or {}).get("images"),
        "test_images": test.get("n"),
    }


def describe(params: dict[str, Any]) -> str:
    """One line for the job list (each kind describes its own: :func:`visionqc.jobs.queue.describe`)."""
    options = TrainingOptions.from_json(params.get("options"))
    parts = [f"{options.views} view(s)", f"phase 2 {'on' if options.phase2 else 'off'}"]
    if options.repeats:
        parts.append(f"{options.repeats} repeated splits")
    if options.conv_head == "off":
        parts.append("no conv head")
    if not options.export:
        parts.append("no ONNX export")
    if options.max_per_class:
        parts.append(f"≤ {options.max_per_class} images per class")
    return f"train {params.get('name')} on {params.get('dataset')} · " + ", ".join(parts)
