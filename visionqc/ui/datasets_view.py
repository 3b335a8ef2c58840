"""The Models page's "Datasets" tab: what can be trained on, and three ways to make a dataset: import a labelled
archive or folder, build one from reviewed inspections (History's filters), merge stored ones. Each dataset can
be downloaded as the zip ``python -m visionqc train`` reads."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from visionqc.datasets.archive import import_dataset, unpacked, write_uploaded_folder
from visionqc.datasets.building import NOT_A_PART_CHOICES, create_from_reviews, merge_datasets
from visionqc.datasets.checks import SMALL_CLASS, DatasetProblem, check_classes
from visionqc.datasets.export import export_zip
from visionqc.model.card import ModelCard
from visionqc.registry.registry import slug
from visionqc.reporting import models as report
from visionqc.store import Store
from visionqc.ui.filters import history_filters
from visionqc.ui.sidebar import signed_name

MESSAGE = "models_dataset_message"


def _done(row: dict, warnings: list[str]) -> None:
    st.session_state[MESSAGE] = (row, warnings)
    st.rerun()


def _show_message() -> None:
    done = st.session_state.pop(MESSAGE, None)
    if done is None:
        return
    row, warnings = done
    st.success(f"Dataset **{row['dataset_id']}** saved: {row['images']:,} images.", icon=":material/check_circle:")
    for warning in warnings:
        st.warning(warning, icon=":material/warning:")


def render_datasets(store: Store, card: ModelCard | None) -> None:
    _show_message()
    rows = store.datasets()
    if rows.empty:
        st.info(
            "No datasets yet. A dataset is a named list of labelled images a model learns from: import a labelled "
            "archive of your parts below, or build one from inspections you reviewed.",
            icon=":material/dataset:",
        )
    else:
        warnings = [check_classes(r.class_counts, r.no_defect_class).warnings for r in rows.itertuples()]
        st.dataframe(report.datasets_table(rows, warnings), hide_index=True, width="stretch", key="models_datasets")
        _one_dataset(store, rows)
    by = signed_name("recorded with the dataset")
    with st.expander("Import a labelled archive or folder", icon=":material/upload_file:"):
        _import_form(store, by)
    with st.expander("Create from reviewed inspections", icon=":material/rule:"):
        _reviews_form(store, card, rows, by)
    if len(rows) >= 2:
        with st.expander("Merge datasets", icon=":material/merge:"):
            _merge_form(store, rows, by)


def _one_dataset(store: Store, rows) -> None:
    left, right = st.columns([2, 3], gap="large")
    ident = left.selectbox("Dataset", list(rows["dataset_id"]), key="models_dataset_pick")
    row = rows[rows["dataset_id"] == ident].iloc[0]
    left.download_button(
        f"Download {ident} as a zip",
        data=lambda: export_zip(store, ident),
        file_name=f"{ident.replace('@', '-v')}.zip",
        mime="application/zip",
        icon=":material/download:",
        on_click="ignore",
        key="models_dataset_zip",
        help="Class folders with labels.csv and dataset.json: `python -m visionqc train FOLDER --out DIR` reads it.",
    )
    left.caption(f"{row['description'] or ''} · no-defect class: `{row['no_defect_class']}`")
    right.dataframe(
        report.class_counts_table(row["class_counts"], SMALL_CLASS), hide_index=True, width="stretch",
        key="models_dataset_counts",
    )  # fmt: skip


def _import_form(store: Store, by: str) -> None:
    st.caption(
        "Any layout `train` reads: class folders (`scratch/…jpg`, `ok/…jpg`) with an optional `labels.csv` "
        "(image, severity, location), a `manifest.csv`, COCO JSON, or `images/` with `masks/` or VOC `boxes/`."
    )
    archive_tab, folder_tab = st.tabs([":material/folder_zip: A zip archive", ":material/folder: A folder"])
    archive = archive_tab.file_uploader("Labelled archive (.zip)", type=["zip"], key="models_import_zip")
    folder = folder_tab.file_uploader("Labelled folder", accept_multiple_files="directory", key="models_import_dir")
    source = archive.name if archive else (folder[0].name.split("/")[0] if folder else "")
    if source != st.session_state.get("models_import_source"):  # a new upload suggests its own name
        st.session_state["models_import_source"] = source
        st.session_state["models_import_name"] = slug(Path(source).stem) if source else ""
    name = st.text_input("Dataset name", key="models_import_name")
    skip = st.checkbox("Leave unreadable images out (instead of refusing the import)", key="models_import_skip")
    if not st.button("Import", type="primary", key="models_import_go", disabled=not (source and name and by)):
        if source and not by:
            st.caption("Enter your name above to import.")
        return
    bar = st.progress(0.0, text="Checking every image…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Checked {done:,} of {total:,} images")

    try:
        if archive is not None:
            with unpacked(archive.getvalue(), archive.name) as root:
                row, warnings = import_dataset(store, name, root, by=by, skip_unreadable=skip, progress=progress,
                                               origin=archive.name)  # fmt: skip
        else:
            with tempfile.TemporaryDirectory(prefix="visionqc-upload-") as tmp:
                root = write_uploaded_folder([(f.name, f.getvalue()) for f in folder], Path(tmp))
                row, warnings = import_dataset(store, name, root, by=by, skip_unreadable=skip, progress=progress,
                                               origin=source)  # fmt: skip
    except DatasetProblem as exc:
        bar.empty()
        st.error(f"Not imported: {exc}. Nothing was stored.", icon=":material/error:")
        return
    _done(row, warnings)


def _reviews_form(store: Store, card: ModelCard | None, rows, by: str) -> None:
    st.caption(
        "The images and their labels as reviewed: a person's correction where there is one, else the model's "
        "prediction (only when you include unreviewed inspections). Filters work as on History."
    )
    st.session_state.setdefault("dataset_f_reviewed", "Yes")
    selection = history_filters(store, card, key="dataset")
    matching = store.count(selection)
    st.markdown(f"**{matching:,} inspection{'s' if matching != 1 else ''}** match.")
    not_a_part = st.radio(
        "Photos reviewed as “not a part / unusable image”",
        list(NOT_A_PART_CHOICES),
        format_func=NOT_A_PART_CHOICES.get,
        horizontal=True,
        key="models_reviews_not_a_part",
    )
    include = st.multiselect(
        "Add stored datasets (e.g. the original training set; your reviews win where both hold an image)",
        list(rows["dataset_id"]) if not rows.empty else [],
        key="models_reviews_include",
    )
    name = st.text_input("Dataset name", key="models_reviews_name", placeholder="e.g. door-panels")
    if st.button("Create dataset", type="primary", key="models_reviews_go", disabled=not (matching and name and by)):
        try:
            row, warnings = create_from_reviews(store, name, selection, by=by, not_a_part=not_a_part, include=include)
        except DatasetProblem as exc:
            st.error(f"Not created: {exc}.", icon=":material/error:")
            return
        _done(row, warnings)


def _merge_form(store: Store, rows, by: str) -> None:
    picked = st.multiselect(
        "Datasets to merge (in order: where two hold the same image, the later one's label wins)",
        list(rows["dataset_id"]),
        key="models_merge_pick",
    )
    name = st.text_input("Dataset name", key="models_merge_name")
    if st.button("Merge", type="primary", key="models_merge_go", disabled=len(picked) < 2 or not (name and by)):
        try:
            row, warnings = merge_datasets(store, name, picked, by=by)
        except DatasetProblem as exc:
            st.error(f"Not merged: {exc}.", icon=":material/error:")
            return
        _done(row, warnings)
