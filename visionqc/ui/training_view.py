"""The Models page's "Train" tab: start a training job on a dataset (a few options, a time estimate), and follow
every job live: stage, epoch, validation score, time left, cancel. The job runs in its own process
(:mod:`visionqc.jobs`), so it carries on across page changes, reloads and other users' reruns."""

from __future__ import annotations

import time

import streamlit as st

from visionqc.datasets.checks import check_classes
from visionqc.jobs import queue
from visionqc.jobs.training_job import KIND, TrainingOptions, describe, estimate_seconds, training_images
from visionqc.registry import ModelRegistry
from visionqc.registry.registry import RegistryError, check_name, slug
from visionqc.store import Store
from visionqc.ui.sidebar import signed_name

REFRESH_S = 2
RECENT = 3  # finished jobs shown in full; older ones in a table
VIEWS = {1: "1 (fastest)", 2: "2", 3: "3 (steadiest)"}
_RUNNING = "models_jobs_running"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def render_training(store: Store, registry: ModelRegistry) -> None:
    from visionqc.ui.anomaly_view import render_anomaly_form

    datasets = store.datasets()
    if datasets.empty:
        st.info(
            "To train a classifier, make a dataset first (the **Datasets** tab): it learns from labelled images. "
            "No labelled defects yet? Start below from photos of good parts.",
            icon=":material/dataset:",
        )
    else:
        _start_form(store, registry, datasets)
    st.divider()
    render_anomaly_form(store)
    st.subheader("Jobs")
    busy = store.count_jobs("queued", "running") > 0
    st.fragment(_jobs_panel, run_every=REFRESH_S if busy else None)(store)


def _start_form(store: Store, registry: ModelRegistry, datasets) -> None:
    st.subheader("Train a classifier from labelled photos")
    ident = st.selectbox("Dataset", list(datasets["dataset_id"]), key="models_train_dataset")
    row = datasets[datasets["dataset_id"] == ident].iloc[0]
    name = st.text_input(
        "Model name",
        value=slug(row["name"]),
        key=f"models_train_name_{ident}",
        help="The new model becomes the next version of this name (letters, digits, '.', '_', '-').",
    )
    left, middle, right = st.columns(3)
    views = left.radio(
        "Views per image", [1, 2, 3], index=2, key="models_train_views", horizontal=True, format_func=VIEWS.get,
        help="The image plus augmented copies (crops, brightness): more is steadier, and slower.",
    )  # fmt: skip
    phase2 = middle.checkbox(
        "Fine-tune the last blocks", value=True, key="models_train_phase2",
        help="Kept only if it beats the heads-only model on validation images.",
    )  # fmt: skip
    stability = right.checkbox(
        "Stability check", value=False, key="models_train_repeats",
        help="Train the heads on 5 more random splits and record the spread of the scores in the card.",
    )  # fmt: skip
    with st.expander("More options"):
        epochs = st.number_input("Epochs (heads, with early stopping)", 5, 500, 150, key="models_train_epochs")
        cap = st.number_input("At most this many images per class (0 = all)", 0, 100_000, 0, key="models_train_cap")
        seed = st.number_input("Split seed", 0, 10_000, 0, key="models_train_seed")
    options = TrainingOptions(
        views=int(views),
        epochs=int(epochs),
        phase2=bool(phase2),
        repeats=5 if stability else 0,
        max_per_class=int(cap) or None,
        seed=int(seed),
    )
    check = check_classes(row["class_counts"], row["no_defect_class"])
    for problem in check.errors:
        st.error(f"{ident} cannot be trained on: {problem}.", icon=":material/error:")
    for warning in check.warnings:
        st.warning(warning, icon=":material/warning:")
    seconds = estimate_seconds(row["class_counts"], options, registry)
    st.caption(
        f"{training_images(row['class_counts'], options):,} images · about **{_minutes(seconds)}** on this machine "
        "(scaled from the last training run here; other work on the machine makes it longer)."
    )
    by = signed_name("recorded with the model")
    if st.button("Start training", type="primary", icon=":material/play_arrow:", key="models_train_go",
                 disabled=not (check.ok and name and by)):  # fmt: skip
        try:
            model_name = check_name(name)
        except RegistryError as exc:
            st.error(str(exc), icon=":material/error:")
            return
        params = {"name": model_name, "dataset": ident, "options": options.to_json()}
        job_id = queue.submit(store, KIND, params, by=by, dataset_id=ident, model_name=model_name)
        st.session_state["models_message"] = f"Training job {job_id} queued: {describe(params)}"
        st.rerun()


def _jobs_panel(store: Store) -> None:
    queue.reconcile(store)
    jobs = queue.jobs_with_progress(store, limit=15)
    if jobs.empty:
        st.caption("No training jobs yet.")
        return
    active = jobs[jobs["status"].isin(["queued", "running"])]
    running_now = set(active["job_id"])
    if running_now != st.session_state.get(_RUNNING, running_now) and not running_now:
        st.session_state[_RUNNING] = running_now
        st.rerun(scope="app")  # a job ended: the versions and the sidebar change
    st.session_state[_RUNNING] = running_now
    for job in active.itertuples(index=False):
        _active_job(store, job)
    finished = jobs[~jobs["status"].isin(["queued", "running"])]
    for job in finished.head(RECENT).itertuples(index=False):
        _finished_job(job)
    if len(finished) > RECENT:
        with st.expander(f"Older jobs ({len(finished) - RECENT})"):
            older = finished.iloc[RECENT:]
            st.dataframe(
                {
                    "Job": older["job_id"],
                    "What": [describe(p) for p in older["params"]],
                    "Status": older["status"],
                    "Finished (UTC)": older["finished_at"],
                    "Why it failed": older["error"].fillna(""),
                },
                hide_index=True,
                width="stretch",
                key="models_older_jobs",
            )


def _active_job(store: Store, job) -> None:
    with st.container(border=True):
        st.markdown(f"**{job.job_id}** · {describe(job.params)} · started by {job.created_by or '—'}")
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
                f"about {_minutes(progress['eta_seconds'])} left" if progress.get("eta_seconds") is not None else "",
            ]
            st.progress(float(progress.get("fraction", 0.0)), text=" · ".join(p for p in parts if p))
            if progress.get("updated_at"):
                st.caption(f"Last progress {time.time() - progress['updated_at']:.0f} s ago")
        if st.button("Cancel", key=f"models_cancel_{job.job_id}", icon=":material/stop_circle:"):
            outcome = queue.cancel(store, job.job_id)
            st.toast("Cancelled." if outcome == "cancelled" else "Stopping at the next step…")


def _finished_job(job) -> None:
    model = (job.result or {}).get("model") if isinstance(job.result, dict) else None
    when = f"{job.finished_at:%Y-%m-%d %H:%M} UTC" if job.finished_at == job.finished_at else ""
    head = f"**{job.job_id}** · {describe(job.params)} · {when}"
    if job.status == "succeeded" and model:
        metrics = job.result.get("metrics") or {}
        ba = metrics.get("balanced_accuracy")
        score = f" · test balanced accuracy {100 * ba:.1f}%" if ba is not None else ""
        st.success(f"{head}\n\nRegistered **{model['name']} v{model['version']}**{score}. Compare it with the active "
                   "model before you promote it.", icon=":material/check_circle:")  # fmt: skip
    elif job.status == "cancelled":
        st.info(f"{head}\n\nCancelled.", icon=":material/cancel:")
    else:
        st.error(f"{head}\n\nFailed: {job.error}", icon=":material/error:")
