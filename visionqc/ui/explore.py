"""The Explore page's pieces: the map (cached projection, the chart and its box selection), tagging what is
selected, the most unusual images and the near-duplicates on the map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from visionqc.explore.projection import project
from visionqc.explore.scores import near_duplicates
from visionqc.filters import InspectionFilter
from visionqc.model.card import ModelCard
from visionqc.reporting.explore_map import COLOR_CHOICES, REGION, map_chart, map_frame
from visionqc.ui import auth
from visionqc.ui.selection import names_line
from visionqc.ui.tables import show_inspections, thumbnail_url
from visionqc.ui.text import literal


@st.cache_data(show_spinner="Placing the images on the map…", max_entries=8)
def projected(ids: tuple[int, ...], _vectors: np.ndarray, method: str) -> np.ndarray:
    # Keyed by the ids shown (the sample is deterministic), so reruns and tagging do not recompute it.
    return project(_vectors, method, seed=0)


@st.cache_data(show_spinner=False, max_entries=8)
def near_duplicate_pairs(ids: tuple[int, ...], _vectors: np.ndarray) -> pd.DataFrame:
    return near_duplicates(list(ids), _vectors)


def selected_ids(frame: pd.DataFrame, event) -> list[int]:
    """Inspection ids inside the box the user dragged (a Streamlit ``on_select`` event), in map order."""
    try:
        box = event.selection.get(REGION) if hasattr(event, "selection") else event["selection"].get(REGION)
    except (AttributeError, KeyError, TypeError):
        return []
    if not box or "x" not in box or "y" not in box:
        return []
    (x0, x1), (y0, y1) = sorted(box["x"]), sorted(box["y"])
    inside = frame["x"].between(x0, x1) & frame["y"].between(y0, y1)
    return frame.loc[inside, "inspection_id"].astype(int).tolist()


def render_map(
    rows: pd.DataFrame, xy: np.ndarray, color_label: str, card: ModelCard | None
) -> tuple[pd.DataFrame, list[int]]:
    """The map chart; returns the frame it draws and the ids inside the user's box."""
    frame = map_frame(rows, xy, [thumbnail_url(p) for p in rows["thumb_file"]])
    chart = map_chart(frame, COLOR_CHOICES[color_label], no_defect_label=card.no_defect_class if card else None)
    event = st.altair_chart(chart, on_select="rerun", selection_mode=[REGION], key="explore_map")
    return frame, selected_ids(frame, event)


def render_selection(store, chosen: list[int], card: ModelCard | None, timezone: str) -> None:
    """The images in the box, and a form to tag them."""
    st.subheader(f"{len(chosen)} selected")
    selected_rows, _ = store.search(InspectionFilter(ids=chosen), sort="outlier_score", page_size=0)
    show_inspections(selected_rows, card, key="explore_selected_table", timezone=timezone, history=True)
    if not auth.allowed("tag"):
        st.caption(f":material/lock: Tagging is for leads. {auth.refusal('tag')}")
        return
    with st.form("explore_tag_form", border=True):
        st.markdown(f"**Tag {names_line(selected_rows, chosen)}**")
        tag_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
        tag = tag_col.text_input("Tag", value="retrain", key="explore_tag", help="Find them later in History by tag.")
        if button_col.form_submit_button(f"Tag {len(chosen)} images", type="primary", icon=":material/sell:"):
            if not auth.allowed("tag"):
                st.error(auth.refusal("tag"))
            elif tag.strip():
                added = store.add_tags(chosen, [tag.strip()])
                st.success(f"Tagged {len(chosen)} images “{literal(tag.strip())}” ({added} new tags).")
            else:
                st.error("Type a tag first.")


def may_score() -> bool:
    """Whether this session may compute outlier scores (they tag near-duplicates: a lead's action); says so
    when not."""
    if auth.allowed("tag"):
        return True
    st.caption(f":material/lock: Computing scores tags near-duplicates, which is for leads. {auth.refusal('tag')}")
    return False


def render_outliers(store, f: InspectionFilter, card: ModelCard | None, timezone: str) -> None:
    """The ten inspections with the highest outlier score, the score up front."""
    top, _ = store.search(f, sort="outlier_score", descending=True, page_size=10)
    top = top[top["outlier_score"].notna()]
    if top.empty:
        st.caption("No outlier scores yet: press the button above.")
        return
    st.markdown("**Most unusual images**")
    show_inspections(
        top, card, key="explore_outliers_table", timezone=timezone, history=True, first_columns=("Outlier score",)
    )


def render_near_duplicates(frame: pd.DataFrame, vectors: np.ndarray) -> None:
    """Pairs of images on the map that the model sees as almost identical."""
    pairs = near_duplicate_pairs(tuple(int(i) for i in frame["inspection_id"]), vectors).copy()
    if not len(pairs):
        return
    names = dict(zip(frame["inspection_id"], frame["file_name"], strict=True))
    table = pd.DataFrame(
        {
            "File": pairs["inspection_id"].map(names),
            "Looks like (earlier)": pairs["duplicate_of"].map(names),
            "Similarity": pairs["similarity"],
            "Inspection": pairs["inspection_id"],
            "Earlier inspection": pairs["duplicate_of"],
        }
    )
    st.markdown(f"**Near-duplicates on the map** ({len(pairs)})")
    st.dataframe(table, hide_index=True, key="explore_near_duplicates")
