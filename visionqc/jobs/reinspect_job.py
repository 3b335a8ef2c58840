"""The re-inspection job: the Models page's "Re-inspect" runs here, in the worker process, not in the script run.

Re-inspecting thousands of images takes minutes; in the page's script run it would die with a reload or a closed
tab, and hold the session meanwhile. The page resolves the lead's selection to inspection ids when they press the
button (the job re-inspects exactly the images they saw selected, whatever is added later), and queues a job with
the version to use. The job writes the new batch chunk by chunk (:func:`visionqc.jobs.reinspect.reinspect`: each
chunk is one transaction) and the per-image comparison as ``changes.parquet`` beside its progress, where the page
reads it. A cancelled or killed job leaves a batch holding the images it finished, each whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from visionqc.filters import InspectionFilter
from visionqc.jobs.progress import ProgressFile, Stage, job_dir
from visionqc.jobs.reinspect import MAX_IMAGES, reinspect
from visionqc.registry import ModelRegistry
from visionqc.training.pipeline import Step

KIND = "reinspect"
CHANGES_FILE = "changes.parquet"
STAGE_DESC = "Re-inspecting"
# Seconds per image on 2 shared cores (decode, classify, heatmap, thumbnails, write) and to load a model.
_PER_IMAGE_S, _LOAD_S = 0.08, 3.0


def params(ids: list[int], version, described: str) -> dict[str, Any]:
    """The job's parameters: the inspections (ids, fixed when the lead pressed the button), the version to use
    (``{"name", "version"}`` as the registry names it) and what was selected, in words."""
    return {"ids": _checked(ids), "model": version.ref(), "described": described}


def _checked(ids) -> list[int]:
    """The inspection ids, sorted and once each: at least one, at most :data:`MAX_IMAGES`."""
    ids = sorted({int(i) for i in ids})
    if not ids:
        raise ValueError("nothing to re-inspect: the selection holds no inspections")
    if len(ids) > MAX_IMAGES:
        raise ValueError(f"{len(ids):,} inspections selected; re-inspect at most {MAX_IMAGES:,} at a time")
    return ids


def plan(images: int) -> list[Stage]:
    return [
        Stage("load", "Loading the model", (), _LOAD_S),
        Stage("reinspect", "Re-inspecting the images", (STAGE_DESC,), _PER_IMAGE_S * images),
    ]


def run(ctx) -> dict[str, Any]:
    """Run one re-inspection job (``ctx``: :class:`visionqc.jobs.worker.JobContext`)."""
    from visionqc.model.predict import open_predictor

    job_params = ctx.job["params"]
    ids = _checked(job_params.get("ids") or [])  # the job's row is read back: checked as when it was queued
    model = job_params.get("model") or {}
    version = ModelRegistry(ctx.home).get(str(model.get("name")), str(model.get("version")))
    progress = ProgressFile(ctx.home, ctx.job_id, plan(len(ids)), extra={"model": version.ref()})
    ctx.progress = progress
    progress.stage("load", f"Loading {version.label}")
    predictor = open_predictor(version.path)

    def report(done: int, total: int) -> None:
        progress([Step(STAGE_DESC, done, total)])  # also raises JobCancelled when someone asked

    result = reinspect(
        ctx.store,
        predictor,
        InspectionFilter(ids=tuple(ids)),
        described=str(job_params.get("described") or f"{len(ids):,} inspections"),
        operator=ctx.job.get("created_by"),
        progress=report,
        started=lambda batch_id: progress.extra.update(batch_id=batch_id),
    )
    result.changes.to_parquet(job_dir(ctx.home, ctx.job_id) / CHANGES_FILE, index=False)
    return {
        "batch_id": result.batch_id,
        "version": version.label,
        "inspected": result.inspected,
        "failed": result.failed,
        "actions_changed": result.actions_changed,
        "defects_changed": result.defects_changed,
    }


def changes(home: Path, job_id: str) -> pd.DataFrame | None:
    """What a finished re-inspection changed, image by image (``None`` when the job left no comparison)."""
    path = job_dir(home, job_id) / CHANGES_FILE
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError):
        return None


def describe(params: dict[str, Any]) -> str:
    model = params.get("model") or {}
    images = len(params.get("ids") or [])
    return (
        f"re-inspect {params.get('described') or 'a selection'} ({images:,} image{'s' if images != 1 else ''}) "
        f"with {model.get('name')} v{model.get('version')}"
    )
