"""The Explore map as an Altair chart: one dot per inspection, coloured by label, severity, review state,
batch or outlier score, with thumbnail tooltips and a box selection."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from visionqc.labels import NO_VALUE
from visionqc.reporting import palette

COLOR_CHOICES = {
    "Defect": "defect",
    "Severity": "severity",
    "Review state": "review_state",
    "Batch": "batch_id",
    "Outlier score": "outlier_score",
}
REGION = "region"  # the name of the map's box selection (read back from the Streamlit event)


def review_state(needs_review, reviewed) -> str:
    if bool(reviewed):
        return "reviewed"
    return "needs review" if bool(needs_review) else "not reviewed"


def map_frame(rows: pd.DataFrame, xy: np.ndarray, thumbnails: list[str | None] | None = None) -> pd.DataFrame:
    """The rows the map draws: coordinates, labels for colour and tooltip, and an ``image`` data URL."""
    frame = pd.DataFrame(
        {
            "inspection_id": rows["inspection_id"].astype("int64").to_numpy(),
            "x": xy[:, 0] if len(xy) else [],
            "y": xy[:, 1] if len(xy) else [],
            "file_name": rows["file_name"].to_numpy(),
            "defect": rows["defect"].fillna(NO_VALUE).to_numpy(),
            "severity": rows["severity"].fillna(NO_VALUE).to_numpy(),
            "batch_id": rows["batch_id"].fillna(NO_VALUE).to_numpy(),
            "confidence": (rows["confidence"].astype(float) * 100).round(1).to_numpy(),
            "outlier_score": rows["outlier_score"].astype(float).round(4).to_numpy(),
            "review_state": [review_state(n, r) for n, r in zip(rows["needs_review"], rows["reviewed"], strict=True)],
        }
    )
    if thumbnails is not None:
        frame["image"] = thumbnails
    return frame


def map_chart(frame: pd.DataFrame, color_by: str = "defect", no_defect_label: str | None = None):
    """An Altair scatter plot of the map with a box selection named ``REGION`` and thumbnail tooltips.

    Severity and review state use the app's palette; defect types the categorical palette.
    """
    if color_by == "outlier_score":
        color = alt.Color("outlier_score:Q", title="Outlier score", scale=alt.Scale(scheme="viridis"))
    elif color_by == "severity":
        domain, colors = palette.severity_scale(frame["severity"].unique())
        color = alt.Color("severity:N", title="Severity", scale=alt.Scale(domain=domain, range=colors))
    elif color_by == "review_state":
        color = alt.Color(
            "review_state:N",
            title="Review state",
            scale=alt.Scale(
                domain=["needs review", "not reviewed", "reviewed"],
                range=[palette.action_color("Review"), palette.NEUTRAL_COLOR, palette.action_color("Pass")],
            ),
        )
    elif color_by == "defect":
        domain, colors = palette.category_scale(frame["defect"].unique(), no_defect_label=no_defect_label)
        color = alt.Color("defect:N", title="Defect", scale=alt.Scale(domain=domain, range=colors))
    else:
        color = alt.Color(f"{color_by}:N", title=color_by.replace("_", " ").capitalize())
    tooltip = [
        alt.Tooltip("file_name:N", title="File"),
        alt.Tooltip("defect:N", title="Defect"),
        alt.Tooltip("severity:N", title="Severity"),
        alt.Tooltip("confidence:Q", title="Confidence %"),
        alt.Tooltip("review_state:N", title="Review"),
        alt.Tooltip("outlier_score:Q", title="Outlier score"),
    ]
    if "image" in frame:
        tooltip.insert(0, alt.Tooltip("image:N", title="image"))  # vega-tooltip shows the "image" key as a picture
    region = alt.selection_interval(name=REGION, encodings=["x", "y"])
    return (
        alt.Chart(frame)
        .mark_circle(size=36)
        .encode(
            opacity=alt.condition(region, alt.value(0.8), alt.value(0.2)),
            x=alt.X("x:Q", title=None, axis=alt.Axis(labels=False, ticks=False)),
            y=alt.Y("y:Q", title=None, axis=alt.Axis(labels=False, ticks=False)),
            color=color,
            tooltip=tooltip,
        )
        .add_params(region)
        .properties(height=520)
    )
