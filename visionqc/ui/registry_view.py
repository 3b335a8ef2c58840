"""The Models page's "Versions" tab: every registered version, rollback to an earlier one (with a confirm), a
model per inspection station, and the audit trail of every switch."""

from __future__ import annotations

import streamlit as st

from visionqc import config
from visionqc.registry import ModelRegistry, RegistryError
from visionqc.reporting import models as report
from visionqc.ui import resources
from visionqc.ui.confirm import confirm_button
from visionqc.ui.sidebar import signed_name


def switch(registry: ModelRegistry, version, *, by: str, action: str, station: str | None = None) -> None:
    """Make ``version`` active (recorded in the audit trail) and redraw the app with it."""
    registry.activate(version.name, version.version, by=by, action=action, station=station)
    resources.clear_model_cache()
    st.session_state["models_message"] = f"{version.label} is now the active model" + (
        f" for station {station}" if station else ""
    )
    st.rerun()


def offer_shipped(registry: ModelRegistry) -> None:
    """Above the Models page's tabs: the model an update of VisionQC shipped, registered but not in use yet."""
    offered, active = registry.newer_shipped(), registry.active()
    if offered is not None and active is not None:
        st.info(
            f"This update of VisionQC ships **{offered.label}**. It is registered here but not in use: compare it "
            f"with {active.label} on your own images (**Compare & promote**) before you switch.",
            icon=":material/new_releases:",
        )


def render_versions(registry: ModelRegistry) -> None:
    versions = registry.versions()
    active = registry.active()
    if config.pinned_model_dir():
        st.warning(
            f"`VISIONQC_MODEL` pins this app to `{config.pinned_model_dir()}`: switching here is recorded but this "
            "app keeps using the pinned model until `VISIONQC_MODEL` is unset.",
            icon=":material/push_pin:",
        )
    st.dataframe(
        report.versions_table(versions, active),
        hide_index=True,
        width="stretch",
        key="models_versions",
        column_config={
            "Accuracy %": st.column_config.NumberColumn(format="%.1f"),
            "Balanced accuracy %": st.column_config.NumberColumn(format="%.1f"),
            "Needs review %": st.column_config.NumberColumn(format="%.1f"),
        },
    )
    st.caption(
        "Versions never change once registered. Test numbers come from each model's own held-out images, so compare "
        "two versions on the same images (the **Compare & promote** tab) before you switch."
    )
    by = signed_name("recorded in the audit trail")
    _rollback(registry, by)
    _per_station(registry, versions, by)
    st.subheader("Audit trail")
    st.dataframe(report.audit_table(registry.activations()), hide_index=True, width="stretch", key="models_audit")


def _rollback(registry: ModelRegistry, by: str) -> None:
    st.subheader("Roll back")
    choices = registry.rollback_choices()
    if not choices:
        st.caption("No earlier active version yet: rollback becomes possible after the first promotion.")
        return
    labels = {v.label: v for v in choices}
    picked = st.selectbox("Earlier version", list(labels), key="models_rollback_to", help="Most recent first.")
    target = labels[picked]
    active = registry.active()
    if confirm_button(
        f"Roll back to {target.label}",
        f"Make {target.label} the active model again instead of {active.label if active else 'the current one'}? "
        "New inspections will use it; past inspections keep the model that made them.",
        key="models_rollback",
        yes="Yes, roll back",
        icon=":material/undo:",
        disabled=not by,
    ):
        switch(registry, target, by=by, action="rollback")
    if not by:
        st.caption("Enter your name above to roll back.")


def _per_station(registry: ModelRegistry, versions, by: str) -> None:
    with st.expander("A model for one inspection station", icon=":material/precision_manufacturing:"):
        st.caption(
            "A station can use its own version (e.g. a new model on one line first); every other station keeps "
            "the active one. `python -m visionqc inspect --station NAME` uses it."
        )
        for station in registry.stations():
            chosen = registry.active(station)
            st.markdown(f"- **{station}** uses {chosen.label if chosen else '—'}")
        left, right = st.columns(2)
        station = left.text_input("Station", key="models_station_name", placeholder="e.g. Line 2 camera A")
        labels = {v.label: v for v in versions}
        picked = right.selectbox("Version", list(labels), key="models_station_version")
        if confirm_button(
            "Use it for this station",
            f"Make {picked} the model of station {station!r}?",
            key="models_station_switch",
            yes="Yes, switch this station",
            disabled=not (station.strip() and by and picked),
        ):
            try:
                switch(registry, labels[picked], by=by, action="station", station=station.strip())
            except RegistryError as exc:
                st.error(str(exc))
