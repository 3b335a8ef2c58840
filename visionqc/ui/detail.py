"""One inspection in detail: the photo with its heatmap, every class probability, the correction form, tags
and the review history."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from visionqc.labels import shown
from visionqc.model.card import ModelCard
from visionqc.ui.corrections import correction_form, show_message
from visionqc.ui.heatmap_view import render_image_with_heatmap
from visionqc.ui.resources import get_predictor
from visionqc.ui.tables import TASK_COLUMNS
from visionqc.ui.text import literal


def probabilities_table(probabilities: dict[str, float], current: str | None):
    """One task's classes, likeliest first, with the model's probability in percent; ✔ marks the current label."""
    ordered = sorted(probabilities.items(), key=lambda kv: -kv[1])
    return pd.DataFrame(
        {
            "Class": [f"{label} ✔" if label == current else label for label, _ in ordered],
            "Probability": [round(100 * float(p), 1) for _, p in ordered],
        }
    )


def render_probabilities(detail: dict, key: str) -> None:
    """Every class probability, one tab per task (severity and location only where the model saw a defect)."""
    probabilities = detail.get("probabilities") or {}
    tasks = [t for t in probabilities if probabilities[t]]
    if not tasks:
        return
    st.caption("The model's probabilities (✔ = the label this image has now)")
    for task, tab in zip(tasks, st.tabs([t.capitalize() for t in tasks]), strict=True):
        tab.dataframe(
            probabilities_table(probabilities[task], detail.get(task)),
            hide_index=True,
            width="stretch",
            column_config={
                "Probability": st.column_config.ProgressColumn(
                    "Probability", min_value=0, max_value=100, format="%.1f%%"
                )
            },
            key=f"{key}_probs_{task}",
        )


def reviews_table(reviews):
    """The review history (oldest first) in words: when, who, what, the labels before."""
    rows = []
    for r in reviews.itertuples():
        before = r.previous if isinstance(r.previous, dict) else {}
        rows.append(
            {
                "When (UTC)": r.created_at,
                "Who": r.reviewer,
                "What": {
                    "correct": "corrected",
                    "confirm": "confirmed",
                    "unusable": f"unusable: {getattr(r, 'unusable_reason', None) or 'no reason'}",
                    "delete": "deleted",
                    "restore": "restored",
                }.get(r.kind, r.kind),
                "Labels after": " · ".join(shown(v) for v in (r.defect, r.severity, r.location, r.action)),
                "Labels before": " · ".join(shown(before.get(k)) for k in ("defect", "severity", "location", "action")),
                "Note": r.note if isinstance(r.note, str) else "",
            }
        )
    return pd.DataFrame(rows, columns=["When (UTC)", "Who", "What", "Labels after", "Labels before", "Note"])


def render_inspection_detail(store, inspection_id: int, card: ModelCard | None = None, *, key: str = "detail") -> None:
    """The photo large (with the heatmap of where the model looked), every class probability, the labels with a
    correction form, tags and review history."""
    detail = store.inspection_detail(int(inspection_id))
    if detail is None:
        st.info("This inspection no longer exists.")
        return
    key = f"{key}_{int(inspection_id)}"
    left, right = st.columns([3, 2], gap="large")
    with left:
        render_image_with_heatmap(detail, get_predictor(), key=key)
    with right:
        st.markdown(f"**{literal(detail['file_name'])}**")
        predicted = " · ".join(
            shown(detail.get(f"pred_{t}"))
            + (f" ({100 * detail[f'pred_{t}_conf']:.0f}%)" if detail.get(f"pred_{t}_conf") is not None else "")
            for t, _ in TASK_COLUMNS
        )
        st.caption(f"Model predicted: {predicted} → **{detail.get('pred_action')}**")
        score = detail.get("anomaly_score")
        if score is not None and score == score:
            threshold = ((card.raw.get("anomaly") or {}).get("decision") or {}).get("threshold") if card else None
            cut = f"; it calls a photo an anomaly above {threshold:.2f}" if threshold is not None else ""
            st.caption(f"Anomaly score **{score:.2f}** (how unlike the good photos the model learned from{cut})")
        if detail.get("unusable_reason"):
            st.error(
                f"Marked not a part / unusable image: {literal(detail['unusable_reason'])}. "
                "It is in no quality figure.",
                icon=":material/hide_image:",
            )
        elif detail.get("needs_review"):
            st.warning(f"Needs review: {detail.get('review_reason') or 'the model is unsure'}", icon=":material/flag:")
        if detail.get("reviewed"):
            st.caption(f"Reviewed by {detail.get('reviewed_by')} at {detail.get('reviewed_at'):%Y-%m-%d %H:%M} UTC")
        if detail.get("tags"):
            st.caption("Tags: " + ", ".join(detail["tags"]))
        render_probabilities(detail, key)
        show_message(key)
        correction_form(store, detail, card, key=key, group=key)
    reviews = detail.get("reviews")
    if reviews is not None and len(reviews):
        st.markdown("**Review history** (the model's prediction above is never changed)")
        st.dataframe(reviews_table(reviews), hide_index=True, width="stretch", key=f"{key}_reviews")


@st.dialog("Inspection", width="large", position="right", on_dismiss="rerun")
def _detail_dialog(store, inspection_id: int, card: ModelCard | None, key: str) -> None:
    render_inspection_detail(store, inspection_id, card, key=key)


def open_detail(store, inspection_id: int | None, card: ModelCard | None, *, key: str, token: object = None) -> None:
    """Open one inspection in a side panel where the eye is, once per click.

    ``token`` identifies the click (e.g. the table and the cell): a later rerun with the same click does not
    reopen a panel the user closed; ``inspection_id=None`` (nothing clicked) forgets the last click."""
    memo = f"{key}_opened"
    if inspection_id is None:
        st.session_state.pop(memo, None)
        return
    token = (inspection_id, token)
    if st.session_state.get(memo) == token:
        return
    st.session_state[memo] = token
    st.session_state.pop(f"{key}_{int(inspection_id)}_message", None)  # a message from an earlier look is old news
    _detail_dialog(store, int(inspection_id), card, key)
