"""The anomaly training job: good photos uploaded on the Models page -> an anomaly model -> a registered version.

The page saves the photos under ``<home>/jobs/uploads/<token>/`` before it queues the job (the worker may start at
once); the job reads them as ``python -m visionqc train GOOD --anomaly`` does, fits the model inside its own folder
and registers it in one rename, so a crash leaves no half-written version. The photos are removed once the model
is registered.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionqc.intake.imaging import ImageDecodeError, decode_image
from visionqc.intake.uploads import UploadFailure, UploadFile
from visionqc.jobs.progress import JOBS_DIR, ProgressFile, Stage
from visionqc.model.anomaly_settings import DEFAULT_PERCENTILE, GOOD_FLAGGED_CHOICES
from visionqc.registry import ModelRegistry
from visionqc.registry.registry import check_name

KIND = "anomaly"
UPLOADS = "uploads"
# Seconds per good photo on 2 shared cores (Lite2, 288 px: features; scoring the held-out fifth), and the fixed
# costs of the coreset and of the ONNX graph's export: from the benchmark in docs/MODEL_RESULTS.md (2026-12-06).
_PER_PHOTO_S, _CORESET_S, _EXPORT_S = 0.14, 4.0, 10.0


@dataclass(frozen=True)
class SavedPhotos:
    folder: str  # relative to the data folder
    photos: int
    failures: list[UploadFailure]


def save_uploads(home: Path, files: Iterable[UploadFile | UploadFailure]) -> SavedPhotos:
    """Check and keep uploaded good photos under ``jobs/uploads/<token>`` for a job. Every file is decoded once:
    one that is not a readable photo is reported (with its reason) and left out, never fatal; fewer than
    :data:`~visionqc.training.anomaly.MIN_GOOD_IMAGES` readable photos is refused (``ValueError`` saying so) and
    nothing is kept. Files are numbered: an upload never chooses a path."""
    from visionqc.training.anomaly import MIN_GOOD_IMAGES, PhotoSet, require_enough

    folder = home / JOBS_DIR / UPLOADS / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True, exist_ok=True)
    saved, failures = 0, []
    for item in files:
        if isinstance(item, UploadFile):
            try:
                decode_image(item.data, draft_size=(64, 64))
            except ImageDecodeError as exc:
                item = UploadFailure(item.name, str(exc))
        if isinstance(item, UploadFailure):
            failures.append(item)
            continue
        suffix = Path(item.name).suffix.lower()[:6] or ".img"
        (folder / f"{saved:05d}{suffix}").write_bytes(item.data)
        saved += 1
    if saved < MIN_GOOD_IMAGES:
        shutil.rmtree(folder, ignore_errors=True)
        require_enough(PhotoSet(names=[""] * saved, failures=[(f.name, f.reason) for f in failures]))
    return SavedPhotos(str(folder.relative_to(home)), saved, failures)


def _photos_dir(home: Path, relative: str) -> Path:
    """The uploads folder a job names, refused unless it lies inside this data folder's uploads."""
    root = (home / JOBS_DIR / UPLOADS).resolve()
    folder = (home / relative).resolve()
    if folder.parent != root or not folder.is_dir():
        raise ValueError(f"the uploaded good photos ({relative}) are no longer there; upload them again")
    return folder


def plan(photos: int) -> list[Stage]:
    return [
        Stage("prepare", "Reading the good photos", (), 2 + 0.02 * photos),
        Stage("features", "Describing every patch of the good photos", ("features",), _PER_PHOTO_S * 0.8 * photos),
        Stage("coreset", "Choosing the memory bank", ("coreset",), _CORESET_S),
        Stage(
            "threshold",
            "Setting the threshold on held-out photos",
            ("held-out", "labelled"),
            _PER_PHOTO_S * 0.2 * photos,
        ),
        Stage("export", "Exporting the fast scoring graph", ("export",), _EXPORT_S),
        Stage("register", "Registering the model", (), 2.0),
    ]


def good_percentile(params: dict[str, Any]) -> float:
    """The job's threshold percentile (how many good parts may be flagged by mistake); only the offered choices."""
    value = params.get("good_percentile", DEFAULT_PERCENTILE)
    if isinstance(value, bool) or not isinstance(value, int | float) or float(value) not in GOOD_FLAGGED_CHOICES:
        allowed = ", ".join(f"{p:g}" for p in GOOD_FLAGGED_CHOICES)
        raise ValueError(f"good_percentile must be one of {allowed}, not {value!r}")
    return float(value)


def run(ctx) -> dict[str, Any]:
    """Run one anomaly training job (``ctx``: :class:`visionqc.jobs.worker.JobContext`)."""
    from visionqc.model.anomaly import AnomalySettings
    from visionqc.training.anomaly import fit_anomaly, read_photos
    from visionqc.training.pipeline import reporting_to

    params = ctx.job["params"]
    registry = ModelRegistry(ctx.home)
    name = check_name(params["name"])
    percentile = good_percentile(params)
    folder = _photos_dir(ctx.home, params["good_photos"])
    version = registry.next_version(name)
    ctx.store.set_job_model(ctx.job_id, name, version)
    progress = ProgressFile(
        ctx.home, ctx.job_id, plan(int(params.get("photos") or 50)), extra={"model": {"name": name, "version": version}}
    )
    ctx.progress = progress
    progress.stage("prepare", "Reading the good photos")
    settings = AnomalySettings()
    good = read_photos([folder], settings.size)
    with reporting_to(progress):
        card = fit_anomaly(
            good,
            ctx.work_dir / "model",
            name=name,
            version=version,
            settings=settings,
            no_defect_label=params.get("no_defect_label") or "good",
            percentile=percentile,
            command=f"job {ctx.job_id}: anomaly model {name} v{version} from {len(good)} good photos",
        )
    progress.stage("register", f"Registering {name} v{version}")
    registered = registry.register(
        ctx.work_dir / "model", by=ctx.job.get("created_by"), source="trained", kind=KIND, job_id=ctx.job_id
    )
    shutil.rmtree(folder, ignore_errors=True)
    validation = card["metrics"]["validation"]
    return {
        "model": registered.ref(),
        "metrics": registered.metrics,
        "images": len(good),
        "unreadable": len(good.failures),
        "good_flagged_share": validation["good_flagged_share"],
    }


def describe(params: dict[str, Any]) -> str:
    share = GOOD_FLAGGED_CHOICES.get(params.get("good_percentile", DEFAULT_PERCENTILE))
    flagged = f", about {share} good parts flagged by mistake" if share else ""
    return f"anomaly model {params.get('name')} from {params.get('photos', '?')} good photos{flagged}"
