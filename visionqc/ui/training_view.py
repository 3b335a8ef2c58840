"""The Models page's "Train" tab: start a training job on a dataset (a few options, a time estimate), and follow
every job live: stage, epoch, validation score, time left, cancel. The job runs in its own process
(:mod:`visionqc.jobs`), so it carries on across page changes, reloads and other users' reruns."""

from __future__ import annotations

import streamlit as st

from visionqc.datasets.checks import check_classes
from visionqc.jobs import queue
from visionqc.jobs.anomaly_job import KIND as ANOMALY_KIND
from visionqc.jobs.training_job import KIND, TrainingOptions, describe, estimate_seconds, training_images
from visionqc.registry import ModelRegistry
from visionqc.registry.registry import RegistryError, check_name, slug
from visionqc.store import Store
from visionqc.ui.jobs_view import finished_at, heading, minutes, render_jobs
from visionqc.ui.sidebar import signed_name

VIEWS = {1: "1 (fastest)", 2: "2", 3: "3 (steadiest)"}
TRAINING_KINDS = (KIND, ANOMALY_KIND)


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
    render_jobs(store, TRAINING_KINDS, key="models_jobs", finished=_finished_job, empty="No training jobs yet.")


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
        conv_head = st.checkbox(
            "Try a convolutional head", value=True, key="models_train_conv_head",
            help="A small head that learns its own detectors on the backbone's feature map (finds thin, local "
            "defects better). Kept only if it beats the standard heads on validation images.",
        )  # fmt: skip
    options = TrainingOptions(
        views=int(views),
        epochs=int(epochs),
        phase2=bool(phase2),
        repeats=5 if stability else 0,
        max_per_class=int(cap) or None,
        seed=int(seed),
        conv_head="auto" if conv_head else "off",
    )
    check = check_classes(row["class_counts"], row["no_defect_class"])
    for problem in check.errors:
        st.error(f"{ident} cannot be trained on: {problem}.", icon=":material/error:")
    for warning in check.warnings:
        st.warning(warning, icon=":material/warning:")
    seconds = estimate_seconds(row["class_counts"], options, registry)
    st.caption(
        f"{training_images(row['class_counts'], options):,} images · about **{minutes(seconds)}** on this machine "
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


def _finished_job(store: Store, job, newest: bool) -> None:
    model = (job.result or {}).get("model") if isinstance(job.result, dict) else None
    head = f"{heading(job)} · {finished_at(job)}"
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
