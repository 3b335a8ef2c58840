"""Altair chart builders for the Dashboard, over the small aggregate frames of :mod:`visionqc.store.analytics`.

Every builder takes an aggregate (tens of rows, never raw inspections), returns an ``alt.Chart`` with a title,
axis titles, tooltips with counts and percentages, and colours from :mod:`visionqc.reporting.palette`. Charts that can
cross-filter carry a point selection named in :data:`SELECTIONS`; ``selected`` highlights the active values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import pandas as pd

from visionqc.reporting import palette

# Dimension -> name of the point selection on the chart that filters by it (read back from st.altair_chart).
SELECTIONS: dict[str, str] = {
    "defect": "pick_defect",
    "severity": "pick_severity",
    "location": "pick_location",
    "action": "pick_action",
}
# The one label that groups the types beyond the top N; it is not a real defect type and is never a filter.
OTHER_TYPES = "other types"
TOP_N = 10
WIDTH = 460
HEIGHT = 260
# Fit the width to the container (Streamlit) or WIDTH (PNG); the height is the plot's, so a legend or a
# subtitle never squeezes the bars. Streamlit would otherwise use "fit", which shrinks the plot instead.
AUTOSIZE = alt.AutoSizeParams(type="fit-x", contains="padding")
DIMMED = 0.25


def selection_name(dimension: str) -> str:
    """The name of the point selection that sets the cross-filter on ``dimension``."""
    return SELECTIONS[dimension]


def selection_values(selection: Mapping[str, Any] | None, dimension: str) -> list[str]:
    """The values picked on a chart, from ``st.altair_chart(..., on_select=...)``'s state for one selection.

    Point selections arrive as a list of ``{field: value}`` dicts; the "other types" bucket is not a value.
    """
    picked = []
    for point in selection or []:
        value = point.get(dimension) if isinstance(point, Mapping) else None
        if value is not None and value != OTHER_TYPES:
            picked.append(str(value))
    return list(dict.fromkeys(picked))


def _title(text: str, subtitle: str | None = None) -> alt.TitleParams:
    return alt.TitleParams(text, subtitle=subtitle or alt.Undefined, anchor="start", fontSize=15, subtitleFontSize=11)


def _pick(dimension: str, selected: Sequence[str] | None) -> alt.Parameter:
    """A click selection on one field; shift-click adds values. Starts with the active cross-filter values."""
    values = [{dimension: v} for v in selected or ()]
    return alt.selection_point(
        name=SELECTIONS[dimension], fields=[dimension], value=values or alt.Undefined, toggle="event.shiftKey"
    )


def _opacity(pick: alt.Parameter, selected: Sequence[str] | None) -> alt.OpacityValue:
    # With nothing picked every mark is fully drawn; Vega-Lite's "empty" default gives us exactly that.
    return alt.condition(pick, alt.value(1.0), alt.value(DIMMED))


def empty_chart(title: str, message: str, subtitle: str | None = None) -> alt.Chart:
    """A framed chart with a sentence in the middle, so an empty selection still says what would be here."""
    frame = pd.DataFrame({"message": [message]})
    return (
        alt.Chart(frame, title=_title(title, subtitle))
        .mark_text(fontSize=13, color="#666666")
        .encode(text="message:N")
        .properties(autosize=AUTOSIZE, width=WIDTH, height=HEIGHT)
    )


def top_defect_types(by_defect: pd.DataFrame, n: int = TOP_N) -> list[str]:
    """The ``n`` most frequent defect types by ``count`` (ties by name), most frequent first."""
    if by_defect.empty:
        return []
    totals = by_defect.groupby("defect", as_index=False)["count"].sum()
    totals = totals.sort_values(["count", "defect"], ascending=[False, True])
    return totals["defect"].head(n).tolist()


def defect_severity_bars(
    frame: pd.DataFrame,
    *,
    selected: Sequence[str] | None = None,
    subtitle: str | None = None,
    top_n: int = TOP_N,
) -> alt.Chart:
    """Horizontal stacked bars: defect type (top ``top_n`` by count) × severity.

    ``frame``: ``defect, severity, count, share`` (share of all inspections shown). Defect-free rows, if the
    caller kept them, carry severity "—" and are drawn in grey.
    """
    title = f"Defect types by severity (top {top_n})"
    if frame.empty or frame["count"].sum() == 0:
        return empty_chart(title, "No defects in this selection", subtitle)
    order = top_defect_types(frame, top_n)
    data = frame[frame["defect"].isin(order)].copy()
    totals = data.groupby("defect")["count"].transform("sum")
    data["type_total"] = totals
    data["share_of_type"] = data["count"] / totals
    domain, colors = palette.severity_scale(data["severity"])
    pick = _pick("defect", selected)
    return (
        alt.Chart(data, title=_title(title, subtitle))
        .mark_bar()
        .encode(
            y=alt.Y("defect:N", sort=order, title="Defect type", axis=alt.Axis(labelLimit=160)),
            x=alt.X("sum(count):Q", title="Inspections", stack="zero"),
            color=alt.Color(
                "severity:N",
                scale=alt.Scale(domain=domain, range=colors),
                sort=domain,
                legend=alt.Legend(title="Severity", orient="bottom"),
            ),
            order=alt.Order("severity_rank:Q"),
            opacity=_opacity(pick, selected),
            tooltip=[
                alt.Tooltip("defect:N", title="Defect type"),
                alt.Tooltip("severity:N", title="Severity"),
                alt.Tooltip("count:Q", title="Inspections", format=","),
                alt.Tooltip("share_of_type:Q", title="Share of this type", format=".1%"),
                alt.Tooltip("share:Q", title="Share of all inspections", format=".1%"),
                alt.Tooltip("type_total:Q", title="All of this type", format=","),
            ],
        )
        .transform_calculate(severity_rank=_rank_expression(domain))
        .add_params(pick)
        .properties(autosize=AUTOSIZE, width=WIDTH, height=max(180, 30 * len(order)))
    )


def _rank_expression(domain: Sequence[str]) -> str:
    """A Vega expression giving each severity its position in ``domain`` (stack order lowest first)."""
    quoted = ", ".join("'" + str(s).replace("'", "\\'") + "'" for s in domain)
    return f"indexof([{quoted}], datum.severity)"


def daily_trend(frame: pd.DataFrame, *, subtitle: str | None = None, time_zone: str | None = None) -> alt.Chart:
    """Bars of inspections per day with the defect rate as a line on its own axis.

    ``frame``: ``day`` (date, local to ``time_zone``), ``inspected``, ``defects``, ``defect_rate`` (NaN where
    nothing was inspected, which breaks the line rather than pretending 0 %).
    """
    title = "Daily volume and defect rate"
    if frame.empty or frame["inspected"].sum() == 0:
        return empty_chart(title, "No inspections in this period", subtitle)
    data = frame.copy()
    # ISO dates are read as UTC midnight by Vega-Lite; with utc time units the local day is never shifted.
    data["day"] = pd.to_datetime(data["day"]).dt.strftime("%Y-%m-%d")
    day_title = f"Day ({time_zone})" if time_zone else "Day"
    x = alt.X("utcyearmonthdate(day):T", title=day_title, axis=alt.Axis(format="%d %b", labelAngle=0))
    tooltip = [
        alt.Tooltip("utcyearmonthdate(day):T", title="Day", format="%a %d %b %Y"),
        alt.Tooltip("inspected:Q", title="Inspected", format=","),
        alt.Tooltip("defects:Q", title="Defective", format=","),
        alt.Tooltip("defect_rate:Q", title="Defect rate", format=".1%"),
    ]
    base = alt.Chart(data)
    bars = base.mark_bar(color="#8fb3d9", opacity=0.85).encode(
        x=x, y=alt.Y("inspected:Q", title="Inspected per day", axis=alt.Axis(titleColor="#4e79a7")), tooltip=tooltip
    )
    rate_y = alt.Y(
        "defect_rate:Q",
        title="Defect rate",
        axis=alt.Axis(format="%", titleColor="#b22222", orient="right"),
        scale=alt.Scale(domainMin=0),
    )
    x_mid = alt.X("utcyearmonthdate(day):T", bandPosition=0.5)
    line = base.mark_line(color="#b22222", strokeWidth=2).encode(x=x_mid, y=rate_y)
    points = base.mark_point(color="#b22222", filled=True, size=40).encode(x=x_mid, y=rate_y, tooltip=tooltip)
    return (
        alt.layer(bars, line, points, title=_title(title, subtitle))
        .resolve_scale(y="independent")
        .properties(autosize=AUTOSIZE, width=WIDTH, height=HEIGHT)
    )


def _ratio_donut(
    frame: pd.DataFrame,
    dimension: str,
    *,
    title: str,
    field_title: str,
    domain: list[str],
    colors: list[str],
    selected: Sequence[str] | None,
    subtitle: str | None,
    empty_message: str,
) -> alt.Chart:
    if frame.empty or frame["count"].sum() == 0:
        return empty_chart(title, empty_message, subtitle)
    pick = _pick(dimension, selected)
    return (
        alt.Chart(frame, title=_title(title, subtitle))
        .mark_arc(innerRadius=60, stroke="#ffffff", strokeWidth=1)
        .encode(
            theta=alt.Theta("count:Q", stack=True),
            color=alt.Color(
                f"{dimension}:N",
                scale=alt.Scale(domain=domain, range=colors),
                sort=domain,
                legend=alt.Legend(title=field_title, orient="right"),
            ),
            order=alt.Order("order:Q"),
            opacity=_opacity(pick, selected),
            tooltip=[
                alt.Tooltip(f"{dimension}:N", title=field_title),
                alt.Tooltip("count:Q", title="Inspections", format=","),
                alt.Tooltip("share:Q", title="Share", format=".1%"),
            ],
        )
        .transform_calculate(order=_index_expression(dimension, domain))
        .add_params(pick)
        .properties(autosize=AUTOSIZE, width=WIDTH, height=HEIGHT)
    )


def _index_expression(field: str, domain: Sequence[str]) -> str:
    quoted = ", ".join("'" + str(v).replace("'", "\\'") + "'" for v in domain)
    return f"indexof([{quoted}], datum['{field}'])"


def defect_ratio(
    frame: pd.DataFrame,
    *,
    selected: Sequence[str] | None = None,
    subtitle: str | None = None,
    no_defect_label: str | None = None,
    top_n: int = TOP_N - 1,
) -> alt.Chart:
    """Donut of defect types: the top ``top_n`` and one "other types" slice. ``frame``: ``defect, count``."""
    data = collapse_other(frame, "defect", top_n)
    domain, colors = palette.category_scale(data["defect"], no_defect_label, OTHER_TYPES)
    return _ratio_donut(
        data,
        "defect",
        title="Defect type ratio",
        field_title="Defect type",
        domain=domain,
        colors=colors,
        selected=selected,
        subtitle=subtitle,
        empty_message="No defects in this selection",
    )


def collapse_other(frame: pd.DataFrame, dimension: str, top_n: int) -> pd.DataFrame:
    """Keep the ``top_n`` largest rows by ``count``, sum the rest into one "other types" row; recompute share."""
    data = frame.sort_values(["count", dimension], ascending=[False, True])
    if len(data) > top_n + 1:
        rest = data.iloc[top_n:]
        data = pd.concat(
            [data.iloc[:top_n], pd.DataFrame({dimension: [OTHER_TYPES], "count": [int(rest["count"].sum())]})],
            ignore_index=True,
        )
    data = data[[dimension, "count"]].reset_index(drop=True)
    total = data["count"].sum()
    data["share"] = data["count"] / total if total else 0.0
    return data


def severity_ratio(
    frame: pd.DataFrame, *, selected: Sequence[str] | None = None, subtitle: str | None = None
) -> alt.Chart:
    """Donut of severities among defective inspections, lowest first. ``frame``: ``severity, count, share``."""
    domain, colors = palette.severity_scale(frame["severity"]) if not frame.empty else ([], [])
    return _ratio_donut(
        frame,
        "severity",
        title="Severity ratio (defective inspections)",
        field_title="Severity",
        domain=domain,
        colors=colors,
        selected=selected,
        subtitle=subtitle,
        empty_message="No defects in this selection",
    )


def action_ratio(
    frame: pd.DataFrame, *, selected: Sequence[str] | None = None, subtitle: str | None = None
) -> alt.Chart:
    """Donut of the actions taken (effective labels). ``frame``: ``action, count, share``."""
    domain, colors = palette.action_scale(frame["action"]) if not frame.empty else ([], [])
    return _ratio_donut(
        frame,
        "action",
        title="Action ratio",
        field_title="Action",
        domain=domain,
        colors=colors,
        selected=selected,
        subtitle=subtitle,
        empty_message="No inspections in this selection",
    )


def location_bars(
    frame: pd.DataFrame, *, selected: Sequence[str] | None = None, subtitle: str | None = None
) -> alt.Chart:
    """Bars of defective inspections per location, most first. ``frame``: ``location, count, share``."""
    title = "Defects by location"
    if frame.empty or frame["count"].sum() == 0:
        return empty_chart(title, "No defects in this selection", subtitle)
    order = frame.sort_values(["count", "location"], ascending=[False, True])["location"].tolist()
    pick = _pick("location", selected)
    return (
        alt.Chart(frame, title=_title(title, subtitle))
        .mark_bar(color="#4e79a7")
        .encode(
            x=alt.X(
                "location:N",
                sort=order,
                title="Location on the part",
                axis=alt.Axis(labelAngle=-30, labelOverlap=False),
            ),
            y=alt.Y("count:Q", title="Defective inspections"),
            opacity=_opacity(pick, selected),
            tooltip=[
                alt.Tooltip("location:N", title="Location"),
                alt.Tooltip("count:Q", title="Defective inspections", format=","),
                alt.Tooltip("share:Q", title="Share of defects", format=".1%"),
            ],
        )
        .add_params(pick)
        .properties(autosize=AUTOSIZE, width=WIDTH, height=HEIGHT)
    )


def color_scale_of(chart: alt.TopLevelMixin) -> dict[str, str]:
    """Value -> colour of a chart's colour encoding (for tests and for checking consistency between charts)."""
    spec = chart.to_dict()
    layers = spec.get("layer", [spec])
    for layer in layers:
        scale = layer.get("encoding", {}).get("color", {}).get("scale")
        if scale and "domain" in scale:
            return dict(zip(scale["domain"], scale["range"], strict=True))
    return {}
