"""Run a batch: uploads -> predictor -> store, with duplicates, thumbnails and per-file failures.

Files stream through the predictor (decoding overlapped with inference) and are written to the store
in chunks, one transaction per chunk, so a crash mid-batch loses at most the chunk in flight and never
leaves half-written rows. The batch stays ``open`` until it completes; calling :func:`run_batch` again
with its ``batch_id`` and the same uploads resumes it, skipping every file the batch already holds.

A file whose bytes (SHA-256) were inspected before, in an earlier batch or earlier in this one, is a
*duplicate*: it is reported and recorded in ``duplicates`` with the earlier inspection, but not
classified or counted again. A look-up before classifying finds most of them; the store's image claims
(:mod:`visionqc.store.claims`) make it exact when several runs race: a file whose image another run wrote
first while this one was classifying it becomes a duplicate of that run's inspection.

Every file that cannot be read (an :class:`UploadFailure` or an :class:`ImageDecodeError`) is recorded in
``failures`` with its reason; the rest of the batch goes on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from visionqc.intake.uploads import UploadFailure, UploadFile
from visionqc.store.errors import StoreError
from visionqc.store.images import save_image
from visionqc.store.records import DuplicateRecord, FailureRecord, InspectionRecord, utc_now
from visionqc.store.store import Store

if TYPE_CHECKING:
    from visionqc.intake.imaging import DecodedImage
    from visionqc.model.predict import Prediction, Predictor

Progress = Callable[[int, int | None], None]
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


def inspection_record(
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
        anomaly_score=prediction.anomaly_score,
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
    part_number: str | None = None,
    lot: str | None = None,
    source: str = "app",
    progress: Progress | None = None,
    batch_id: str | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> BatchResult:
    """Classify ``uploads`` into the store as one batch and return what happened.

    ``uploads`` are what :mod:`visionqc.intake.uploads` yields (pass a list to get a real ``total`` in
    ``progress(done, total)``; for a generator ``total`` is ``None``). ``batch_id`` resumes an open
    batch: files whose name the batch already holds are skipped. Errors of the store or the model
    propagate (a :class:`StoreError` carries the ``batch_id`` to resume); everything written before them
    stays consistent and the batch stays resumable.
    """
    if batch_id is None:
        batch_id = store.create_batch(
            station=station,
            operator=operator,
            note=note,
            part_number=part_number,
            lot=lot,
            source=source,
            model_name=predictor.model_name,
            model_version=predictor.model_version,
        )
        already: set[str] = set()
    else:
        if store.batch(batch_id) is None:
            raise ValueError(f"there is no batch {batch_id!r} to resume")
        already = store.recorded_names(batch_id)
    total = len(uploads) if isinstance(uploads, Sized) else None
    run = _BatchRun(store, predictor, batch_id, already, progress, total, chunk_size)
    try:
        for (inspection_id, name, sha, data), decoded, prediction in predictor.predict_stream(run.to_classify(uploads)):
            run.classified(inspection_id, name, sha, data, decoded, prediction)
        run.flush()
        store.finish_batch(batch_id)
        run.result.summary = store.batch_summary(batch_id)
    except StoreError as exc:
        exc.batch_id = batch_id  # what was written stays; the caller tells the user how to resume
        raise
    return run.result


class _BatchRun:
    """The bookkeeping of one :func:`run_batch`: what is pending for the next chunk, which images were reserved
    in this run, and the in-batch copies waiting for their first file's outcome."""

    def __init__(self, store, predictor, batch_id, already, progress, total, chunk_size):
        self.store, self.predictor, self.already = store, predictor, already
        self.progress, self.total, self.chunk_size = progress, total, chunk_size
        self.result = BatchResult(batch_id=batch_id)
        self.pending_inspections: list[InspectionRecord] = []
        self.pending_duplicates: list[DuplicateRecord] = []
        self.pending_failures: list[FailureRecord] = []
        self.run_ids: dict[str, int] = {}  # sha -> inspection id reserved in this run
        self.outcome: dict[int, str | None] = {}  # reserved id -> None when classified, else the failure reason
        self.waiting: dict[int, list[str]] = {}  # reserved id -> names of in-batch duplicates not yet resolved
        self.lost: dict[int, int] = {}  # reserved id whose image another run wrote first -> that run's inspection
        self.done = 0

    def tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)

    def fail(self, name: str, reason: str) -> None:
        record = FailureRecord(name, reason)
        self.pending_failures.append(record)
        self.result.failures.append(record)

    def duplicate(self, name: str, sha: str, earlier: int) -> None:
        record = DuplicateRecord(name, sha, self.lost.get(earlier, earlier))
        self.pending_duplicates.append(record)
        self.result.duplicates.append(record)

    def resolve(self, inspection_id: int, sha: str) -> None:
        """The first file of an image is done: its in-batch copies become duplicates of it, or fail with it."""
        reason = self.outcome[inspection_id]
        for name in self.waiting.pop(inspection_id, []):
            if reason is None:
                self.duplicate(name, sha, inspection_id)
            else:
                self.fail(name, reason)

    def flush(self) -> None:
        lost = self.store.write_chunk(
            self.result.batch_id, self.pending_inspections, self.pending_duplicates, self.pending_failures
        )
        for record in self.pending_inspections:
            if record.inspection_id in lost:  # another run wrote this image first: the store kept a duplicate
                self.result.duplicates.append(
                    DuplicateRecord(record.file_name, record.sha256, lost[record.inspection_id], record.created_at)
                )
            else:
                self.result.inspection_ids.append(record.inspection_id)
        if lost:
            self.lost.update(lost)
            for record in self.result.duplicates:
                record.inspection_id = lost.get(record.inspection_id, record.inspection_id)
        self.pending_inspections.clear()
        self.pending_duplicates.clear()
        self.pending_failures.clear()

    def to_classify(self, uploads) -> Iterator[tuple[tuple[int, str, str, bytes], bytes]]:
        """The files to classify, as ``((reserved id, name, sha, bytes), bytes)``; everything else (skipped,
        unreadable, duplicates) is recorded on the way."""
        for group in _groups(uploads, LOOKUP_SIZE):
            files = self._readable(group)
            earlier = self.store.earlier_inspections([sha for _, sha in files if sha not in self.run_ids])
            new: dict[str, UploadFile] = {}
            copies: list[tuple[str, str]] = []  # (name, sha) of second copies of a file new in this group
            for item, sha in files:
                if sha in self.run_ids:
                    first = self.run_ids[sha]
                    self.waiting.setdefault(first, []).append(item.name)
                    if first in self.outcome:
                        self.resolve(first, sha)
                    self.tick()
                elif sha in new:
                    copies.append((item.name, sha))
                elif sha in earlier:
                    self.duplicate(item.name, sha, earlier[sha])
                    self.tick()
                else:
                    new[sha] = item
            ids = self.store.reserve_inspection_ids(len(new))
            for sha, inspection_id in zip(new, ids, strict=True):
                self.run_ids[sha] = inspection_id
            for name, sha in copies:
                self.waiting.setdefault(self.run_ids[sha], []).append(name)
                self.tick()
            for sha, item in new.items():
                yield (self.run_ids[sha], item.name, sha, item.data), item.data

    def _readable(self, group: list[UploadFile | UploadFailure]) -> list[tuple[UploadFile, str]]:
        """The group's files with their SHA-256, after recording skipped (resumed) and unreadable ones."""
        files = []
        for item in group:
            if item.name in self.already:
                self.result.skipped += 1
                self.tick()
            elif isinstance(item, UploadFailure):
                self.fail(item.name, item.reason)
                self.tick()
            else:
                files.append((item, sha256_hex(item.data)))
        return files

    def classified(self, inspection_id: int, name: str, sha: str, data: bytes, decoded, prediction) -> None:
        """One file came back from the predictor: keep its inspection (or its failure) for the next chunk."""
        if isinstance(prediction, Exception):
            self.outcome[inspection_id] = str(prediction)
            self.fail(name, str(prediction))
        else:
            paths = save_image(self.store.images, sha, data, decoded)
            record = inspection_record(self.predictor, inspection_id, name, sha, data, decoded, prediction, paths)
            self.pending_inspections.append(record)
            self.outcome[inspection_id] = None
        self.resolve(inspection_id, sha)
        self.tick()
        pending = len(self.pending_inspections) + len(self.pending_duplicates) + len(self.pending_failures)
        if pending >= self.chunk_size:
            self.flush()
