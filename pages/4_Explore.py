"""Explore: a 2-D map of the stored image embeddings; drag a box to list and tag images; outliers, near-duplicates."""

import pandas as pd
import streamlit as st

from visionqc import app_state as ui
from visionqc import explore
from visionqc.store import HistoryFilter
from visionqc.ui_filters import history_filters

st.title("Explore")
st.caption(
    "Every dot is an inspected image, placed by what the model sees in it: similar images sit together. "
    "Hover a dot to see the image; drag a box on the map to list those images and tag them (e.g. `retrain`). "
    "Dots far from their colour's group are worth a look: odd images or wrong labels."
)
store = ui.get_store()
card = ui.active_card()
timezone = ui.browser_timezone()

with st.expander("Filters (the same as History)", expanded=False, icon=":material/filter_alt:"):
    flt = history_filters(store, card, key="explore", timezone=timezone)

method_col, color_col, size_col = st.columns(3)
method = method_col.radio(
    "Map",
    explore.PROJECTIONS,
    horizontal=True,
    key="explore_method",
    help="PCA: fast, keeps the large-scale layout. t-SNE: slower, separates groups more clearly (up to "
    f"{explore.TSNE_MAX_POINTS:,} images). UMAP: separates groups and keeps more of the layout; the first map "
    "takes 15-30 s while its library loads, later ones a few seconds.",
)
color_label = color_col.selectbox("Colour by", list(explore.COLOR_CHOICES), key="explore_color")
max_points = size_col.select_slider(
    "Images on the map (at most)",
    options=[500, 1000, 2000, 5000],
    value=explore.DEFAULT_MAP_POINTS,
    key="explore_points",
    help="Larger sets are shown as a fixed random sample, so the page stays responsive.",
)
if method == "t-SNE":
    max_points = min(max_points, explore.TSNE_MAX_POINTS)


@st.cache_data(show_spinner="Placing the images on the map…", max_entries=8)
def projected(ids: tuple[int, ...], _vectors, method: str):
    # Keyed by the ids shown (the sample is deterministic), so reruns and tagging do not recompute it.
    return explore.project(_vectors, method, seed=0)


@st.cache_data(show_spinner=False, max_entries=8)
def near_duplicate_pairs(ids: tuple[int, ...], _vectors):
    return explore.near_duplicates(list(ids), _vectors)


rows, vectors, total = explore.load_map_points(store, flt, max_points=max_points, seed=0)
if total == 0:
    st.info("No inspections match. Inspect some images first, or clear the filters.", icon=":material/info:")
    st.stop()
xy = projected(tuple(int(i) for i in rows["inspection_id"]), vectors, method)
shown = f"all {total:,}" if len(rows) == total else f"a random sample of {len(rows):,} of {total:,}"
st.markdown(f"**{total:,} inspections match** · the map shows {shown}")

frame = explore.map_frame(rows, xy, [ui.thumbnail_url(p) for p in rows["thumb_file"]])
chart = explore.map_chart(
    frame, explore.COLOR_CHOICES[color_label], no_defect_label=card.no_defect_class if card else None
)
event = st.altair_chart(chart, on_select="rerun", selection_mode=[explore.REGION], key="explore_map")
chosen = explore.selected_ids(frame, event)

if not chosen:
    st.caption("Drag a box on the map to select images (double-click the map to clear the box).")
else:
    st.subheader(f"{len(chosen)} selected")
    selected_rows, _ = store.search(HistoryFilter(ids=chosen), sort="outlier_score", page_size=0)
    st.dataframe(
        ui.inspections_table(selected_rows, timezone=timezone, history=True),
        column_config=ui.table_column_config(card, timezone=timezone),
        hide_index=True,
        row_height=64,
        placeholder=ui.NO_VALUE,
        key="explore_selected_table",
    )
    with st.form("explore_tag_form", border=True):
        tag_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
        tag = tag_col.text_input("Tag", value="retrain", key="explore_tag", help="Find them later in History by tag.")
        if button_col.form_submit_button(f"Tag {len(chosen)} images", type="primary", icon=":material/sell:"):
            if tag.strip():
                added = store.add_tags(chosen, [tag.strip()])
                st.success(f"Tagged {len(chosen)} images “{tag.strip()}” ({added} new tags).")
            else:
                st.error("Type a tag first.")

st.divider()
st.subheader("Outliers and near-duplicates")
st.caption(
    "The outlier score is how far an image is from the training images of the class it is labelled as "
    "(0 = typical, higher = odder; sort History by it). Near-duplicates are images the model sees as almost "
    f"identical (cosine similarity ≥ {explore.NEAR_DUPLICATE_THRESHOLD}); they get the tag "
    f"`{explore.NEAR_DUPLICATE_TAG}`."
)
if st.button("Compute scores for the filtered inspections", icon=":material/calculate:", key="explore_scores"):
    predictor = ui.get_predictor()
    with st.spinner("Scoring…"):
        result = explore.update_scores(store, predictor, flt)
    st.success(
        f"Scored {result.scored:,} inspections; {result.near_duplicate_pairs:,} near-duplicate pairs "
        f"({result.tagged:,} new tags)."
    )
top, _ = store.search(flt, sort="outlier_score", descending=True, page_size=10)
top = top[top["outlier_score"].notna()]
if top.empty:
    st.caption("No outlier scores yet: press the button above.")
else:
    st.markdown("**Most unusual images**")
    unusual = ui.inspections_table(top, timezone=timezone, history=True)
    unusual.insert(2, "Outlier score", unusual.pop("Outlier score"))  # the reason it is listed, up front
    st.dataframe(
        unusual,
        column_config=ui.table_column_config(card, timezone=timezone),
        hide_index=True,
        row_height=64,
        placeholder=ui.NO_VALUE,
        key="explore_outliers_table",
    )
pairs = near_duplicate_pairs(tuple(int(i) for i in frame["inspection_id"]), vectors).copy()
if len(pairs):
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
