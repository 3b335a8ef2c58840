"""What the Dashboard shows, in charts and in words: the chart sections in page order, the KPI cards, and the
KPIs as text lines for the report. Pure functions of :class:`~visionqc.store.analytics.DashboardData`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import altair as alt
import pandas as pd

from visionqc.labels import NO_VALUE
from visionqc.reporting import charts
from visionqc.store.analytics import DashboardData, Kpis


def _pct(value: float | None) -> str:
    return NO_VALUE if value is None else f"{value:.1%}"


@dataclass(frozen=True)
class ChartSection:
    """One chart of the Dashboard with the aggregate it was drawn from."""

    key: str  # file-name stem and widget key, e.g. "defect_severity"
    title: str
    chart: alt.TopLevelMixin
    frame: pd.DataFrame
    dimension: str | None = None  # the cross-filter a click on this chart sets


def sections(data: DashboardData, *, subtitle: str | None = None) -> list[ChartSection]:
    """The Dashboard's charts in page order. ``subtitle`` (the filters in words) is written on exported charts."""
    cross = data.picks
    tz = data.time_zone
    return [
        ChartSection(
            "defect_severity",
            "Defect types by severity",
            charts.defect_severity_bars(data.defect_severity, selected=cross.get("defect"), subtitle=subtitle),
            data.defect_severity,
            "defect",
        ),
        ChartSection(
            "daily_trend",
            "Daily volume and defect rate",
            charts.daily_trend(data.daily, subtitle=subtitle, time_zone=tz),
            data.daily,
        ),
        ChartSection(
            "severity_ratio",
            "Severity ratio",
            charts.severity_ratio(data.by_severity, selected=cross.get("severity"), subtitle=subtitle),
            data.by_severity,
            "severity",
        ),
        ChartSection(
            "location",
            "Defects by location",
            charts.location_bars(data.by_location, selected=cross.get("location"), subtitle=subtitle),
            data.by_location,
            "location",
        ),
        ChartSection(
            "action_ratio",
            "Action ratio",
            charts.action_ratio(data.by_action, selected=cross.get("action"), subtitle=subtitle),
            data.by_action,
            "action",
        ),
        ChartSection(
            "station_comparison",
            "Stations compared",
            charts.group_comparison(data.by_station, by="station", subtitle=subtitle),
            data.by_station,
        ),
        ChartSection(
            "operator_comparison",
            "Operators compared",
            charts.group_comparison(data.by_operator, by="operator", subtitle=subtitle),
            data.by_operator,
        ),
    ]


def kpi_cards(k: Kpis) -> list[dict[str, Any]]:
    """The six KPI cards as keyword arguments for ``st.metric`` (label, value, delta, colours, help)."""

    rate_change = None
    if k.last7_rate is not None and k.prev7_rate is not None:
        rate_change = f"{(k.last7_rate - k.prev7_rate) * 100:+.1f} pp"
    volume_change = None
    if k.last7 or k.prev7:
        volume_change = f"{k.last7 - k.prev7:+,}" + (f" ({k.last7 / k.prev7 - 1:+.0%})" if k.prev7 else "")
    return [
        {
            "label": "Inspected",
            "value": f"{k.inspected:,}",
            "help": "Inspections in the period, after all filters (unusable photos are counted on their own).",
        },
        {
            "label": "Defect rate",
            "value": _pct(k.defect_rate),
            "delta": rate_change,
            "delta_color": "inverse",  # a rising defect rate is bad news
            "delta_description": "7 d vs prior 7" if rate_change else None,
            "help": f"Defective share of the inspections in the period ({k.defects:,} defective). "
            "The change compares the defect rate of the last 7 days of the period with the 7 days before.",
        },
        {
            "label": "Last 7 days",
            "value": f"{k.last7:,}",
            "delta": volume_change,
            "delta_color": "off",
            "delta_description": "vs prior 7" if volume_change else None,
            "help": "Inspections in the 7 days ending on the period's last day, compared with the 7 days before.",
        },
        {
            "label": "Top defect",
            "value": k.top_defect or NO_VALUE,
            "delta": f"{_pct(k.top_defect_share)} of defects" if k.top_defect else None,
            "delta_color": "off",
            "delta_arrow": "off",
            "help": "The most frequent defect type in the period (defect-free images not counted).",
        },
        {
            "label": "≥ Medium severity",
            "value": _pct(k.serious_share),
            "delta": f"{k.serious:,} inspections" if k.defects else None,
            "delta_color": "off",
            "delta_arrow": "off",
            "help": "Share of the defective inspections whose severity is medium or higher.",
        },
        {
            "label": "Review backlog",
            "value": f"{k.backlog:,}",
            "help": "Inspections flagged “needs review” that nobody has reviewed yet.",
        },
        {
            "label": "Unusable photos",
            "value": f"{k.unusable:,}",
            "help": "Photos marked “not a part / unusable image” in the period (not our part, blurred, empty …). "
            "They are in no other number or chart.",
        },
    ]


def kpi_lines(data: DashboardData) -> list[tuple[str, str]]:
    """The KPI cards as (label, value) text, for the report."""
    k = data.kpis

    top = (
        f"{k.top_defect} ({k.top_defect_count:,}, {_pct(k.top_defect_share)} of defects)" if k.top_defect else NO_VALUE
    )
    return [
        ("Inspected", f"{k.inspected:,}"),
        ("Defect rate", f"{_pct(k.defect_rate)} ({k.defects:,} defective)"),
        ("Last 7 days", f"{k.last7:,} inspected, defect rate {_pct(k.last7_rate)}"),
        ("7 days before", f"{k.prev7:,} inspected, defect rate {_pct(k.prev7_rate)}"),
        ("Top defect type", top),
        ("Medium severity or above", f"{_pct(k.serious_share)} of defects ({k.serious:,})"),
        ("Open review backlog", f"{k.backlog:,}"),
        ("Unusable photos (in no other figure)", f"{k.unusable:,}"),
    ]
