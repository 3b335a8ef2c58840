"""The one place that maps severities, actions and defect types to colours.

Every chart and page imports from here so that "high" is the same red everywhere. Models declare their own
severity classes; the common names below get fixed colours, anything else gets a neutral grey rather than a
colour that could be mistaken for a severity. Class *order* (severity ranks, action order) is not a matter of
colour: it lives in :mod:`visionqc.labels`.
"""

from __future__ import annotations

from collections.abc import Iterable

from visionqc.labels import NO_VALUE, order_actions, order_severities

# Severity is an intensity, drawn as one purple ramp (light = low, dark = high): never one of the action colours,
# so "low" is not read as "Pass" nor "high" as "Reject" when both sit on one page.
SEVERITY_COLORS: dict[str, str] = {
    "low": "#c5b5e0",  # light purple
    "minor": "#c5b5e0",
    "medium": "#8c6bb1",  # purple
    "moderate": "#8c6bb1",
    "high": "#4d1f86",  # dark purple
    "major": "#4d1f86",
    "severe": "#4d1f86",
    "critical": "#26054a",  # near black purple
}
NEUTRAL_COLOR = "#9e9e9e"
ACTION_COLORS: dict[str, str] = {
    "Pass": "#2ca02c",  # green
    "Hold": "#f2c12e",  # amber
    "Rework": "#ff7f0e",  # orange
    "Reject": "#d62728",  # red
    "Review": "#1f77b4",  # blue: a person must look, not a verdict
}

# Defect types and locations have no meaning in their colour; a calm categorical palette (Tableau 10 without
# its red, orange, green and purple, which belong to action and severity).
CATEGORY_COLORS: tuple[str, ...] = (
    "#4e79a7",
    "#76b7b2",
    "#9c755f",
    "#edc948",
    "#ff9da7",
    "#bab0ac",
    "#17becf",
    "#8c564b",
    "#e377c2",
)
NO_DEFECT_COLOR = "#c7e9c0"  # pale green: "no defect" sits beside defect types without looking like one


def severity_color(severity: str | None) -> str:
    if severity is None:
        return NEUTRAL_COLOR
    return SEVERITY_COLORS.get(str(severity).strip().lower(), NEUTRAL_COLOR)


def severity_scale(severities: Iterable[str | None]) -> tuple[list[str], list[str]]:
    """(domain, range) for an Altair colour scale: the severities in order and their colours."""
    domain = order_severities(severities)
    return domain, [severity_color(None if s == NO_VALUE else s) for s in domain]


def action_color(action: str | None) -> str:
    return ACTION_COLORS.get(action or "", NEUTRAL_COLOR)


def action_scale(actions: Iterable[str | None]) -> tuple[list[str], list[str]]:
    """(domain, range) for an Altair colour scale over actions."""
    domain = order_actions(actions)
    return domain, [action_color(a) for a in domain]


def category_scale(
    categories: Iterable[str], no_defect_label: str | None = None, other_label: str | None = None
) -> tuple[list[str], list[str]]:
    """(domain, range) for defect types or locations.

    Colours are given in alphabetical order of the names, so a type keeps its colour when the ranking changes;
    ``no_defect_label`` gets pale green and ``other_label`` (the "other types" bucket) neutral grey, both last.
    """
    names = {str(c) for c in categories}
    special = [n for n in (no_defect_label, other_label) if n is not None and n in names]
    domain = sorted(names - set(special)) + special
    colors = [CATEGORY_COLORS[i % len(CATEGORY_COLORS)] for i in range(len(domain) - len(special))]
    colors += [NO_DEFECT_COLOR if n == no_defect_label else NEUTRAL_COLOR for n in special]
    return domain, colors
