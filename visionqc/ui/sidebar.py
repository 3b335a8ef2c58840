"""The sidebar on every page (the active model and the data folder) and the reviewer's name, remembered across
pages for the session."""

from __future__ import annotations

import contextlib

import streamlit as st

from visionqc import config
from visionqc.model.card import ModelLoadError, read_card
from visionqc.ui import resources

REVIEWER = "_visionqc_reviewer"


def render_sidebar() -> None:
    """The active model (name, version, since when, classes per task) and the data folder, on every page.

    Reads the registry and the model card only: showing it never loads the network."""
    with st.sidebar:
        st.subheader("Active model")
        registry = resources.get_registry()
        pinned = config.pinned_model_dir()
        try:
            card = read_card(resources.active_model_dir())
        except ModelLoadError as exc:
            st.error(f"No model loaded: {exc}", icon=":material/error:")
        else:
            st.markdown(f"**{card.name}** · version `{card.version}`")
            entry = None if pinned else config.active_entry(config.read_activations(registry.home))
            if entry:
                st.caption(
                    f"Active since {entry['at'].replace('T', ' ').rstrip('Z')} UTC ({entry['action']}, {entry['by']})"
                )
            for task in card.tasks:
                st.caption(f"**{task.name.capitalize()}**: {', '.join(task.classes)}")
        if pinned:
            st.warning(f"`VISIONQC_MODEL` pins this app to `{pinned}`; the registry's choice is not used.")
        _models_link()
        st.subheader("Data folder")
        st.caption(f"`{config.data_dir()}`")
        st.caption("Set `VISIONQC_HOME` to use another folder.")


def _models_link() -> None:
    # Suppressed when the page is not registered (a page run on its own in tests).
    with contextlib.suppress(st.errors.StreamlitAPIException):
        st.page_link("pages/6_Models.py", label="Models: train, compare, switch", icon=":material/model_training:")


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
