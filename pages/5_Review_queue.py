"""Review queue: the inspections the model is least sure of, one at a time; confirm, correct or skip each."""

import streamlit as st

from visionqc import app_state as ui
from visionqc import explore
from visionqc.heatmap_view import render_image_with_heatmap
from visionqc.ui_filters import history_filters

SKIPPED = "queue_skipped"  # ids skipped in this session: they come back next session
FLASH = "queue_flash"

st.title("Review queue")
st.caption(
    "Inspections waiting for a person, most uncertain first: flagged “needs review” or with a low defect "
    "confidence, not reviewed yet. Keyboard: **Y** confirm, **S** save the correction, **N** skip."
)
store = ui.get_store()
predictor = ui.get_predictor()
card = ui.active_card()
timezone = ui.browser_timezone()

with st.expander("Filters (the same as History)", expanded=False, icon=":material/filter_alt:"):
    flt = history_filters(store, card, key="queue", timezone=timezone)
name_col, threshold_col = st.columns([1, 2])
with name_col:
    reviewer = ui.reviewer_input("queue_reviewer")
below = threshold_col.slider(
    "Also queue images with a defect confidence under (%)",
    0,
    100,
    60,
    step=5,
    key="queue_confidence",
    help="Images the model flagged are always queued; this adds unflagged ones the model was not sure of.",
)

skipped = st.session_state.setdefault(SKIPPED, [])
ids, waiting = explore.review_queue(store, flt, below / 100, skip=skipped)
flash = st.session_state.pop(FLASH, None)
if flash:
    st.success(flash, icon=":material/check_circle:")
st.markdown(
    f"**{waiting:,} waiting**" + (f" · {len(skipped)} skipped this session" if skipped else ""),
)
if not ids:
    st.info(
        "Nothing left to review here." if not skipped else "Only skipped images are left.",
        icon=":material/done_all:",
    )
    if skipped and st.button("Bring the skipped images back", key="queue_unskip"):
        st.session_state[SKIPPED] = []
        st.rerun()
    st.stop()

detail = store.inspection_detail(ids[0])
inspection_id = int(detail["inspection_id"])
key = f"queue_{inspection_id}"
left, right = st.columns([1, 1], gap="large")
with left:
    render_image_with_heatmap(detail, predictor, key="queue")
with right:
    st.markdown(f"**{detail['file_name']}** · inspection {inspection_id}")
    confidence = detail.get("confidence")
    st.caption(
        f"Model: {detail.get('pred_defect')}"
        + (f" ({100 * confidence:.0f}%)" if confidence is not None else "")
        + f" → {detail.get('pred_action')}"
    )
    if detail.get("review_reason"):
        st.warning(detail["review_reason"], icon=":material/flag:")
    ui.render_probabilities(detail, key)

    tasks = card.task_names if card is not None else ["defect"]
    with st.form(f"{key}_form", border=True, enter_to_submit=False):
        choices = {}
        for task, title in ui.TASK_COLUMNS:
            if task not in tasks:
                continue
            current = detail.get(task)
            options = list(dict.fromkeys([*(card.classes(task) if card else []), *([current] if current else [])]))
            if task != "defect":
                options = [ui.NO_VALUE, *options]
            index = options.index(current) if current in options else 0
            choices[task] = st.selectbox(title, options, index=index, key=f"{key}_{task}")
        note = st.text_input("Note (optional)", key=f"{key}_note")
        with st.container(horizontal=True):
            confirm = st.form_submit_button("Confirm", type="primary", icon=":material/check:", shortcut="Y")
            correct = st.form_submit_button("Save correction", icon=":material/edit:", shortcut="S")
            skip = st.form_submit_button("Skip", icon=":material/skip_next:", shortcut="N")

if skip:
    skipped.append(inspection_id)
    st.rerun()
if confirm or correct:
    if not reviewer:
        st.error("Type your name above first: every review is recorded under it.")
        st.stop()
    if confirm:
        store.review([inspection_id], reviewer, "confirm", note=note or None)
        st.session_state[FLASH] = f"Confirmed {detail['file_name']} as {detail.get('defect')}."
    else:
        labels = {task: (None if value == ui.NO_VALUE else value) for task, value in choices.items()}
        store.review([inspection_id], reviewer, "correct", note=note or None, **labels)
        st.session_state[FLASH] = f"Corrected {detail['file_name']} to {labels.get('defect')}."
    st.rerun()
