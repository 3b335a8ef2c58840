"""The one place that decides colours and class order for severities and actions.

Every chart and page imports from here so that "high" is the same red everywhere. Models declare their own
severity classes; the common names below get fixed colours, anything else gets a neutral grey rather than a
colour that could be mistaken for a severity.
"""

from __future__ import annotations

from collections.abc import Iterable

# Severity names a model card may use, lowest first. Synonyms share a rank (and a colour).
SEVERITY_RANK: dict[str, int] = {
    "low": 0,
    "minor": 0,
    "medium": 1,
    "moderate": 1,
    "high": 2,
    "major": 2,
    "severe": 2,
    "critical": 3,
}
SEVERITY_COLORS: dict[str, str] = {
    "low": "#2ca02c",  # green
    "minor": "#2ca02c",
    "medium": "#ff7f0e",  # orange
    "moderate": "#ff7f0e",
    "high": "#d62728",  # red
    "major": "#d62728",
    "severe": "#d62728",
    "critical": "#7f0000",  # dark red
}
# Shown where severity does not apply (defect-free images) or is unknown to the palette.
NO_SEVERITY = "—"
NEUTRAL_COLOR = "#9e9e9e"
MEDIUM_RANK = SEVERITY_RANK["medium"]

# Actions from visionqc.predict.ActionPolicy, in the order a manager reads them: fine → worst, then review.
ACTION_ORDER: tuple[str, ...] = ("Pass", "Hold", "Rework", "Reject", "Review")
ACTION_COLORS: dict[str, str] = {
    "Pass": "#2ca02c",  # green
    "Hold": "#f2c12e",  # amber
    "Rework": "#ff7f0e",  # orange
    "Reject": "#d62728",  # red
    "Review": "#1f77b4",  # blue: a person must look, not a verdict
}

# Defect types and locations have no meaning in their colour; a calm categorical palette (Tableau 10 without
# its red, orange and green, which belong to severity and action).
CATEGORY_COLORS: tuple[str, ...] = (
    "#4e79a7",
    "#76b7b2",
    "#b07aa1",
    "#9c755f",
    "#edc948",
    "#ff9da7",
    "#bab0ac",
    "#17becf",
    "#8c564b",
    "#e377c2",
)
NO_DEFECT_COLOR = "#c7e9c0"  # pale green: "no defect" sits beside defect types without looking like one


def severity_rank(severity: str | None) -> int | None:
    """Rank of a severity name (0 = low), or None when the name is unknown or absent."""
    if severity is None:
        return None
    return SEVERITY_RANK.get(str(severity).strip().lower())


def severity_color(severity: str | None) -> str:
    if severity is None:
        return NEUTRAL_COLOR
    return SEVERITY_COLORS.get(str(severity).strip().lower(), NEUTRAL_COLOR)


def order_severities(severities: Iterable[str | None]) -> list[str]:
    """Severities lowest first; unknown names after the known ones (alphabetically); the "—" placeholder last."""
    unique = {NO_SEVERITY if s is None else str(s) for s in severities}
    known = sorted((s for s in unique if severity_rank(s) is not None), key=lambda s: (severity_rank(s), s))
    unknown = sorted(s for s in unique if severity_rank(s) is None and s != NO_SEVERITY)
    return known + unknown + ([NO_SEVERITY] if NO_SEVERITY in unique else [])


def severities_at_or_above(severities: Iterable[str], minimum: str = "medium") -> list[str]:
    """The given severity names whose rank is at least that of ``minimum``."""
    floor = SEVERITY_RANK[minimum]
    return [s for s in severities if (severity_rank(s) or -1) >= floor]


def severity_scale(severities: Iterable[str | None]) -> tuple[list[str], list[str]]:
    """(domain, range) for an Altair colour scale: the severities in order and their colours."""
    domain = order_severities(severities)
    return domain, [severity_color(None if s == NO_SEVERITY else s) for s in domain]


def action_color(action: str | None) -> str:
    return ACTION_COLORS.get(action or "", NEUTRAL_COLOR)


def order_actions(actions: Iterable[str | None]) -> list[str]:
    """Actions in ACTION_ORDER; any other action (a custom policy) after them, alphabetically."""
    unique = {str(a) for a in actions if a is not None}
    known = [a for a in ACTION_ORDER if a in unique]
    return known + sorted(unique - set(ACTION_ORDER))


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
