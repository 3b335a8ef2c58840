"""Run a batch: uploads -> predictor -> store, with duplicates, thumbnails and per-file failures.

Files stream through the predictor (decoding overlapped with inference) and are written to the store
in chunks, one transaction per chunk, so a crash mid-batch loses at most the chunk in flight and never
leaves half-written rows. The batch stays ``open`` until it completes; calling :func:`run_batch` again
with its ``batch_id`` and the same uploads resumes it, skipping every file the batch already holds.

A file whose bytes (SHA-256) were inspected before, in an earlier batch or earlier in this one, is a
*duplicate*: it is reported and recorded in ``duplicates`` with the earlier inspection, but not
classified or counted again. Every file that cannot be read (an :class:`UploadFailure` or an
:class:`ImageDecodeError`) is recorded in ``failures`` with its reason; the rest of the batch goes on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionqc.imaging import thumbnail_jpeg
from visionqc.store import DuplicateRecord, FailureRecord, InspectionRecord, Store, utc_now
from visionqc.uploads import UploadFailure, UploadFile

if TYPE_CHECKING:
    from visionqc.imaging import DecodedImage
    from visionqc.predict import Prediction, Predictor

Progress = Callable[[int, int | None], None]
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "BMP": "bmp", "TIFF": "tif", "WEBP": "webp", "GIF": "gif"}
CHUNK_SIZE = 32  # files per transaction: small enough that a crash loses little, large enough to be cheap
LOOKUP_SIZE = 64  # files per duplicate look-up


@dataclass
class BatchResult:
    """What one run of :func:`run_batch` did, plus the whole batch's summary from the store."""

    batch_id: str
    inspection_ids: list[int] = field(default_factory=list)  # new inspections written by this run
    duplicates: list[DuplicateRecord] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    skipped: int = 0  # files the batch already held (when resuming)
    summary: dict[str, Any] = field(default_factory=dict)  # Store.batch_summary of the whole batch

    @property
    def inspected(self) -> int:
        return len(self.inspection_ids)

    @property
    def files(self) -> int:
        return self.inspected + len(self.duplicates) + len(self.failures) + self.skipped


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_once(path: Path, data: bytes) -> None:
    """Write a content-addressed file atomically; an existing file already holds the same bytes."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_image(home: Path, sha: str, data: bytes, decoded: DecodedImage) -> tuple[str, str]:
    """Store the original bytes and a thumbnail under ``home``; returns their relative paths."""
    ext = EXTENSIONS.get(decoded.format, "img")
    image_rel = f"images/{sha[:2]}/{sha}.{ext}"
    thumb_rel = f"thumbs/{sha[:2]}/{sha}.jpg"
    _write_once(home / image_rel, data)
    if not (home / thumb_rel).exists():
        _write_once(home / thumb_rel, thumbnail_jpeg(decoded.image))
    return image_rel, thumb_rel


def _record(
    predictor: Predictor,
    inspection_id: int,
    name: str,
    sha: str,
    data: bytes,
    decoded: DecodedImage,
    prediction: Prediction,
    paths: tuple[str, str],
) -> InspectionRecord:
    tasks = prediction.tasks
    defect = prediction.defect
    severity = tasks.get("severity")
    location = tasks.get("location")
    return InspectionRecord(
        inspection_id=inspection_id,
        sha256=sha,
        file_name=name,
        created_at=utc_now(),
        model_name=predictor.model_name,
        model_version=predictor.model_version,
        no_defect_label=predictor.card.no_defect_class,
        pred_defect=defect.label,
        pred_defect_conf=defect.confidence,
        pred_severity=severity.label if severity else None,
        pred_severity_conf=severity.confidence if severity else None,
        pred_location=location.label if location else None,
        pred_location_conf=location.confidence if location else None,
        pred_action=prediction.action,
        probabilities={task: result.probabilities for task, result in tasks.items()},
        ood_score=prediction.ood_score,
        needs_review=prediction.needs_review,
        review_reason=prediction.review_reason,
        embedding=prediction.embedding,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        byte_size=len(data),
        path=paths[0],
        thumb_path=paths[1],
    )


def _groups(items: Iterable[UploadFile | UploadFailure], size: int) -> Iterator[list[UploadFile | UploadFailure]]:
    group: list[UploadFile | UploadFailure] = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def run_batch(
    store: Store,
    predictor: Predictor,
    uploads: Iterable[UploadFile | UploadFailure],
    *,
    station: str | None = None,
    operator: str | None = None,
    note: str | None = None,
    source: str = "app",
    progress: Progress | None = None,
    batch_id: str | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> BatchResult:
    """Classify ``uploads`` into the store as one batch and return what happened.

    ``uploads`` are what :mod:`visionqc.uploads` yields (pass a list to get a real ``total`` in
    ``progress(done, total)``; for a generator ``total`` is ``None``). ``batch_id`` resumes an open
    batch: files whose name the batch already holds are skipped. Errors of the store or the model
    propagate; everything written before them stays consistent and the batch stays resumable.
    """
    total = len(uploads) if isinstance(uploads, Sized) else None
    if batch_id is None:
        batch_id = store.create_batch(
            station=station,
            operator=operator,
            note=note,
            source=source,
            model_name=predictor.model_name,
            model_version=predictor.model_version,
        )
        already: set[str] = set()
    else:
        if store.batch(batch_id) is None:
            raise ValueError(f"there is no batch {batch_id!r} to resume")
        already = store.recorded_names(batch_id)

    result = BatchResult(batch_id=batch_id)
    pending_inspections: list[InspectionRecord] = []
    pending_duplicates: list[DuplicateRecord] = []
    pending_failures: list[FailureRecord] = []
    run_ids: dict[str, int] = {}  # sha -> inspection id reserved in this run
    outcome: dict[int, str | None] = {}  # reserved id -> None when classified, else the failure reason
    waiting: dict[int, list[str]] = {}  # reserved id -> names of in-batch duplicates not yet resolved
    done = 0

    def tick(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    def fail(name: str, reason: str) -> None:
        record = FailureRecord(name, reason)
        pending_failures.append(record)
        result.failures.append(record)

    def duplicate(name: str, sha: str, earlier: int) -> None:
        record = DuplicateRecord(name, sha, earlier)
        pending_duplicates.append(record)
        result.duplicates.append(record)

    def resolve(inspection_id: int, sha: str) -> None:
        reason = outcome[inspection_id]
        for name in waiting.pop(inspection_id, []):
            if reason is None:
                duplicate(name, sha, inspection_id)
            else:
                fail(name, reason)

    def flush() -> None:
        store.write_chunk(batch_id, pending_inspections, pending_duplicates, pending_failures)
        result.inspection_ids.extend(r.inspection_id for r in pending_inspections)
        pending_inspections.clear()
        pending_duplicates.clear()
        pending_failures.clear()

    def to_classify() -> Iterator[tuple[tuple[int, str, str, bytes], bytes]]:
        for group in _groups(uploads, LOOKUP_SIZE):
            files: list[tuple[UploadFile, str]] = []
            for item in group:
                if item.name in already:
                    result.skipped += 1
                    tick()
                elif isinstance(item, UploadFailure):
                    fail(item.name, item.reason)
                    tick()
                else:
                    files.append((item, sha256_hex(item.data)))
            earlier = store.earlier_inspections([sha for _, sha in files if sha not in run_ids])
            new: dict[str, UploadFile] = {}
            copies: list[tuple[str, str]] = []  # (name, sha) of second copies of a file new in this group
            for item, sha in files:
                if sha in run_ids:
                    first = run_ids[sha]
                    waiting.setdefault(first, []).append(item.name)
                    if first in outcome:
                        resolve(first, sha)
                    tick()
                elif sha in new:
                    copies.append((item.name, sha))
                elif sha in earlier:
                    duplicate(item.name, sha, earlier[sha])
                    tick()
                else:
                    new[sha] = item
            ids = store.reserve_inspection_ids(len(new))
            for sha, inspection_id in zip(new, ids, strict=True):
                run_ids[sha] = inspection_id
            for name, sha in copies:
                waiting.setdefault(run_ids[sha], []).append(name)
                tick()
            for sha, item in new.items():
                yield (run_ids[sha], item.name, sha, item.data), item.data

    for (inspection_id, name, sha, data), decoded, prediction in predictor.predict_stream(to_classify()):
        if isinstance(prediction, Exception):
            outcome[inspection_id] = str(prediction)
            fail(name, str(prediction))
        else:
            paths = save_image(store.home, sha, data, decoded)
            pending_inspections.append(_record(predictor, inspection_id, name, sha, data, decoded, prediction, paths))
            outcome[inspection_id] = None
        resolve(inspection_id, sha)
        tick()
        if len(pending_inspections) + len(pending_duplicates) + len(pending_failures) >= chunk_size:
            flush()
    flush()
    store.finish_batch(batch_id)
    result.summary = store.batch_summary(batch_id)
    return result
