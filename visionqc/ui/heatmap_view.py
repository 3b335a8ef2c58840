"""The photo with its heatmap overlay and an opacity control, for every page that shows one inspection
(Inspect and History detail views, the review queue).

Heatmaps are computed when a person looks at an inspection (never during batch classification) and kept
in ``<VISIONQC_HOME>/heatmaps`` by image SHA-256 and model version, so the second look is instant.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from visionqc import config
from visionqc.intake.imaging import ImageDecodeError, decode_image

HEATMAP_HELP = (
    "Where the model looked to decide the defect type: warm colours = strong evidence. The cyan box marks the "
    "hottest region of a defect. For an image judged defect-free, the map (without a box) shows where the "
    "likeliest defect would be."
)
ANOMALY_HEATMAP_HELP = (
    "Where the photo looks unlike every good part the anomaly model learned from: blue = like a good part, orange "
    "to red = past the model's threshold. The cyan box marks the most unusual region of a flagged photo."
)


def heatmap_cache():
    """The on-disk heatmap cache of the data folder (the heatmap module, and torch, load on first use)."""
    from visionqc.model.heatmaps import HeatmapCache

    return HeatmapCache(config.data_dir() / "heatmaps")


def display_width(detail: dict, max_height: int = 560) -> int | str:
    """Tall photos get a width that fits ``max_height``; others fill their column."""
    width, height = detail.get("width") or 1, detail.get("height") or 1
    return max(160, int(max_height * width / height)) if height > 1.3 * width else "stretch"


def render_image_with_heatmap(detail: dict, predictor, *, key: str, width: int | str | None = None) -> None:
    """Show the inspection's stored photo; with a model loaded, a heatmap toggle and opacity slider above it."""
    width = display_width(detail) if width is None else width
    image_file = detail.get("image_file")
    if image_file is None or not Path(image_file).is_file():
        st.warning("The stored image file is missing from the data folder.")
        return
    try:
        image = decode_image(Path(image_file).read_bytes()).image
    except ImageDecodeError as exc:
        st.warning(f"The stored image cannot be read: {exc}")
        return
    caption = detail.get("file_name") or ""
    if predictor is not None:
        on_col, opacity_col = st.columns([1, 2], vertical_alignment="bottom")
        anomaly = hasattr(predictor, "input_heatmap")  # an anomaly model maps its patch distances
        show = on_col.toggle(
            "Heatmap", value=True, key=f"{key}_heatmap_on", help=ANOMALY_HEATMAP_HELP if anomaly else HEATMAP_HELP
        )
        opacity = opacity_col.slider(
            "Heatmap opacity", 0, 100, 50, step=5, format="%d%%", key=f"{key}_heatmap_opacity", disabled=not show
        )
        if show:
            from visionqc.model.heatmaps import overlay

            first = "" if predictor.heatmap_ready else " (the first one also loads the network: a few seconds)"
            with st.spinner(f"Computing the heatmap…{first}"):
                heat = heatmap_cache().get_or_compute(predictor, image, str(detail["sha256"]))
            # A box says "the defect is here": never on a photo judged (or reviewed) defect-free.
            image = overlay(image, heat, opacity / 100, draw_box=bool(detail.get("is_defect")))
            caption = f"{caption} · heatmap for “{heat.defect}” ({predictor.model_name} {predictor.model_version})"
    st.image(image, caption=caption, width=width)
