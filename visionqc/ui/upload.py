"""Inspecting uploads from the Inspect page: one batch per set of uploaded files, with a progress bar, never
classified twice on a rerun."""

from __future__ import annotations

import hashlib

import streamlit as st

from visionqc.intake.uploads import iter_named_bytes
from visionqc.store import StoreCorruptError, StoreError, StoreSpaceError
from visionqc.store.errors import format_bytes, space_needed
from visionqc.store.ingest import run_batch
from visionqc.ui import auth, errors


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


def inspect_uploads(store, predictor, key: str, named_bytes, *, details: dict[str, str | None]) -> str | None:
    """Inspect the uploaded files as one batch, with a progress bar; returns the batch id (``None``, with the
    reason shown, when the database failed).

    Remembered under ``key`` (see :func:`upload_key`): calling it again for the same uploads returns the
    batch already saved instead of classifying and saving the files a second time. ``details`` are the
    batch's station, operator, part number, lot and note (:func:`batch_details`).
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
            **details,
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
    st.session_state.setdefault(_BATCHES, {})[key] = result.batch_id
    st.session_state[CURRENT_BATCH] = result.batch_id
    return result.batch_id


UPLOAD_GENERATION = "inspect_upload_generation"  # part of the uploaders' keys: a new value empties them


def uploader_key(name: str) -> str:
    return f"{name}_{st.session_state.get(UPLOAD_GENERATION, 0)}"


def new_batch() -> None:
    """Empty the uploaders and forget the batch shown (the "New batch" button)."""
    st.session_state[UPLOAD_GENERATION] = st.session_state.get(UPLOAD_GENERATION, 0) + 1
    st.session_state.pop(CURRENT_BATCH, None)


def batch_details(store) -> dict[str, str | None]:
    """Station and operator (pick-lists that fill from use: pick one or type a new one), part number, lot and a
    note, for the next batch."""
    row = st.columns([1, 1, 1, 1])
    details: dict[str, str | None] = {}
    for column, (field, label, hint) in zip(row[:2], PICKED_DETAILS, strict=True):
        if field == "operator" and auth.signed_in_name():  # signed in: the operator is who is signed in
            details[field] = column.text_input(label, auth.signed_in_name(), disabled=True, help="Who is signed in.")
            continue
        details[field] = column.selectbox(
            label,
            store.distinct_values(field),
            index=None,
            accept_new_options=True,
            placeholder=hint,
            key=f"inspect_{field}",
            help="Pick one used before, or type a new one.",
        )
    details["part_number"] = row[2].text_input("Part number (optional)", key="inspect_part_number")
    details["lot"] = row[3].text_input("Lot (optional)", key="inspect_lot")
    details["note"] = st.text_input("Note", key="inspect_note", placeholder="Anything worth knowing about this batch")
    return {k: (v.strip() or None) if isinstance(v, str) else None for k, v in details.items()}


PICKED_DETAILS = (
    ("station", "Station", "e.g. Line 2 camera A"),
    ("operator", "Operator", "Who inspects this batch"),
)
QUICK_FILTERS = {"all": "All", "Reject": "Reject", "Hold": "Hold", "Rework": "Rework", "Review": "Review"}


def quick_filter(rows, key: str):
    """All / Reject / Hold / Rework / Review, with their counts; returns the rows to show."""
    counts = rows["action"].value_counts() if len(rows) else {}
    options = list(QUICK_FILTERS)  # always all of them: a choice never vanishes under the user's click

    def label(option: str) -> str:
        n = len(rows) if option == "all" else int(counts.get(option, 0))
        return f"{QUICK_FILTERS[option]} ({n:,})"

    chosen = st.segmented_control("Show", options, format_func=label, default="all", key=key) or "all"
    return rows if chosen == "all" else rows[rows["action"] == chosen]
