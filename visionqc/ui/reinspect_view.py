"""The Models page's "Re-inspect" tab: classify a batch, or everything History's filters select, again with
another version, into a new batch; then what changed (actions and defects, image by image).

The work is a job (:mod:`visionqc.jobs.reinspect_job`) run by the worker process: it carries on across reloads,
page changes and closed tabs, and the tab follows it live like a training job."""

from __future__ import annotations

import streamlit as st

from visionqc.filters import InspectionFilter
from visionqc.jobs import queue, reinspect_job
from visionqc.jobs.reinspect import MAX_IMAGES
from visionqc.registry import ModelRegistry
from visionqc.reporting import models as report
from visionqc.store import Store
from visionqc.ui.filters import hand_off
from visionqc.ui.jobs_view import finished_at, heading, render_jobs
from visionqc.ui.sidebar import last_reviewer
from visionqc.ui.tables import thumbnail_url

SOURCES = {"batch": "A batch", "history": "What History shows now (its filters)"}


def render_reinspect(store: Store, registry: ModelRegistry) -> None:
    source = st.radio("Re-inspect", list(SOURCES), format_func=SOURCES.get, horizontal=True, key="models_re_source")
    selection, described = _selection(store, source)
    versions = {v.label: v for v in registry.versions()}
    active = registry.active()
    labels = list(versions)
    default = labels.index(active.label) if active is not None and active.label in versions else 0
    picked = st.selectbox("With version", labels, index=default, key="models_re_version")
    count = store.count(selection) if selection is not None else 0
    if st.button(
        f"Re-inspect {count:,} image{'s' if count != 1 else ''} with {picked}",
        type="primary",
        icon=":material/replay:",
        key="models_re_go",
        disabled=not count or count > MAX_IMAGES,
    ):
        _submit(store, versions[picked], selection, described)
    if count > MAX_IMAGES:
        st.caption(f":orange[{count:,} images selected: re-inspect at most {MAX_IMAGES:,} at a time; narrow the "
                   "selection (History's filters) first.]")  # fmt: skip
    st.subheader("Re-inspections")
    render_jobs(store, (reinspect_job.KIND,), key="models_re_jobs", finished=_finished, empty="No re-inspections yet.")


def _selection(store: Store, source: str) -> tuple[InspectionFilter | None, str]:
    if source == "batch":
        batches = store.list_batches()
        if batches.empty:
            st.caption("No batches yet.")
            return None, ""
        labels = {
            b.batch_id: f"{b.batch_id} · {b.inspected} images · {b.model_name} v{b.model_version}"
            for b in batches.itertuples()
        }
        batch_id = st.selectbox("Batch", list(labels), format_func=labels.get, key="models_re_batch")
        return InspectionFilter(batches=(batch_id,)), f"batch {batch_id}"
    handed = st.session_state.get("history_filter")
    if not isinstance(handed, InspectionFilter):
        st.caption("Open **History**, set its filters, and come back: the same inspections are re-inspected here.")
        return None, ""
    st.caption(f"History's filters: {', '.join(handed.changed_fields()) or 'none (every inspection)'}.")
    return handed, "a History selection"


def _submit(store: Store, version, selection: InspectionFilter, described: str) -> None:
    """Queue the re-inspection of exactly the inspections selected now (their ids), with ``version``."""
    by = last_reviewer()
    ids = store.inspection_ids(selection)
    try:
        params = reinspect_job.params(ids, version, described)
    except ValueError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    job_id = queue.submit(store, reinspect_job.KIND, params, by=by or None, model_name=version.name)
    st.toast(f"Re-inspection {job_id} queued: {reinspect_job.describe(params)}", icon=":material/replay:")


def _finished(store: Store, job, newest: bool) -> None:
    result = job.result if isinstance(job.result, dict) else {}
    head = f"{heading(job)} · {finished_at(job)}"
    if job.status == "cancelled":
        st.info(f"{head}\n\nCancelled. {_partial(store, job)}", icon=":material/cancel:")
        return
    if job.status != "succeeded":
        st.error(f"{head}\n\nFailed: {job.error}. {_partial(store, job)}", icon=":material/error:")
        return
    st.success(
        f"{head}\n\nNew batch **{result.get('batch_id')}**: {result.get('inspected', 0):,} re-inspected, "
        f"{result.get('actions_changed', 0):,} action(s) and {result.get('defects_changed', 0):,} defect label(s) "
        f"changed, {result.get('failed', 0):,} could not be read.",
        icon=":material/check_circle:",
    )
    if newest:
        _show(store, job, result)


def _partial(store: Store, job) -> str:
    """What a re-inspection that stopped early left: its batch, with the images it finished."""
    batch_id = (job.progress or {}).get("batch_id")
    if not batch_id or store.batch(batch_id) is None:
        return "Nothing was written."
    done = store.count(InspectionFilter(batches=(batch_id,)))
    return f"Batch {batch_id} holds the {done:,} image(s) it re-inspected before it stopped."


def _show(store: Store, job, result: dict) -> None:
    changes = reinspect_job.changes(store.home, job.job_id)
    if changes is None:
        st.caption("The image-by-image comparison of this job is no longer on disk.")
        return
    changed = changes[changes["action_changed"] | changes["defect_changed"]] if len(changes) else changes
    if len(changed):
        st.dataframe(
            report.changes_table(changed, [thumbnail_url(t) for t in changed["thumb_file"]]),
            hide_index=True,
            width="stretch",
            row_height=64,
            key=f"models_re_changes_{job.job_id}",
            column_config={"Image": st.column_config.ImageColumn("Image", width="small")},
        )
    else:
        st.caption("Nothing changed: the new version gives every image the same defect and action.")
    if st.button("Open the new batch in History", icon=":material/history:", key=f"models_re_history_{job.job_id}"):
        hand_off(st.session_state, InspectionFilter(batches=(result["batch_id"],)))
        st.switch_page("pages/2_History.py")
