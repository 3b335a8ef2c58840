"""Inspecting uploads from the Inspect page: one batch per set of uploaded files, with a progress bar, never
classified twice on a rerun."""

from __future__ import annotations

import hashlib

import streamlit as st

from visionqc.intake.uploads import iter_named_bytes
from visionqc.store import StoreCorruptError, StoreError, StoreSpaceError
from visionqc.store.errors import format_bytes, space_needed
from visionqc.store.ingest import run_batch
from visionqc.ui import errors


def upload_key(files) -> str:
    """Identifies one set of uploaded files: the same files (by upload id, name and size) give the same key."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: (f.name, f.file_id)):
        digest.update(f"{f.file_id}\0{f.name}\0{f.size}\n".encode())
    return digest.hexdigest()[:16]


def expand_uploads(named_bytes):
    """(name, bytes) pairs -> the files and failures to inspect (zips unpacked safely, non-images reported)."""
    return list(iter_named_bytes(named_bytes))


_BATCHES = "_visionqc_inspected_uploads"  # upload key -> batch id, so a rerun never inspects the same files twice
_INTERRUPTED = "_visionqc_interrupted_uploads"  # upload key -> batch id a store error stopped: the next press resumes
CURRENT_BATCH = "inspect_batch_id"
RESULTS_TABLE = "inspect_results"


def _how_to_go_on(store, exc: StoreError, named_bytes) -> str:
    if exc.batch_id is None or isinstance(exc, StoreCorruptError):
        return ""
    need = ""
    if isinstance(exc, StoreSpaceError):
        sizes = [len(data) for _, data in named_bytes]
        need = (
            f"These uploads take {format_bytes(sum(sizes))}: free at least "
            f"{format_bytes(space_needed(sum(sizes), len(sizes)))} on that disk. "
        )
    return (
        f"{need}Then press **Inspect** again: batch `{exc.batch_id}` continues where it stopped, and the files it "
        "already holds are not inspected twice."
    )


def inspected_batch(key: str) -> str | None:
    return st.session_state.get(_BATCHES, {}).get(key)


def inspect_uploads(store, predictor, key: str, named_bytes, *, station: str, operator: str, note: str) -> str | None:
    """Inspect the uploaded files as one batch, with a progress bar; returns the batch id (``None``, with the
    reason shown, when the database failed).

    Remembered under ``key`` (see :func:`upload_key`): calling it again for the same uploads returns the
    batch already saved instead of classifying and saving the files a second time.
    """
    done_before = inspected_batch(key)
    if done_before is not None:
        st.session_state[CURRENT_BATCH] = done_before
        return done_before
    items = expand_uploads(named_bytes)
    interrupted = st.session_state.setdefault(_INTERRUPTED, {})
    bar = st.progress(0.0, text=f"Classifying {len(items)} files…")

    def progress(done: int, total: int | None) -> None:
        total = total or max(done, 1)
        bar.progress(min(done / total, 1.0), text=f"Classified {done} of {total} files")

    try:
        result = run_batch(
            store,
            predictor,
            items,
            station=station.strip() or None,
            operator=operator.strip() or None,
            note=note.strip() or None,
            source="app",
            progress=progress,
            batch_id=interrupted.get(key),
        )
    except StoreError as exc:
        bar.empty()
        if exc.batch_id is not None:
            interrupted[key] = exc.batch_id
        errors.show_store_error(exc, then=_how_to_go_on(store, exc, named_bytes))
        return None
    interrupted.pop(key, None)
    bar.empty()
    st.session_state.pop(RESULTS_TABLE, None)  # a row selected in the previous batch means nothing here
    st.session_state.setdefault(_BATCHES, {})[key] = result.batch_id
    st.session_state[CURRENT_BATCH] = result.batch_id
    return result.batch_id
