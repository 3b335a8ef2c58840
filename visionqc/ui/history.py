"""History's own controls: sorting, paging, and the bulk actions on the selected inspections (tag, untag, mark
reviewed, mark unusable, delete, restore), each recorded in the audit trail under the reviewer's name."""

from __future__ import annotations

import streamlit as st

from visionqc.labels import UNUSABLE_REASONS
from visionqc.ui import auth
from visionqc.ui.corrections import flash, reports_errors, show_message
from visionqc.ui.selection import names_line
from visionqc.ui.sidebar import NO_REVIEWER_MESSAGE, last_reviewer
from visionqc.ui.text import literal, literals

HISTORY_TABLE = "history_results"


SORT_CHOICES = {
    "Inspected at": "created_at",
    "Defect confidence": "confidence",
    "File name": "file_name",
    "Defect": "defect",
    "Severity": "severity",
    "Location": "location",
    "Action": "action",
    "Needs review": "needs_review",
    "Reviewed": "reviewed",
    "Batch": "batch_id",
    "Outlier score (Explore)": "outlier_score",
    "Near-duplicate similarity (Explore)": "near_duplicate_similarity",
}


def keep_page_in_range(key: str, pages: int, signature: object) -> None:
    """Call before the page-number widget: back to page 1 when the filter changed, never past the last page."""
    sig_key = f"{key}_signature"
    if st.session_state.get(sig_key) != repr(signature):
        st.session_state[sig_key] = repr(signature)
        st.session_state[key] = 1
    elif st.session_state.get(key, 1) > pages:
        st.session_state[key] = pages


# The role each bulk action needs (visionqc.accounts.PERMISSIONS).
BULK_ACTIONS = {
    "add_tags": "tag",
    "remove_tags": "tag",
    "review": "review",
    "unusable": "review",
    "restore": "delete",
    "delete": "delete",
}


@reports_errors
def _bulk(store, ids: list[int], key: str, what: str, *, group: str) -> None:
    state = st.session_state
    if not auth.allowed(BULK_ACTIONS[what]):  # checked when the click arrives, whatever the page showed
        flash(group, "error", auth.refusal(BULK_ACTIONS[what]))
        return
    reviewer = last_reviewer()
    if not reviewer:
        flash(group, "error", NO_REVIEWER_MESSAGE)
        return
    if what == "add_tags":
        tags = [t.strip() for t in (state.get(f"{key}_add") or "").split(",") if t.strip()]
        if not tags:
            flash(group, "error", "Type one or more tags, separated by commas.")
            return
        added = store.add_tags(ids, tags)
        state[f"{key}_add"] = ""
        flash(group, "success", f"Tagged {len(ids)} inspection(s) with {literals(tags)} ({added} new tag(s)).")
    elif what == "remove_tags":
        tags = list(state.get(f"{key}_remove") or [])
        if not tags:
            flash(group, "error", "Choose the tags to remove.")
            return
        removed = store.remove_tags(ids, tags)
        flash(group, "success", f"Removed {removed} tag(s) from the selected inspections.")
    elif what == "review":
        changed = store.mark_reviewed(ids, reviewer)
        flash(group, "success", f"Marked {changed} inspection(s) as reviewed by {literal(reviewer)}.")
    elif what == "unusable":
        reason = state.get(f"{key}_unusable_reason") or UNUSABLE_REASONS[0]
        changed = store.mark_unusable(ids, reviewer, reason)
        flash(
            group,
            "success",
            f"Marked {changed} photo(s) unusable ({literal(reason)}); they leave every quality figure.",
        )
    elif what == "restore":
        restored = store.restore(ids, reviewer)
        flash(group, "success", f"Restored {restored} inspection(s); the restore is in the audit trail.")
    elif what == "delete":
        if not state.get(f"{key}_confirm_delete"):
            flash(group, "error", "Tick “Yes, delete them” first.")
            return
        deleted = store.soft_delete(ids, reviewer, note=(state.get(f"{key}_why") or "").strip() or None)
        state[f"{key}_confirm_delete"] = False
        flash(group, "success", f"Deleted {deleted} inspection(s); the deletion is in the audit trail.")


def _action_button(label: str, store, ids: list[int], key: str, what: str, **options) -> None:
    st.button(
        label, key=f"{key}_{what}_btn", on_click=_bulk, args=(store, ids, key, what), kwargs={"group": key}, **options
    )


def render_bulk_actions(store, rows, ids: list[int], *, key: str = "bulk", deleted: bool = False) -> None:
    """Tag, untag, mark reviewed, mark unusable or (soft-)delete the inspections ``ids`` (ticked on ``rows``);
    for deleted rows (``deleted=True``), restore them. The images are named before anything is done."""
    show_message(key)
    st.markdown(f"**Selected — {names_line(rows, ids)}**")
    if not auth.allowed("tag"):
        st.caption(f":material/lock: Tagging, reviewing and deleting are for leads. {auth.refusal('tag')}")
        return
    if not last_reviewer():
        st.warning(NO_REVIEWER_MESSAGE, icon=":material/person:")
    if deleted:
        _action_button("Restore selected", store, ids, key, "restore", icon=":material/restore_from_trash:")
        return
    tag_col, review_col, unusable_col, delete_col = st.columns(4, border=True)
    with tag_col:
        st.text_input("Add tags (comma-separated)", key=f"{key}_add", placeholder="e.g. retrain, line-2")
        _action_button("Add tags", store, ids, key, "add_tags")
        chosen = rows[rows["inspection_id"].isin(ids)]
        present = sorted({t for tags in chosen["tags"] if tags is not None for t in tags})
        st.multiselect("Remove tags", present, key=f"{key}_remove")
        _action_button("Remove tags", store, ids, key, "remove_tags")
    with review_col:
        st.caption("Accept the current labels of every selected image.")
        _action_button("Mark reviewed", store, ids, key, "review", type="primary")
    with unusable_col:
        st.selectbox("Not a part / unusable image: why", UNUSABLE_REASONS, key=f"{key}_unusable_reason")
        _action_button("Mark unusable", store, ids, key, "unusable", icon=":material/hide_image:")
        st.caption("Unusable photos leave every quality figure and are counted on their own.")
    with delete_col:
        st.text_input("Why delete (optional)", key=f"{key}_why")
        st.checkbox("Yes, delete them", key=f"{key}_confirm_delete")
        _action_button("Delete selected", store, ids, key, "delete", icon="🗑️")
        st.caption("Deleted rows are hidden everywhere and kept in the audit trail.")
