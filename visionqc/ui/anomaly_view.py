"""The Models page's "Train" tab, first part: an anomaly model from good photos only (no labelled defects needed).

The photos are checked and kept in the data folder, then a job of kind "anomaly" (:mod:`visionqc.jobs.anomaly_job`)
learns from them in the worker process, like a classifier's training job; its progress shows in the same job list.
"""

from __future__ import annotations

import streamlit as st

from visionqc.intake.uploads import iter_named_bytes
from visionqc.jobs import queue
from visionqc.jobs.anomaly_job import KIND, describe, plan, save_uploads
from visionqc.model.anomaly_settings import DEFAULT_PERCENTILE, GOOD_FLAGGED_CHOICES
from visionqc.registry.registry import RegistryError, check_name
from visionqc.store import Store
from visionqc.ui.sidebar import signed_name

HELP = (
    "Start here when you have good parts and few or no photos of defects: the model learns what a good part looks "
    "like and flags any photo that is unlike all of them, with a heatmap of where. Upload at least 10 photos of "
    "defect-free parts (a few hundred is better), as files, a .zip or a folder. The reviewers can then name the "
    "defect of each flagged photo, and their reviews become the labelled dataset for a classifier."
)


def render_anomaly_form(store: Store) -> None:
    st.subheader("Train an anomaly model from good photos")
    st.caption(HELP)
    files_tab, folder_tab = st.tabs([":material/upload_file: Photos or .zip", ":material/folder: A folder"])
    files = files_tab.file_uploader(
        "Good photos (JPEG, PNG, BMP, TIFF, WebP, GIF) or .zip archives of them",
        accept_multiple_files=True,
        key="models_anomaly_files",
    )
    folder = folder_tab.file_uploader(
        "A folder of good photos", accept_multiple_files="directory", key="models_anomaly_dir"
    )
    uploads = [*(files or []), *(folder or [])]
    left, right = st.columns(2)
    name = left.text_input(
        "Model name", value="good-parts", key="models_anomaly_name",
        help="The new model becomes the next version of this name (letters, digits, '.', '_', '-').",
    )  # fmt: skip
    label = right.text_input(
        "Label for a good part", value="good", key="models_anomaly_label",
        help="What History and the Dashboard call a photo the model passes; a flagged photo is called “anomaly”.",
    )  # fmt: skip
    percentile = st.radio(
        "Good parts that may be flagged by mistake",
        list(GOOD_FLAGGED_CHOICES),
        index=list(GOOD_FLAGGED_CHOICES).index(DEFAULT_PERCENTILE),
        format_func=GOOD_FLAGGED_CHOICES.get,
        horizontal=True,
        key="models_anomaly_flagged",
        help="The threshold is set so that about this share of good parts (measured on a fifth of your photos, held "
        "out of the learning) is flagged: fewer false alarms also lets more real defects pass. 1 in 20 is a good "
        "start; the model's card states the choice.",
    )
    if uploads:
        seconds = sum(s.seconds for s in plan(len(uploads)))
        st.caption(f"{len(uploads):,} file(s) · about **{seconds:.0f} s** on this machine for this many photos.")
    by = signed_name("recorded with the model")
    go = st.button("Train anomaly model", type="primary", icon=":material/play_arrow:", key="models_anomaly_go",
                   disabled=not (uploads and name and label.strip() and by))  # fmt: skip
    if not go:
        return
    try:
        model_name = check_name(name)
    except RegistryError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    with st.spinner("Checking the photos…"):
        try:
            saved = save_uploads(store.home, iter_named_bytes((f.name, f.getvalue()) for f in uploads))
        except ValueError as exc:
            st.error(f"Not enough good photos to learn from: {exc}", icon=":material/error:")
            return
    params = {
        "name": model_name,
        "good_photos": saved.folder,
        "photos": saved.photos,
        "no_defect_label": label.strip(),
        "good_percentile": percentile,
    }
    job_id = queue.submit(store, KIND, params, by=by, model_name=model_name)
    message = f"Training job {job_id} queued: {describe(params)}."
    if saved.failures:
        shown = "; ".join(f"{f.name}: {f.reason}" for f in saved.failures[:5])
        more = f" and {len(saved.failures) - 5} more" if len(saved.failures) > 5 else ""
        message += f" {len(saved.failures)} file(s) were left out because they could not be read ({shown}{more})."
    st.session_state["models_message"] = message
    st.rerun()
