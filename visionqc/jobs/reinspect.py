"""Re-inspect: classify stored inspections again with another model version, into a new batch, and say what changed.

The images come from the image folder (the bytes that were inspected), the new batch records which model
classified it and what it re-inspected (its note), and nothing of the original inspections changes. Unlike an
upload, an image seen before is classified again: that is the point. What changed compares each image's new
prediction with its original effective labels (a person's correction if there is one, else the old prediction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from visionqc.filters import InspectionFilter
from visionqc.intake.imaging import ImageDecodeError
from visionqc.store import FailureRecord, Store
from visionqc.store.images import save_image
from visionqc.store.ingest import CHUNK_SIZE, inspection_record

Progress = Callable[[int, int], None]
MAX_IMAGES = 20_000


@dataclass
class Reinspection:
    batch_id: str
    inspected: int
    failed: int
    changes: pd.DataFrame  # one row per image: original and new defect / action, and whether each changed

    @property
    def actions_changed(self) -> int:
        return int(self.changes["action_changed"].sum()) if len(self.changes) else 0

    @property
    def defects_changed(self) -> int:
        return int(self.changes["defect_changed"].sum()) if len(self.changes) else 0


def reinspect(
    store: Store,
    predictor,
    selection: InspectionFilter,
    *,
    described: str,
    operator: str | None = None,
    progress: Progress | None = None,
    started: Callable[[str], None] | None = None,
) -> Reinspection:
    """Classify the inspections ``selection`` picks with ``predictor`` into a new batch (its note says it is a
    re-inspection of ``described``; ``started(batch id)`` is told it before any image); returns the batch and what
    changed."""
    originals, total = store.search(selection, sort="inspection_id", descending=False, page_size=0)
    if total == 0:
        raise ValueError("nothing to re-inspect: the selection holds no inspections")
    if total > MAX_IMAGES:
        raise ValueError(f"{total:,} inspections selected; re-inspect at most {MAX_IMAGES:,} at a time")
    originals = originals.drop_duplicates("sha256")
    batch_id = store.create_batch(
        station=None,
        operator=operator,
        note=f"re-inspection of {described} with {predictor.model_name} v{predictor.model_version}",
        source="app",
        model_name=predictor.model_name,
        model_version=predictor.model_version,
    )
    if started is not None:
        started(batch_id)
    ids = iter(store.reserve_inspection_ids(len(originals)))
    pending, failures, new_rows = [], [], {}

    def images():
        for row in originals.itertuples(index=False):
            try:
                data = Path(row.image_file).read_bytes()
            except (OSError, TypeError):
                failures.append(FailureRecord(row.file_name, "the stored image is missing from the image folder"))
                continue
            yield (row.inspection_id, row.file_name, row.sha256, data), data

    stream = predictor.predict_stream(images())
    for done, ((original_id, name, sha, data), decoded, prediction) in enumerate(stream, start=1):
        if isinstance(prediction, ImageDecodeError):
            failures.append(FailureRecord(name, str(prediction)))
        else:
            paths = save_image(store.images, sha, data, decoded)
            record = inspection_record(predictor, next(ids), name, sha, data, decoded, prediction, paths)
            pending.append(record)
            new_rows[original_id] = (record.pred_defect, record.pred_action, record.inspection_id)
        if progress is not None:
            progress(done, len(originals))
        if len(pending) >= CHUNK_SIZE:
            store.write_chunk(batch_id, pending, second_opinion=True)
            pending = []
    store.write_chunk(batch_id, pending, failures=failures, second_opinion=True)
    store.finish_batch(batch_id)
    return Reinspection(batch_id, len(new_rows), len(failures), _changes(originals, new_rows))


def _changes(originals: pd.DataFrame, new_rows: dict[int, tuple]) -> pd.DataFrame:
    rows = []
    for row in originals.itertuples(index=False):
        if row.inspection_id not in new_rows:
            continue
        defect, action, new_id = new_rows[row.inspection_id]
        rows.append(
            {
                "file_name": row.file_name,
                "original_inspection_id": int(row.inspection_id),
                "new_inspection_id": int(new_id),
                "thumb_file": row.thumb_file,
                "original_model": f"{row.model_name} v{row.model_version}",
                "original_defect": row.defect,
                "new_defect": defect,
                "original_action": row.action,
                "new_action": action,
                "defect_changed": row.defect != defect,
                "action_changed": row.action != action,
            }
        )
    return pd.DataFrame(rows)
