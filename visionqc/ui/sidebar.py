"""The sidebar on every page (the active model and the data folder) and the reviewer's name, remembered across
pages for the session."""

from __future__ import annotations

import contextlib

import streamlit as st

from visionqc import config
from visionqc.model.card import ModelLoadError, read_card
from visionqc.ui import auth, resources
from visionqc.ui.text import literal, literals

REVIEWER = "_visionqc_reviewer"
REVIEWER_WIDGET = "sidebar_reviewer"
NO_REVIEWER_MESSAGE = "Enter your name in the sidebar first: every review, tag and deletion records who made it."


def render_sidebar() -> None:
    """The active model (name, version, since when, classes per task) and the data folder, on every page.

    Reads the registry and the model card only: showing it never loads the network."""
    with st.sidebar:
        if auth.current_user():
            auth.signed_in_box()
        else:
            reviewer_input()
        st.subheader("Active model")
        registry = resources.get_registry()
        pinned = config.pinned_model_dir()
        try:
            card = read_card(resources.active_model_dir())
        except ModelLoadError as exc:
            st.error(f"No model loaded: {exc}", icon=":material/error:")
        else:
            st.markdown(f"**{literal(card.name)}** · version {literal(card.version)}")
            entry = None if pinned else config.active_entry(config.read_activations(registry.home))
            if entry:
                since = entry["at"].replace("T", " ").rstrip("Z")
                st.caption(f"Active since {since} UTC ({entry['action']}, {literal(entry['by'])})")
            for task in card.tasks:
                st.caption(f"**{literal(task.name.capitalize())}**: {literals(task.classes)}")
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
    """The reviewer's name: the signed-in user's when sign-in is on; else the sidebar box's value (already
    updated when a callback runs), else the last one."""
    if signed_in := auth.signed_in_name():
        return signed_in
    state = st.session_state
    return (state.get(REVIEWER_WIDGET) or state.get(REVIEWER) or "").strip()


def signed_name(what: str = "recorded in the audit trail") -> str:
    """The reviewer's name from the sidebar for a form that records who acted, said beside the form (or a note
    that it is missing; the form's button stays disabled until it is set)."""
    name = last_reviewer()
    if name:
        source = "signed in" if auth.signed_in_name() else "the name in the sidebar"
        st.caption(f"As **{literal(name)}** ({what}; {source}).")
    else:
        st.caption(":orange[Enter your name in the sidebar first: it is " + what + ".]")
    return name
