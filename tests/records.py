"""Synthetic inspection rows for tests that need exact, hand-countable data in a real store."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from visionqc.store import InspectionRecord


def synthetic_record(
    inspection_id: int,
    *,
    created_at: datetime,
    defect: str,
    severity: str | None = None,
    location: str | None = None,
    action: str = "Pass",
    needs_review: bool = False,
    model_name: str = "magnetic-tile",
    model_version: str = "1.0",
    no_defect_label: str = "free",
    embedding: np.ndarray | None = None,
) -> InspectionRecord:
    """One classified image as ingest would write it, with the labels given and plain values elsewhere."""
    sha = f"{inspection_id:064x}"
    return InspectionRecord(
        inspection_id=inspection_id,
        sha256=sha,
        file_name=f"tile_{inspection_id}.jpg",
        created_at=created_at,
        model_name=model_name,
        model_version=model_version,
        no_defect_label=no_defect_label,
        pred_defect=defect,
        pred_defect_conf=0.9,
        pred_severity=severity,
        pred_severity_conf=None if severity is None else 0.8,
        pred_location=location,
        pred_location_conf=None if location is None else 0.7,
        pred_action=action,
        probabilities={"defect": {defect: 0.9}},
        ood_score=0.1,
        needs_review=needs_review,
        review_reason="low confidence" if needs_review else None,
        embedding=np.zeros(8, dtype=np.float32) if embedding is None else embedding,
        width=64,
        height=64,
        format="JPEG",
        byte_size=100,
        path=f"images/{sha[:2]}/{sha}.jpg",
        thumb_path=f"thumbs/{sha[:2]}/{sha}.jpg",
    )


def seed_inspections(home, rows: int, **options):
    """A store under ``home`` with ``rows`` synthetic inspections from ``benchmarks/seed.py`` (SQL only: fast
    at any size); ``options`` go to its ``seed_inspections`` (``days``, ``end``, ...). Returns the Store."""
    import importlib.util

    from visionqc.config import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location("vq_seed", PROJECT_ROOT / "benchmarks" / "seed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.seed_inspections(home, rows, **options)
