"""The label vocabulary every layer shares: the "no value" marker, severity ranks and the order of actions.

A defect-free image has no severity and no location. The store keeps those as NULL, the filter model as
``None``; every place a person reads or picks them shows :data:`NO_VALUE` ("—"). :func:`shown` and
:func:`stored` are the only conversions between the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from visionqc.actions import ACTIONS

# Shown where a label does not apply (severity/location of a defect-free image) or is unknown.
NO_VALUE = "—"

# Severity names a model card may use, lowest first. Synonyms share a rank (and, in the palette, a colour).
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
MEDIUM_RANK = SEVERITY_RANK["medium"]

# Why a photo is "not a part / unusable image" (a review outcome): such photos leave every quality figure.
UNUSABLE_REASONS: tuple[str, ...] = ("not our part", "blurred", "empty", "wrong exposure", "other")


def is_missing(value: Any) -> bool:
    """``None``, NaN/NA or an empty string: a label that is not there."""
    if value is None:
        return True
    if isinstance(value, str):
        return value == ""
    try:
        return bool(value != value)  # NaN (float or numpy)
    except (TypeError, ValueError):
        return False


def shown(value: Any) -> str:
    """A label as a person reads it: the value, or :data:`NO_VALUE` where there is none."""
    return NO_VALUE if is_missing(value) or value == NO_VALUE else str(value)


def stored(value: Any) -> Any:
    """A label as the store and the filter model keep it: ``None`` for :data:`NO_VALUE` or a missing value."""
    return None if is_missing(value) or value == NO_VALUE else value


def shown_all(values: Iterable[Any]) -> list[str]:
    return [shown(v) for v in values]


def stored_all(values: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(stored(v) for v in values)


def severity_rank(severity: str | None) -> int | None:
    """Rank of a severity name (0 = low), or None when the name is unknown or absent."""
    if severity is None:
        return None
    return SEVERITY_RANK.get(str(severity).strip().lower())


def order_severities(severities: Iterable[str | None]) -> list[str]:
    """Severities lowest first; unknown names after the known ones (alphabetically); :data:`NO_VALUE` last."""
    unique = {shown(s) for s in severities}
    known = sorted((s for s in unique if severity_rank(s) is not None), key=lambda s: (severity_rank(s), s))
    unknown = sorted(s for s in unique if severity_rank(s) is None and s != NO_VALUE)
    return known + unknown + ([NO_VALUE] if NO_VALUE in unique else [])


def severities_at_or_above(severities: Iterable[str], minimum: str = "medium") -> list[str]:
    """The given severity names whose rank is at least that of ``minimum``."""
    floor = SEVERITY_RANK[minimum]
    return [s for s in severities if (severity_rank(s) or -1) >= floor]


def order_actions(actions: Iterable[str | None]) -> list[str]:
    """Actions in :data:`~visionqc.actions.ACTIONS` order; any other action (a custom policy) after them."""
    unique = {str(a) for a in actions if a is not None}
    known = [a for a in ACTIONS if a in unique]
    return known + sorted(unique - set(ACTIONS))
