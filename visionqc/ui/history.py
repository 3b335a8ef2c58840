"""History's own controls: sorting, paging, and the bulk actions on the selected inspections (tag, untag, mark
reviewed, delete, restore), each recorded in the audit trail under the reviewer's name."""

from __future__ import annotations

import streamlit as st

from visionqc.ui.corrections import flash, reports_errors, show_message
from visionqc.ui.sidebar import last_reviewer, remember_reviewer

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


@reports_errors
def _bulk(store, ids: list[int], key: str, what: str, *, group: str) -> None:
    state = st.session_state
    reviewer = (state.get(f"{key}_who") or "").strip()
    if not reviewer:
        flash(group, "error", "Enter your name first: tags, reviews and deletions record who made them.")
        return
    remember_reviewer(reviewer)
    if what == "add_tags":
        tags = [t.strip() for t in (state.get(f"{key}_add") or "").split(",") if t.strip()]
        if not tags:
            flash(group, "error", "Type one or more tags, separated by commas.")
            return
        added = store.add_tags(ids, tags)
        state[f"{key}_add"] = ""
        flash(group, "success", f"Tagged {len(ids)} inspection(s) with {', '.join(tags)} ({added} new tag(s)).")
    elif what == "remove_tags":
        tags = list(state.get(f"{key}_remove") or [])
        if not tags:
            flash(group, "error", "Choose the tags to remove.")
            return
        removed = store.remove_tags(ids, tags)
        flash(group, "success", f"Removed {removed} tag(s) from the selected inspections.")
    elif what == "review":
        changed = store.mark_reviewed(ids, reviewer)
        flash(group, "success", f"Marked {changed} inspection(s) as reviewed by {reviewer}.")
    elif what == "restore":
        restored = store.restore(ids, reviewer)
        state.pop(HISTORY_TABLE, None)  # the restored rows leave the "only deleted" view
        flash(group, "success", f"Restored {restored} inspection(s); the restore is in the audit trail.")
    elif what == "delete":
        if not state.get(f"{key}_confirm_delete"):
            flash(group, "error", "Tick “Yes, delete them” first.")
            return
        deleted = store.soft_delete(ids, reviewer, note=(state.get(f"{key}_why") or "").strip() or None)
        state[f"{key}_confirm_delete"] = False
        state.pop(HISTORY_TABLE, None)  # the selected rows are gone
        flash(group, "success", f"Deleted {deleted} inspection(s); the deletion is in the audit trail.")


def render_bulk_actions(store, selected, *, key: str = "bulk", deleted: bool = False) -> None:
    """Tag, untag, mark reviewed or (soft-)delete the selected inspections (rows of ``Store.search``) at once;
    for rows that are deleted (``deleted=True``), restore them."""
    ids = [int(i) for i in selected["inspection_id"]]
    show_message(key)
    if f"{key}_who" not in st.session_state:
        st.session_state[f"{key}_who"] = last_reviewer()
    st.text_input("Your name", key=f"{key}_who", help="Recorded with every change (the audit trail).")
    if deleted:
        st.button(
            "Restore selected",
            key=f"{key}_restore_btn",
            on_click=_bulk,
            args=(store, ids, key, "restore"),
            kwargs={"group": key},
            icon=":material/restore_from_trash:",
        )
        return
    tag_col, untag_col, review_col, delete_col = st.columns(4, border=True)
    with tag_col:
        st.text_input("Add tags (comma-separated)", key=f"{key}_add", placeholder="e.g. retrain, line-2")
        st.button(
            "Add tags", key=f"{key}_add_btn", on_click=_bulk, args=(store, ids, key, "add_tags"), kwargs={"group": key}
        )
    with untag_col:
        present = sorted({t for tags in selected["tags"] if tags is not None for t in tags})
        st.multiselect("Remove tags", present, key=f"{key}_remove")
        st.button(
            "Remove tags",
            key=f"{key}_remove_btn",
            on_click=_bulk,
            args=(store, ids, key, "remove_tags"),
            kwargs={"group": key},
        )
    with review_col:
        st.caption("Accept the current labels of every selected row.")
        st.button(
            "Mark reviewed",
            key=f"{key}_review_btn",
            on_click=_bulk,
            args=(store, ids, key, "review"),
            kwargs={"group": key},
            type="primary",
        )
    with delete_col:
        st.text_input("Why delete (optional)", key=f"{key}_why")
        st.checkbox("Yes, delete them", key=f"{key}_confirm_delete")
        st.button(
            "Delete selected",
            key=f"{key}_delete_btn",
            on_click=_bulk,
            args=(store, ids, key, "delete"),
            kwargs={"group": key},
            icon="🗑️",
        )
        st.caption("Deleted rows are hidden everywhere and kept in the audit trail.")
