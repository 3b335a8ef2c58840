"""What ingest hands to the store: one record per classified image, duplicate or failed file, and the
Arrow layouts DuckDB reads them from in one insert per table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa


def utc_now() -> datetime:
    """Now as a naive UTC datetime, the form every timestamp column holds."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class InspectionRecord:
    """One classified image, ready to be written (built by :mod:`visionqc.store.ingest`)."""

    inspection_id: int
    sha256: str
    file_name: str
    created_at: datetime
    model_name: str
    model_version: str
    no_defect_label: str
    pred_defect: str
    pred_defect_conf: float
    pred_severity: str | None
    pred_severity_conf: float | None
    pred_location: str | None
    pred_location_conf: float | None
    pred_action: str
    probabilities: dict[str, dict[str, float]]
    ood_score: float | None
    needs_review: bool
    review_reason: str | None
    embedding: np.ndarray
    # the image row (inserted once per SHA-256)
    width: int
    height: int
    format: str
    byte_size: int
    path: str  # relative to the data directory, POSIX separators
    thumb_path: str
    anomaly_score: float | None = None  # an anomaly model's score (above its card's threshold = defect)


@dataclass
class DuplicateRecord:
    file_name: str
    sha256: str
    inspection_id: int  # the earlier inspection of the same bytes
    created_at: datetime = field(default_factory=utc_now)


@dataclass
class FailureRecord:
    file_name: str
    reason: str
    created_at: datetime = field(default_factory=utc_now)


# Arrow layouts of the chunk tables ingest hands to DuckDB (column names match the tables).
IMAGE_SCHEMA = pa.schema(
    [
        ("sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("byte_size", pa.int64()),
        ("path", pa.string()),
        ("thumb_path", pa.string()),
        ("first_seen", pa.timestamp("us")),
    ]
)
INSPECTION_SCHEMA = pa.schema(
    [
        ("inspection_id", pa.int64()),
        ("batch_id", pa.string()),
        ("sha256", pa.string()),
        ("file_name", pa.string()),
        ("created_at", pa.timestamp("us")),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("no_defect_label", pa.string()),
        ("pred_defect", pa.string()),
        ("pred_defect_conf", pa.float64()),
        ("pred_severity", pa.string()),
        ("pred_severity_conf", pa.float64()),
        ("pred_location", pa.string()),
        ("pred_location_conf", pa.float64()),
        ("pred_action", pa.string()),
        pa.field("probabilities", pa.string(), metadata={"sql_type": "JSON"}),  # a json column on PostgreSQL
        ("ood_score", pa.float64()),
        ("needs_review", pa.bool_()),
        ("review_reason", pa.string()),
        ("anomaly_score", pa.float64()),
    ]
)
EMBEDDING_SCHEMA = pa.schema([("inspection_id", pa.int64()), ("vector", pa.list_(pa.float32()))])
DUPLICATE_SCHEMA = pa.schema(
    [
        ("file_name", pa.string()),
        ("sha256", pa.string()),
        ("inspection_id", pa.int64()),
        ("created_at", pa.timestamp("us")),
    ]
)
FAILURE_SCHEMA = pa.schema([("file_name", pa.string()), ("reason", pa.string()), ("created_at", pa.timestamp("us"))])


def arrow_table(schema: pa.Schema, records: Sequence[Any], **columns: list[Any]) -> pa.Table:
    """An Arrow table of ``schema`` from dataclass records; ``columns`` gives values not read from attributes."""
    return pa.table(
        {
            f.name: pa.array(columns[f.name] if f.name in columns else [getattr(r, f.name) for r in records], f.type)
            for f in schema
        },
        schema=schema,
    )
