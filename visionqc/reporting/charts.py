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
TOP_N = 10
WIDTH = 460
HEIGHT = 260
# Fit the width to the container (Streamlit) or WIDTH (PNG); the height is the plot's, so a legend or a
# subtitle never squeezes the bars. Streamlit would otherwise use "fit", which shrinks the plot instead.
AUTOSIZE = alt.AutoSizeParams(type="fit-x", contains="padding")
DIMMED = 0.25
# Counts are whole numbers: never a tick at 0.5.
COUNT_AXIS_OPTIONS = {"tickMinStep": 1, "format": "d"}
COUNT_AXIS = alt.Axis(**COUNT_AXIS_OPTIONS)


def selection_name(dimension: str) -> str:
    """The name of the point selection that sets the cross-filter on ``dimension``."""
    return SELECTIONS[dimension]


def selection_values(selection: Mapping[str, Any] | None, dimension: str) -> list[str]:
    """The values picked on a chart, from ``st.altair_chart(..., on_select=...)``'s state for one selection.

    Point selections arrive as a list of ``{field: value}`` dicts.
    """
    picked = []
    for point in selection or []:
        value = point.get(dimension) if isinstance(point, Mapping) else None
        if value is not None:
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
            x=alt.X("sum(count):Q", title="Inspections", stack="zero", axis=COUNT_AXIS),
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
        x=x,
        y=alt.Y("inspected:Q", title="Inspected per day", axis=alt.Axis(titleColor="#4e79a7", **COUNT_AXIS_OPTIONS)),
        tooltip=tooltip,
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


def _ratio_bars(
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
    """A ratio as horizontal bars in ``domain`` order, each labelled with its count and share (on screen and in
    the PNG): a printed page shows the numbers, not only the shapes."""
    if frame.empty or frame["count"].sum() == 0:
        return empty_chart(title, empty_message, subtitle)
    data = frame.copy()
    data["label"] = [f"{int(n):,}  ({share:.1%})" for n, share in zip(data["count"], data["share"], strict=True)]
    pick = _pick(dimension, selected)
    y = alt.Y(f"{dimension}:N", sort=domain, title=field_title, axis=alt.Axis(labelLimit=160))
    base = alt.Chart(data, title=_title(title, subtitle)).encode(
        y=y,
        x=alt.X(
            "count:Q",
            title="Inspections",
            axis=COUNT_AXIS,
            scale=alt.Scale(domain=[0, float(data["count"].max()) * 1.3]),  # room for the labels
        ),
        tooltip=[
            alt.Tooltip(f"{dimension}:N", title=field_title),
            alt.Tooltip("count:Q", title="Inspections", format=","),
            alt.Tooltip("share:Q", title="Share", format=".1%"),
        ],
    )
    bars = base.mark_bar().encode(
        color=alt.Color(f"{dimension}:N", scale=alt.Scale(domain=domain, range=colors), sort=domain, legend=None),
        opacity=_opacity(pick, selected),
    )
    labels = base.mark_text(align="left", dx=4, fontSize=12, color="#1b1f24").encode(text="label:N")
    return alt.layer(bars.add_params(pick), labels).properties(
        autosize=AUTOSIZE, width=WIDTH, height=max(120, 38 * len(domain))
    )


def _index_expression(field: str, domain: Sequence[str]) -> str:
    quoted = ", ".join("'" + str(v).replace("'", "\\'") + "'" for v in domain)
    return f"indexof([{quoted}], datum['{field}'])"


def severity_ratio(
    frame: pd.DataFrame, *, selected: Sequence[str] | None = None, subtitle: str | None = None
) -> alt.Chart:
    """Labelled bars of severities among defective inspections, lowest first. ``frame``: ``severity, count, share``."""
    domain, colors = palette.severity_scale(frame["severity"]) if not frame.empty else ([], [])
    return _ratio_bars(
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
    """Labelled bars of the actions taken (effective labels). ``frame``: ``action, count, share``."""
    domain, colors = palette.action_scale(frame["action"]) if not frame.empty else ([], [])
    return _ratio_bars(
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
            y=alt.Y("count:Q", title="Defective inspections", axis=COUNT_AXIS),
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


def group_comparison(frame: pd.DataFrame, *, by: str = "station", subtitle: str | None = None) -> alt.TopLevelMixin:
    """Stations (or operators) side by side: the defect rate of each, labelled with its value and the number
    inspected, beside the mix of actions each one got (100 % stacked). ``frame``: see
    :func:`visionqc.store.analytics.comparison`."""
    noun = "Station" if by == "station" else "Operator"
    title = f"{noun}s compared: defect rate and action mix"
    if frame.empty:
        return empty_chart(title, "No inspections in this selection", subtitle)
    groups = frame.drop_duplicates("group").sort_values(["defect_rate", "group"], ascending=[False, True])
    order = groups["group"].tolist()
    rates = groups.assign(
        label=[f"{r:.1%} of {n:,}" for r, n in zip(groups["defect_rate"], groups["inspected"], strict=True)]
    )
    y = alt.Y("group:N", sort=order, title=noun, axis=alt.Axis(labelLimit=120))
    top = float(rates["defect_rate"].max())
    rate_base = alt.Chart(rates).encode(
        y=y,
        x=alt.X(
            "defect_rate:Q",
            title="Defect rate",
            axis=alt.Axis(format="%"),
            scale=alt.Scale(domain=[0, min(1.0, max(0.05, top * 1.6))], nice=False),
        ),
        tooltip=[
            alt.Tooltip("group:N", title=noun),
            alt.Tooltip("inspected:Q", title="Inspected", format=","),
            alt.Tooltip("defects:Q", title="Defective", format=","),
            alt.Tooltip("defect_rate:Q", title="Defect rate", format=".1%"),
        ],
    )
    # The value sits beside a short bar and inside a long one, so it never runs off the chart.
    long_bar = alt.datum.defect_rate > 0.55 * min(1.0, max(0.05, top * 1.6))
    rate = alt.layer(
        rate_base.mark_bar(color="#4e79a7"),
        rate_base.mark_text(align="left", dx=4, fontSize=11, color="#1b1f24")
        .encode(text="label:N")
        .transform_filter(~long_bar),
        rate_base.mark_text(align="right", dx=-4, fontSize=11, color="#ffffff")
        .encode(text="label:N")
        .transform_filter(long_bar),
    ).properties(width=170, height=max(90, 34 * len(order)))
    domain, colors = palette.action_scale(frame["action"])
    mix = (
        alt.Chart(frame.assign(label=[f"{v:.0%}" if v >= 0.2 else "" for v in frame["share"]]))
        .encode(
            y=alt.Y("group:N", sort=order, title=None, axis=alt.Axis(labels=False, ticks=False)),
            x=alt.X("sum(count):Q", stack="normalize", title="Action mix", axis=alt.Axis(format="%")),
            order=alt.Order("action_rank:Q"),
            tooltip=[
                alt.Tooltip("group:N", title=noun),
                alt.Tooltip("action:N", title="Action"),
                alt.Tooltip("count:Q", title="Inspections", format=","),
                alt.Tooltip("share:Q", title="Share", format=".1%"),
            ],
        )
        .transform_calculate(action_rank=_index_expression("action", domain))
    )
    mix = alt.layer(
        mix.mark_bar().encode(
            color=alt.Color(
                "action:N",
                scale=alt.Scale(domain=domain, range=colors),
                sort=domain,
                legend=alt.Legend(title="Action", orient="bottom"),
            )
        ),
        mix.mark_text(dx=-3, align="right", fontSize=11, color="#ffffff").encode(text="label:N"),
    ).properties(width=150, height=max(90, 34 * len(order)))
    return alt.hconcat(rate, mix, title=_title(title, subtitle), spacing=8).resolve_scale(y="shared")
