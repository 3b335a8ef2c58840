"""The sidebar on every page (the active model and the data folder) and the reviewer's name, remembered across
pages for the session."""

from __future__ import annotations

import streamlit as st

from visionqc import config
from visionqc.model.card import ModelLoadError, read_card

REVIEWER = "_visionqc_reviewer"


def render_sidebar() -> None:
    """The active model (name, version, classes per task) and the data folder, on every page.

    Reads the model card only: showing it never loads the network."""
    with st.sidebar:
        st.subheader("Active model")
        try:
            card = read_card(config.model_dir())
        except ModelLoadError as exc:
            st.error(f"No model loaded: {exc}", icon=":material/error:")
            st.caption(f"Model folder: `{config.model_dir()}` (set `VISIONQC_MODEL` to use another).")
        else:
            st.markdown(f"**{card.name}** · version `{card.version}`")
            for task in card.tasks:
                st.caption(f"**{task.name.capitalize()}**: {', '.join(task.classes)}")
        st.subheader("Data folder")
        st.caption(f"`{config.data_dir()}`")
        st.caption("Set `VISIONQC_HOME` to use another folder.")


def reviewer_input(key: str, label: str = "Your name", default: str = "") -> str:
    """A name field that remembers its value across pages; every correction is recorded under it."""
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(REVIEWER) or default
    name = st.text_input(label, key=key, help="Recorded with every correction, tag and deletion (the audit trail).")
    if name.strip():
        st.session_state[REVIEWER] = name.strip()
    return name.strip()


def remember_reviewer(name: str) -> None:
    st.session_state[REVIEWER] = name


def last_reviewer() -> str:
    return st.session_state.get(REVIEWER, "")
