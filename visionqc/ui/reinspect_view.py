"""The Models page's "Re-inspect" tab: classify a batch, or everything History's filters select, again with
another version, into a new batch; then what changed (actions and defects, image by image)."""

from __future__ import annotations

import streamlit as st

from visionqc.filters import InspectionFilter
from visionqc.jobs.reinspect import MAX_IMAGES, reinspect
from visionqc.model.card import ModelLoadError
from visionqc.registry import ModelRegistry
from visionqc.reporting import models as report
from visionqc.store import Store
from visionqc.ui import resources
from visionqc.ui.filters import hand_off
from visionqc.ui.tables import thumbnail_url

SOURCES = {"batch": "A batch", "history": "What History shows now (its filters)"}
RESULT = "models_reinspect_result"


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
        _run(store, versions[picked], selection, described)
    _show(st.session_state.get(RESULT))


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


def _run(store: Store, version, selection: InspectionFilter, described: str) -> None:
    try:
        predictor = resources.predictor_for(version.path)
    except ModelLoadError as exc:
        st.error(f"{version.label} cannot be loaded: {exc}", icon=":material/error:")
        return
    bar = st.progress(0.0, text="Re-inspecting…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Re-inspected {done:,} of {total:,} images")

    try:
        result = reinspect(store, predictor, selection, described=described, progress=progress)
    except ValueError as exc:
        bar.empty()
        st.error(str(exc), icon=":material/error:")
        return
    bar.empty()
    st.session_state[RESULT] = (result, version.label, described)


def _show(done) -> None:
    if done is None:
        return
    result, label, described = done
    st.subheader(f"New batch {result.batch_id}: {described} re-inspected with {label}")
    cols = st.columns(4)
    cols[0].metric("Re-inspected", f"{result.inspected:,}", border=True)
    cols[1].metric("Actions changed", f"{result.actions_changed:,}", border=True)
    cols[2].metric("Defect labels changed", f"{result.defects_changed:,}", border=True)
    cols[3].metric("Could not be read", f"{result.failed:,}", border=True)
    changed = (
        result.changes[result.changes["action_changed"] | result.changes["defect_changed"]]
        if len(result.changes)
        else result.changes
    )
    if len(changed):
        st.dataframe(
            report.changes_table(changed, [thumbnail_url(t) for t in changed["thumb_file"]]),
            hide_index=True,
            width="stretch",
            row_height=64,
            key="models_re_changes",
            column_config={"Image": st.column_config.ImageColumn("Image", width="small")},
        )
    else:
        st.caption("Nothing changed: the new version gives every image the same defect and action.")
    if st.button("Open the new batch in History", icon=":material/history:", key="models_re_history"):
        hand_off(st.session_state, InspectionFilter(batches=(result.batch_id,)))
        st.switch_page("pages/2_History.py")
