"""The Models page's job lists: every queued and running job live (stage, detail, time left, cancel), the last few
finished ones in full and older ones in a table. The jobs run in the worker process (:mod:`visionqc.jobs`), so a
list is only a view: it refreshes itself every few seconds while a job is queued or running."""

from __future__ import annotations

import time
from collections.abc import Callable

import streamlit as st

from visionqc.jobs import queue
from visionqc.store import Store

REFRESH_S = 2
RECENT = 3  # finished jobs shown in full; older ones in a table


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def render_jobs(
    store: Store, kinds: tuple[str, ...], *, key: str, finished: Callable[[Store, object, bool], None], empty: str
) -> None:
    """The jobs of ``kinds``; ``finished(store, job, newest)`` shows one that ended (``newest``: the latest)."""
    busy = store.count_jobs("queued", "running", kinds=kinds) > 0
    st.fragment(_panel, run_every=REFRESH_S if busy else None)(store, kinds, key, finished, empty)


def _panel(store: Store, kinds: tuple[str, ...], key: str, finished, empty: str) -> None:
    queue.reconcile(store)
    jobs = queue.jobs_with_progress(store, limit=15, kinds=kinds)
    if jobs.empty:
        st.caption(empty)
        return
    active = jobs[jobs["status"].isin(["queued", "running"])]
    running_now, seen = set(active["job_id"]), f"{key}_running"
    if running_now != st.session_state.get(seen, running_now) and not running_now:
        st.session_state[seen] = running_now
        st.rerun(scope="app")  # a job ended: the versions, the batches and the sidebar change
    st.session_state[seen] = running_now
    for job in active.itertuples(index=False):
        _active_job(store, job)
    done = jobs[~jobs["status"].isin(["queued", "running"])]
    for i, job in enumerate(done.head(RECENT).itertuples(index=False)):
        finished(store, job, i == 0)
    if len(done) > RECENT:
        with st.expander(f"Older jobs ({len(done) - RECENT})"):
            older = done.iloc[RECENT:]
            st.dataframe(
                {
                    "Job": older["job_id"],
                    "What": [queue.describe(k, p) for k, p in zip(older["kind"], older["params"], strict=True)],
                    "Status": older["status"],
                    "Finished (UTC)": older["finished_at"],
                    "Why it failed": older["error"].fillna(""),
                },
                hide_index=True,
                width="stretch",
                key=f"{key}_older",
            )


def heading(job) -> str:
    """The job's id and what it does, in bold and plain words."""
    return f"**{job.job_id}** · {queue.describe(job.kind, job.params)}"


def finished_at(job) -> str:
    return f"{job.finished_at:%Y-%m-%d %H:%M} UTC" if job.finished_at == job.finished_at else ""


def _active_job(store: Store, job) -> None:
    with st.container(border=True):
        st.markdown(f"{heading(job)} · started by {job.created_by or '—'}")
        progress = job.progress or {}
        if job.status == "queued":
            st.progress(0.0, text="Queued: waits for the job before it (one job at a time per data folder)")
        else:
            info = progress.get("info") or {}
            score = info.get("val_balanced_accuracy")
            parts = [
                f"Stage {progress.get('stage_number', 1)} of {progress.get('stages', '?')}: "
                f"{progress.get('stage_label', 'starting')}",
                progress.get("detail") or "",
                f"validation balanced accuracy {100 * score:.1f}%" if isinstance(score, int | float) else "",
                f"about {minutes(progress['eta_seconds'])} left" if progress.get("eta_seconds") is not None else "",
            ]
            st.progress(float(progress.get("fraction", 0.0)), text=" · ".join(p for p in parts if p))
            if progress.get("updated_at"):
                st.caption(f"Last progress {time.time() - progress['updated_at']:.0f} s ago")
        if st.button("Cancel", key=f"models_cancel_{job.job_id}", icon=":material/stop_circle:"):
            outcome = queue.cancel(store, job.job_id)
            st.toast("Cancelled." if outcome == "cancelled" else "Stopping at the next step…")
