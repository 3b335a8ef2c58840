"""Explore: a 2-D map of the stored image embeddings; drag a box to list and tag images; outliers, near-duplicates."""

import streamlit as st

from visionqc.explore.projection import DEFAULT_MAP_POINTS, PROJECTIONS, TSNE_MAX_POINTS, warm_up_umap
from visionqc.explore.scores import NEAR_DUPLICATE_TAG, NEAR_DUPLICATE_THRESHOLD, update_scores
from visionqc.reporting.explore_map import COLOR_CHOICES
from visionqc.ui import explore, pages, resources
from visionqc.ui.filters import history_filters

pages.through_the_app(__file__)  # nothing of a page runs outside the app's navigation

st.title("Explore")
st.caption(
    "Every dot is an inspected image, placed by what the model sees in it: similar images sit together. "
    "Hover a dot to see the image; drag a box on the map to list those images and tag them (e.g. `retrain`). "
    "Dots far from their colour's group are worth a look: odd images or wrong labels."
)
store = resources.get_store()
card = resources.active_card()
timezone = resources.browser_timezone()
warm_up_umap()  # UMAP's code compiles in the background meanwhile (once per server), ready when it is chosen

with st.expander("Filters (the same as History)", expanded=False, icon=":material/filter_alt:"):
    flt = history_filters(store, card, key="explore", timezone=timezone)

method_col, color_col, size_col = st.columns(3)
method = method_col.radio(
    "Map",
    PROJECTIONS,
    horizontal=True,
    key="explore_method",
    help="PCA: fast, keeps the large-scale layout. t-SNE: slower, separates groups more clearly (up to "
    f"{TSNE_MAX_POINTS:,} images). UMAP: separates groups and keeps more of the layout, a few seconds (up to "
    "20 s if chosen in the first seconds after the server started, while its library loads).",
)
color_label = color_col.selectbox("Colour by", list(COLOR_CHOICES), key="explore_color")
max_points = size_col.select_slider(
    "Images on the map (at most)",
    options=[500, 1000, 2000, 5000],
    value=DEFAULT_MAP_POINTS,
    key="explore_points",
    help="Larger sets are shown as a fixed random sample, so the page stays responsive.",
)
if method == "t-SNE":
    max_points = min(max_points, TSNE_MAX_POINTS)


rows, vectors, total = store.map_points(flt, max_points=max_points, seed=0)
if total == 0:
    st.info("No inspections match. Inspect some images first, or clear the filters.", icon=":material/info:")
    st.stop()
xy = explore.projected(tuple(int(i) for i in rows["inspection_id"]), vectors, method)
shown = f"all {total:,}" if len(rows) == total else f"a random sample of {len(rows):,} of {total:,}"
st.markdown(f"**{total:,} inspections match** · the map shows {shown}")

frame, chosen = explore.render_map(rows, xy, color_label, card)
if chosen:
    explore.render_selection(store, chosen, card, timezone)
else:
    st.caption("Drag a box on the map to select images (double-click the map to clear the box).")

st.divider()
st.subheader("Outliers and near-duplicates")
st.caption(
    "The outlier score is how far an image is from the training images of the class it is labelled as "
    "(0 = typical, higher = odder; sort History by it). Near-duplicates are images the model sees as almost "
    f"identical (cosine similarity ≥ {NEAR_DUPLICATE_THRESHOLD}); they get the tag "
    f"`{NEAR_DUPLICATE_TAG}`."
)
if explore.may_score() and st.button(
    "Compute scores for the filtered inspections", icon=":material/calculate:", key="explore_scores"
):
    predictor = resources.get_predictor()
    with st.spinner("Scoring…"):
        result = update_scores(store, predictor.training_bank() if predictor else None, flt)
    st.success(
        f"Scored {result.scored:,} inspections; {result.near_duplicate_pairs:,} near-duplicate pairs "
        f"({result.tagged:,} new tags)."
    )
explore.render_outliers(store, flt, card, timezone)
explore.render_near_duplicates(frame, vectors)
