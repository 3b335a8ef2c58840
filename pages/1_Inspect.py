"""Inspect: upload photos (files, a folder or zips), classify them as one batch, review the results."""

import streamlit as st

from visionqc.ui import detail, first_run, resources, tables, upload

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
        key="inspect_files",
    )
with folder_tab:
    folder = st.file_uploader(
        "A folder of photos (its sub-folders too)", accept_multiple_files="directory", key="inspect_folder"
    )
uploads = [*(files or []), *(folder or [])]

station_col, operator_col, note_col = st.columns([1, 1, 2])
station = station_col.text_input("Station", key="inspect_station", placeholder="e.g. Line 2 camera A")
operator = operator_col.text_input("Operator", key="inspect_operator", placeholder="Who inspects this batch")
note = note_col.text_input("Note", key="inspect_note", placeholder="Anything worth knowing about this batch")

key = upload.upload_key(uploads)
already = upload.inspected_batch(key) if uploads else None
clicked = st.button(
    f"Inspect {len(uploads)} file{'s' if len(uploads) != 1 else ''}" if uploads else "Inspect",
    type="primary",
    disabled=not uploads or already is not None,
    icon=":material/play_arrow:",
    key="inspect_run",
)
if already is not None:
    st.caption(f"These files were inspected as batch `{already}`. Upload other files to start a new batch.")
if clicked and upload.inspect_uploads(
    store,
    predictor,
    key,
    [(f.name, f.getvalue()) for f in uploads],
    station=station,
    operator=operator,
    note=note,
):
    st.rerun()  # redraw with the batch saved: the button now says these files are done

batch_id = st.session_state.get(upload.CURRENT_BATCH)
if batch_id is None:
    st.info("Choose files above, then press **Inspect**.", icon=":material/info:")
    st.stop()

batch = store.batch(batch_id) or {}
st.subheader(f"Batch {batch_id}")
st.caption(" · ".join(f"{k}: {batch[k]}" for k in ("station", "operator", "note") if batch.get(k)))
tables.render_batch_summary(store.batch_summary(batch_id))

failures = store.batch_failures(batch_id)
if len(failures):
    st.error(f"{len(failures)} file(s) could not be inspected; the rest of the batch was saved.")
    st.dataframe(
        failures.rename(columns={"file_name": "File", "reason": "Reason", "created_at": "When (UTC)"}),
        hide_index=True,
        key="inspect_failures",
    )
duplicates = store.batch_duplicates(batch_id)
if len(duplicates):
    st.warning(f"{len(duplicates)} file(s) were inspected before (same image bytes); they are not counted again.")
    st.dataframe(
        duplicates[["file_name", "earlier_file_name", "earlier_batch_id", "earlier_at"]].rename(
            columns={
                "file_name": "File",
                "earlier_file_name": "Inspected earlier as",
                "earlier_batch_id": "In batch",
                "earlier_at": "At (UTC)",
            }
        ),
        hide_index=True,
        key="inspect_duplicates",
    )

rows = store.batch_rows(batch_id)
first_run.render_foreign_batch_notice(rows, predictor.card)
timezone = resources.browser_timezone()
st.markdown("**Results** — click a row to see the photo and correct its labels; click a column title to sort.")
event = tables.show_inspections(
    rows, predictor.card, key=upload.RESULTS_TABLE, timezone=timezone, selection="single-row"
)
st.download_button(
    "Download this batch as CSV",
    data=lambda: store.batch_csv(batch_id),
    file_name=f"visionqc-batch-{batch_id}.csv",
    mime="text/csv",
    icon=":material/download:",
    on_click="ignore",
    key="inspect_csv",
)

selected = tables.selected_rows(event)
if selected and selected[0] < len(rows):
    st.divider()
    detail.render_inspection_detail(store, int(rows.iloc[selected[0]]["inspection_id"]), predictor.card, key="inspect")
