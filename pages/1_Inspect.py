"""Inspect: upload photos (files, a folder or zips), classify them as one batch, work through the results."""

import streamlit as st

from visionqc.filters import InspectionFilter
from visionqc.ui import first_run, lot_report, pages, resources, results, tables, upload
from visionqc.ui.text import literal

pages.through_the_app(__file__)  # nothing of a page runs outside the app's navigation

st.title("Inspect")
st.caption(
    "Upload photos, a folder or zip archives. The model gives each image a defect type, severity, location and "
    "the action to take; you can correct any label. Everything is saved as one batch."
)
predictor = resources.require_predictor()
store = resources.get_store()

files_tab, folder_tab = st.tabs([":material/upload_file: Files or zip archives", ":material/folder: A folder"])
with files_tab:
    files = st.file_uploader(
        "Photos (JPEG, PNG, BMP, TIFF, WebP, GIF) or .zip archives of them",
        accept_multiple_files=True,
        key=upload.uploader_key("inspect_files"),
    )
with folder_tab:
    folder = st.file_uploader(
        "A folder of photos (its sub-folders too)",
        accept_multiple_files="directory",
        key=upload.uploader_key("inspect_folder"),
    )
uploads = [*(files or []), *(folder or [])]
details = upload.batch_details(store)

key = upload.upload_key(uploads)
already = upload.inspected_batch(key) if uploads else None
with st.container(horizontal=True):
    clicked = st.button(
        f"Inspect {len(uploads)} file{'s' if len(uploads) != 1 else ''}" if uploads else "Inspect",
        type="primary",
        disabled=not uploads or already is not None or store.read_only,
        icon=":material/play_arrow:",
        key="inspect_run",
    )
    st.button(
        "New batch",
        on_click=upload.new_batch,
        icon=":material/restart_alt:",
        key="inspect_new_batch",
        help="Empty the file boxes and start again.",
    )
if already is not None:
    st.caption(f"These files were inspected as batch `{already}`. Press **New batch** to start another.")
if clicked and upload.inspect_uploads(
    store, predictor, key, [(f.name, f.getvalue()) for f in uploads], details=details
):
    st.rerun()  # redraw with the batch saved: the button now says these files are done

batch_id = st.session_state.get(upload.CURRENT_BATCH)
if batch_id is None:
    st.info("Choose files above, then press **Inspect**.", icon=":material/info:")
    st.stop()

batch = store.batch(batch_id) or {}
st.subheader(f"Batch {batch_id}")
named = ("station", "operator", "part_number", "lot", "note")
st.caption(" · ".join(f"{k.replace('_', ' ')}: {literal(batch[k])}" for k in named if isinstance(batch.get(k), str)))
tables.render_batch_summary(store.batch_summary(batch_id))
tables.render_failures_and_duplicates(store.batch_failures(batch_id), store.batch_duplicates(batch_id))
batch_rows = store.batch_rows(batch_id)
first_run.render_foreign_batch_notice(batch_rows, predictor.card)

timezone = resources.browser_timezone()
filter_col, view_col = st.columns([3, 1], vertical_alignment="bottom")
with filter_col:
    rows = upload.quick_filter(batch_rows, key="inspect_quick_filter")
with view_col:
    view = results.choose_view("inspect")
st.caption("Click any cell of a row (or **Open** on a picture) to see the photo large and correct its labels.")
results.render_results(store, rows, predictor.card, key=upload.RESULTS_TABLE, view=view, timezone=timezone)

with st.container(horizontal=True):
    st.download_button(
        "Download this batch as CSV",
        data=lambda: store.batch_csv(batch_id, timezone=timezone),
        file_name=f"visionqc-batch-{batch_id}.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        key="inspect_csv",
    )
    lot_report.download_button(
        store, InspectionFilter(batches=(batch_id,)), key="inspect_pdf", timezone=timezone, name=batch_id
    )
