"""One model's card on the Models page: first in plain words for a QC lead (what it finds, how often it is right,
when it asks a person), then, behind an expander, the technical tables: architecture, classes, training data and
citation, test metrics and confusion matrices, needs-review thresholds and how well its heatmaps point at real
defects."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from visionqc import config
from visionqc.model.card import ModelCard, ModelLoadError, read_card
from visionqc.registry import ModelRegistry
from visionqc.reporting import model_card as mc
from visionqc.ui.text import literal


def pick_version(registry: ModelRegistry, active: ModelCard) -> tuple[ModelCard, Path]:
    """A choice of version whose card to show (the active one first); returns that card and its folder."""
    labels = {f"{active.name} v{active.version} (active)": None}
    labels |= {v.label: v for v in registry.versions() if (v.name, v.version) != (active.name, active.version)}
    picked = labels[st.selectbox("Card of", list(labels), key="models_card_version")]
    if picked is None:
        return active, config.model_dir()
    try:
        return read_card(picked.path), picked.path
    except ModelLoadError as exc:
        st.error(f"The card of {picked.label} cannot be read: {exc}", icon=":material/error:")
        return active, config.model_dir()


def render_card(card: ModelCard, folder: Path, key: str = "model") -> None:
    raw = card.raw
    st.markdown(f"### {literal(card.name)} · version {literal(card.version)}")
    st.caption(f"Folder: `{folder}`")
    _plain_words(raw)
    with st.expander("Technical details: architecture, metrics, thresholds, heatmaps", icon=":material/code:"):
        _technical(raw, folder, key)


def _plain_words(raw: dict) -> None:
    finds_col, right_col, asks_col = st.columns(3, border=True)
    with finds_col:
        st.markdown("**What it finds**")
        st.markdown(mc.what_it_finds(raw))
        looks = mc.where_it_looks(raw)
        if looks:
            st.markdown(looks)
    with right_col:
        st.markdown("**How often it is right**")
        st.markdown("\n\n".join(mc.how_often_right(raw)))
    with asks_col:
        st.markdown("**When it asks a person**")
        st.markdown("\n".join(mc.when_it_asks(raw)))


def _technical(raw: dict, folder: Path, key: str) -> None:
    arch_col, tasks_col = st.columns([2, 3], gap="large")
    with arch_col:
        st.markdown("**Architecture**")
        st.dataframe(mc.summary_rows(raw), hide_index=True, width="stretch", key=f"{key}_arch")
    with tasks_col:
        st.markdown("**What it predicts**")
        st.dataframe(mc.tasks_table(raw), hide_index=True, width="stretch", key=f"{key}_tasks")
    data = raw.get("training_data") or {}
    _training_data(raw, data, key)
    _test_quality(raw, key)
    st.markdown("#### Needs-review thresholds")
    thresholds = mc.thresholds_table(raw)
    if thresholds.empty:
        st.caption("No thresholds: nothing is flagged for review.")
    else:
        st.dataframe(thresholds, hide_index=True, width="stretch", key=f"{key}_thresholds")
    _localisation(raw, data, folder, key)


def _training_data(raw: dict, data: dict, key: str) -> None:
    st.markdown("#### Training data")
    if not data:
        st.caption("The card does not describe its training data.")
        return
    st.markdown(f"**{data.get('name', '—')}** · {data.get('images', '—')} images · format `{data.get('format', '—')}`")
    counts = mc.class_counts(raw)
    if not counts.empty:
        st.dataframe(counts.set_index("Class").T, width="stretch", key=f"{key}_counts")
    if data.get("citation"):
        st.info(data["citation"], icon=":material/format_quote:")
    split = ((raw.get("training") or {}).get("split")) or {}
    if split.get("sizes"):
        sizes = split["sizes"]
        st.caption("Split: " + ", ".join(f"{k} {v}" for k, v in sizes.items()) + f" ({split.get('method', '')})")


def _test_quality(raw: dict, key: str) -> None:
    st.markdown("#### Quality on the held-out test images")
    metrics = mc.test_metrics(raw)
    if not metrics:
        st.caption("The card has no test metrics.")
        return
    for task, tab in zip(metrics, st.tabs([t.capitalize() for t in metrics]), strict=True):
        m = metrics[task]
        with tab:
            cols = st.columns(4)
            cols[0].metric("Images", f"{m.get('n', 0):,}", border=True)
            for col, (name, label) in zip(cols[1:], mc.METRIC_NAMES.items(), strict=True):
                if m.get(name) is not None:
                    col.metric(label, f"{100 * m[name]:.1f}%", border=True)
            if m.get("scored_on"):
                st.caption(f"Scored on {m['scored_on']}.")
            matrix_col, table_col = st.columns([3, 2], gap="large")
            if m.get("confusion_matrix"):
                matrix_col.altair_chart(
                    mc.confusion_chart(m["confusion_matrix"], title=f"{task.capitalize()}: confusion matrix"),
                    key=f"{key}_confusion_{task}",
                )
            table_col.markdown("**Per class** (%)")
            table_col.dataframe(mc.per_class_table(m), hide_index=True, width="stretch", key=f"{key}_per_class_{task}")
    repeated = mc.repeated_splits_table(raw)
    if not repeated.empty:
        st.markdown("**Stability over repeated random splits**")
        st.dataframe(repeated, hide_index=True, width="stretch", key=f"{key}_repeated")


def _localisation(raw: dict, data: dict, folder: Path, key: str) -> None:
    st.markdown("#### Heatmap localisation")
    st.caption(
        "How often the heatmap's hottest point lands on the real defect (pointing game; strictly, and within "
        "15 px as in Zhang et al. 2016) and how well its box overlaps the defect (box IoU), on images with "
        "ground-truth masks or boxes."
    )
    entries = mc.localisation_entries(raw)
    if not entries:
        st.caption(
            f"Not measured yet. Run `python -m visionqc localise ../shared/data/{data.get('name', 'DATASET')} "
            f"--model {folder}`."
        )
    for name, entry in entries.items():
        st.markdown(f"**{name}** · {entry.get('images', 0)} defect images · measured {entry.get('evaluated_at', '')}")
        cols = st.columns(3)
        cols[0].metric("Pointing game", f"{100 * entry['pointing_game']:.0f}%", border=True)
        cols[1].metric("Within 15 px", f"{100 * entry.get('pointing_game_tolerant', 0):.0f}%", border=True)
        cols[2].metric("Mean box IoU", f"{entry.get('box_iou_mean', 0):.2f}", border=True)
        st.dataframe(mc.localisation_table(entry), hide_index=True, width="stretch", key=f"{key}_loc_{name}")
        if entry.get("method"):
            st.caption(f"Method: {entry['method']}. {entry.get('ms_per_image', '—')} ms per image.")
