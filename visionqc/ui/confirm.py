"""A button that asks before it acts: the first click shows the question with "Yes" and "Cancel" beside it."""

from __future__ import annotations

import streamlit as st


def confirm_button(
    label: str, question: str, *, key: str, yes: str, icon: str | None = None, disabled: bool = False
) -> bool:
    """``True`` on the run where the user confirmed; the question stays up until they answer."""
    pending = f"{key}_pending"
    if st.button(label, key=key, icon=icon, disabled=disabled):
        st.session_state[pending] = True
    if not st.session_state.get(pending):
        return False
    with st.container(border=True):
        st.warning(question, icon=":material/help:")
        yes_col, no_col, _ = st.columns([2, 1, 3])
        if yes_col.button(yes, key=f"{key}_yes", type="primary"):
            st.session_state[pending] = False
            return True
        if no_col.button("Cancel", key=f"{key}_no"):
            st.session_state[pending] = False
            st.rerun()
    return False
