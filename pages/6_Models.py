"""Models: the active model's card; every version with rollback and the audit trail; datasets; training jobs;
compare two versions and promote; re-inspect a batch with another version."""

import streamlit as st

from visionqc.ui import (
    compare_view,
    datasets_view,
    model_card_view,
    pages,
    registry_view,
    reinspect_view,
    resources,
    training_view,
)

pages.through_the_app(__file__)  # nothing of a page runs outside the app's navigation

st.title("Models")
registry = resources.get_registry()
store = resources.get_store()
message = st.session_state.pop("models_message", None)
if message:
    st.success(message, icon=":material/check_circle:")
registry_view.offer_shipped(registry)

card_tab, versions_tab, datasets_tab, train_tab, compare_tab, reinspect_tab = st.tabs(
    [
        ":material/badge: Active model",
        ":material/history: Versions",
        ":material/dataset: Datasets",
        ":material/model_training: Train",
        ":material/compare_arrows: Compare & promote",
        ":material/replay: Re-inspect",
    ],
    key="models_tab",  # the chosen tab survives reruns: submitting a job or a job ending keeps you where you were
    on_change="rerun",
)
with card_tab:
    card = resources.active_card()
    if card is None:
        resources.require_predictor()  # explains why no model loads, and stops
    shown_card, folder = model_card_view.pick_version(registry, card)
    model_card_view.render_card(shown_card, folder)
with versions_tab:
    registry_view.render_versions(registry)
with datasets_tab:
    datasets_view.render_datasets(store, card)
with train_tab:
    training_view.render_training(store, registry)
with compare_tab:
    compare_view.render_compare(store, registry)
with reinspect_tab:
    reinspect_view.render_reinspect(store, registry)
