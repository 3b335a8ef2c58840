"""Inspect's first-run notice: when a batch looks foreign to the active model (most images out of distribution),
say so in plain words and show the way to a model for these parts."""

from __future__ import annotations

import contextlib

import streamlit as st

from visionqc.model.card import ModelCard
from visionqc.registry.fit import batch_fit


def render_foreign_batch_notice(rows, card: ModelCard | None) -> None:
    """``rows``: the batch's inspections (``Store.batch_rows``). Shows nothing when the model knows the images."""
    if card is None or rows is None or len(rows) == 0 or "ood_score" not in rows:
        return
    fit = batch_fit([None if v != v else float(v) for v in rows["ood_score"]], card.ood_threshold)
    if not fit.looks_foreign:
        return
    with st.container(border=True):
        st.warning(
            f"**These photos look unlike anything the active model was trained on.** {fit.foreign} of {fit.images} "
            f"are outside what **{card.name} v{card.version}** knows, so its labels for them are guesses, not "
            "inspections. To teach VisionQC your parts: **train an anomaly model from good photos** (a few dozen "
            "photos of good parts, no labelled defects needed: it flags whatever looks unlike them), or **train a "
            "classifier from labelled photos** (an archive, or a dataset built from your reviews of these photos).",
            icon=":material/travel_explore:",
        )
        with contextlib.suppress(st.errors.StreamlitAPIException):  # the page runs on its own in some tests
            left, right = st.columns(2)
            left.page_link(
                "pages/6_Models.py", label="Train an anomaly model from good photos (Models → Train)",
                icon=":material/model_training:",
            )  # fmt: skip
            right.page_link(
                "pages/6_Models.py", label="Train a classifier from labelled photos (Models → Datasets)",
                icon=":material/dataset:",
            )  # fmt: skip
