"""The sidebar on every page (the active model and the data folder) and the reviewer's name, remembered across
pages for the session."""

from __future__ import annotations

import streamlit as st

from visionqc import config
from visionqc.model.card import ModelLoadError, read_card
from visionqc.ui.text import literal, literals

REVIEWER = "_visionqc_reviewer"
REVIEWER_WIDGET = "sidebar_reviewer"
NO_REVIEWER_MESSAGE = "Enter your name in the sidebar first: every review, tag and deletion records who made it."


def render_sidebar() -> None:
    """The active model (name, version, classes per task) and the data folder, on every page.

    Reads the model card only: showing it never loads the network."""
    with st.sidebar:
        reviewer_input()
        st.subheader("Active model")
        try:
            card = read_card(config.model_dir())
        except ModelLoadError as exc:
            st.error(f"No model loaded: {exc}", icon=":material/error:")
            st.caption(f"Model folder: `{config.model_dir()}` (set `VISIONQC_MODEL` to use another).")
        else:
            st.markdown(f"**{literal(card.name)}** · version {literal(card.version)}")
            for task in card.tasks:
                st.caption(f"**{literal(task.name.capitalize())}**: {literals(task.classes)}")
        st.subheader("Data folder")
        st.caption(f"`{config.data_dir()}`")
        st.caption("Set `VISIONQC_HOME` to use another folder.")


def reviewer_input() -> str:
    """The reviewer's name, set once per browser session in the sidebar; every review form records it."""
    state = st.session_state
    if REVIEWER_WIDGET not in state:
        state[REVIEWER_WIDGET] = state.get(REVIEWER, "")
    name = st.text_input(
        "Your name (reviewer)",
        key=REVIEWER_WIDGET,
        placeholder="Who reviews on this browser",
        help="Recorded with every correction, tag and deletion (the audit trail). Set once; every page uses it.",
    ).strip()
    state[REVIEWER] = name
    return name


def remember_reviewer(name: str) -> None:
    st.session_state[REVIEWER] = name.strip()


def last_reviewer() -> str:
    """The reviewer's name: the sidebar box's value (already updated when a callback runs), else the last one."""
    state = st.session_state
    return (state.get(REVIEWER_WIDGET) or state.get(REVIEWER) or "").strip()
