"""The Models page's "Compare & promote" tab: two versions on the same labelled images, side by side (accuracy,
balanced accuracy, per-class recall, confusion matrices, needs-review rate, speed, the images where they
disagree), and promotion, which is offered only with a comparison on screen."""

from __future__ import annotations

import streamlit as st

from visionqc.datasets.checks import DatasetProblem
from visionqc.jobs import compare
from visionqc.model.card import read_card
from visionqc.registry import ModelRegistry
from visionqc.reporting import model_card as mc
from visionqc.reporting import models as report
from visionqc.store import Store
from visionqc.store.images import thumbnail_file
from visionqc.ui.confirm import confirm_button
from visionqc.ui.registry_view import switch
from visionqc.ui.sidebar import signed_name
from visionqc.ui.tables import thumbnail_url

OWN_TEST_SPLIT = "The candidate's own held-out test images"
RESULT = "models_compare_result"


def render_compare(store: Store, registry: ModelRegistry) -> None:
    versions = registry.versions()
    if len(versions) < 2:
        st.info(
            "Only one model is registered. Train one on the **Train** tab, then compare it here.",
            icon=":material/info:",
        )
        return
    labels = {v.label: v for v in versions}
    active = registry.active()
    others = [v.label for v in versions if not active or v.label != active.label]
    left, middle, right = st.columns(3)
    baseline = labels[left.selectbox("Baseline (what you use now)", list(labels), index=list(labels).index(active.label)
                                     if active else 0, key="models_compare_baseline")]  # fmt: skip
    candidate = labels[middle.selectbox("Candidate", others, key="models_compare_candidate")]
    datasets = [OWN_TEST_SPLIT, *store.datasets()["dataset_id"]]
    picked = right.selectbox("Compared on", datasets, key="models_compare_dataset")
    dataset = None if picked == OWN_TEST_SPLIT else picked
    if st.button("Compare", type="primary", icon=":material/compare_arrows:", key="models_compare_go",
                 disabled=baseline.label == candidate.label):  # fmt: skip
        _run(store, baseline, candidate, dataset)
    result = st.session_state.get(RESULT)
    if result is None or (result["baseline"]["label"], result["candidate"]["label"]) != (
        baseline.label,
        candidate.label,
    ):
        result = compare.load(store.home, baseline, candidate, dataset)
    if result is None and candidate.kind == "anomaly":
        _anomaly_without_comparison(registry, candidate, active)
        return
    if result is None:
        st.caption("Press **Compare**: both versions classify the same labelled images (a few seconds per hundred).")
        return
    _show(store, result)
    _promote(registry, candidate, active)


def _run(store: Store, baseline, candidate, dataset: str | None) -> None:
    bar = st.progress(0.0, text="Classifying…")

    def progress(done: int, total: int) -> None:
        who = baseline.label if done <= total // 2 else candidate.label
        bar.progress(done / max(total, 1), text=f"{who}: {done:,} of {total:,} classifications")

    try:
        result = compare.compare(store, baseline, candidate, dataset=dataset, progress=progress)
    except DatasetProblem as exc:
        bar.empty()
        st.error(f"Cannot compare: {exc}.", icon=":material/error:")
        return
    bar.empty()
    compare.save(store.home, result, baseline, candidate, dataset)
    st.session_state[RESULT] = result


def _show(store: Store, result: dict) -> None:
    base, cand = result["baseline"], result["candidate"]
    st.markdown(
        f"**{result['images']:,} images** of {result['dataset']} · measured {result['measured_at'].replace('T', ' ')}"
    )
    cols = st.columns(3)
    for col, key, label in ((cols[0], "accuracy", "Accuracy"), (cols[1], "balanced_accuracy", "Balanced accuracy")):
        change = f"{100 * (cand[key] - base[key]):+.1f} points"
        col.metric(f"{label}: {cand['label']}", f"{100 * cand[key]:.1f}%", change, border=True)
    cols[2].metric(
        "Images where they disagree", f"{len(result['disagreements']):,}", border=True,
        help=f"Their defect labels differ; their actions differ on {result['actions_changed']:,} image(s).",
    )  # fmt: skip
    table_col, recall_col = st.columns(2, gap="large")
    table_col.markdown("**Side by side**")
    table_col.dataframe(report.comparison_table(result), hide_index=True, width="stretch", key="models_compare_table")
    recall_col.markdown("**Recall per true class (%)**")
    recall_col.dataframe(report.recall_table(result), hide_index=True, width="stretch", key="models_compare_recall")
    st.caption(
        f"Speed: both measured in this run, one after the other (load average {result['load_average'][0]}): read it "
        "as a ratio, not an absolute."
    )
    for col, side in zip(st.columns(2, gap="large"), (base, cand), strict=True):
        col.altair_chart(mc.confusion_chart(side["confusion_matrix"], title=f"{side['label']}: confusion matrix"),
                         key=f"models_compare_cm_{side['label']}")  # fmt: skip
    st.markdown(f"**Where they disagree** ({len(result['disagreements']):,} images)")
    if result["disagreements"]:
        thumbs = [thumbnail_url(str(thumbnail_file(store.home, d["sha256"]))) for d in result["disagreements"]]
        st.dataframe(
            report.disagreements_table(result, thumbs),
            hide_index=True,
            width="stretch",
            row_height=64,
            key="models_compare_gallery",
            column_config={"Image": st.column_config.ImageColumn("Image", width="small")},
        )


def _anomaly_without_comparison(registry: ModelRegistry, candidate, active) -> None:
    """A new line often has no labelled photos to compare on: an anomaly model can then be promoted on what its
    card measured on held-out good photos (a comparison on a labelled dataset is offered first)."""
    validation = (read_card(candidate.path).raw.get("metrics") or {}).get("validation") or {}
    flagged = validation.get("good_flagged_share")
    measured = f" It flagged {flagged:.0%} of its held-out good photos." if flagged is not None else ""
    st.info(
        f"**{candidate.label}** is an anomaly model (trained on good photos only). With a labelled dataset, press "
        f"**Compare** to see how often each model finds the defects; without one yet, you can promote it on its "
        f"own held-out numbers.{measured}",
        icon=":material/info:",
    )
    _promote(registry, candidate, active)


def _promote(registry: ModelRegistry, candidate, active) -> None:
    if active and candidate.label == active.label:
        st.caption(f"{candidate.label} is already the active model.")
        return
    by = signed_name("recorded in the audit trail")
    if confirm_button(
        f"Promote {candidate.label}",
        f"Make {candidate.label} the active model for every new inspection (instead of "
        f"{active.label if active else 'none'})? Rollback is one click on the Versions tab.",
        key="models_promote",
        yes="Yes, promote",
        icon=":material/rocket_launch:",
        disabled=not by,
    ):
        switch(registry, candidate, by=by, action="promote")
    if not by:
        st.caption("Enter your name to promote.")
