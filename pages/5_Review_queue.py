"""Review queue: the inspections the model is least sure of, one at a time; confirm, correct or skip each."""

import streamlit as st

from visionqc.filters import InspectionFilter
from visionqc.ui import detail, pages, resources, results
from visionqc.ui.corrections import correction_form, show_message
from visionqc.ui.filters import history_filters
from visionqc.ui.heatmap_view import render_image_with_heatmap
from visionqc.ui.text import literal

pages.through_the_app(__file__)  # nothing of a page runs outside the app's navigation

SKIPPED = "queue_skipped"  # ids skipped in this session: they come back next session
GROUP = "queue"  # where the form's messages go

st.title("Review queue")
st.caption(
    "Inspections waiting for a person, most uncertain first: flagged “needs review” or with a low defect "
    "confidence, not reviewed yet. Keyboard: **Y** confirm, **S** save the correction, **U** not a part / "
    "unusable image, **N** skip. Your name is in the sidebar."
)
store = resources.get_store()
card = resources.active_card()
timezone = resources.browser_timezone()

with st.expander("Filters (the same as History)", expanded=False, icon=":material/filter_alt:"):
    flt = history_filters(store, card, key="queue", timezone=timezone)
below = st.slider(
    "Also queue images with a defect confidence under (%)",
    0,
    100,
    60,
    step=5,
    key="queue_confidence",
    help="Images the model flagged are always queued; this adds unflagged ones the model was not sure of.",
)

skipped = st.session_state.setdefault(SKIPPED, [])
ids, waiting = store.review_queue(flt, below / 100, skip=skipped)
show_message(GROUP)
st.markdown(f"**{waiting:,} waiting**" + (f" · {len(skipped)} skipped this session" if skipped else ""))
if not ids:
    st.info(
        "Nothing left to review here." if not skipped else "Only skipped images are left.",
        icon=":material/done_all:",
    )
    if skipped and st.button("Bring the skipped images back", key="queue_unskip"):
        st.session_state[SKIPPED] = []
        st.rerun()
    st.stop()

inspection = store.inspection_detail(ids[0])
inspection_id = int(inspection["inspection_id"])
key = f"queue_{inspection_id}"
left, right = st.columns([1, 1], gap="large")
with left:
    render_image_with_heatmap(inspection, resources.get_predictor(), key="queue")
with right:
    st.markdown(f"**{literal(inspection['file_name'])}** · inspection {inspection_id}")
    confidence = inspection.get("confidence")
    st.caption(
        f"Model: {inspection.get('pred_defect')}"
        + (f" ({100 * confidence:.0f}%)" if confidence is not None else "")
        + f" → {inspection.get('pred_action')}"
    )
    if inspection.get("review_reason"):
        st.warning(inspection["review_reason"], icon=":material/flag:")
    detail.render_probabilities(inspection, key)
    correction_form(store, inspection, card, key=key, group=GROUP, skipped_key=SKIPPED)

with st.expander("The next ones waiting, as pictures", icon=":material/grid_view:"):
    upcoming, _ = store.review_queue(flt, below / 100, skip=skipped, limit=24)
    queue_rows, _ = store.search(InspectionFilter(ids=upcoming), sort="confidence", descending=False, page_size=0)
    results.render_results(store, queue_rows, card, key="queue_upcoming", view="pictures", timezone=timezone)
