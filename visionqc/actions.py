"""What to do with a part: the five actions and the policy that picks one from the labels.

Pure Python, no model and no database: the store checks reviewed actions against :data:`ACTIONS`, the
predictor applies :class:`ActionPolicy` to each prediction, and charts order actions by :data:`ACTIONS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# In the order a manager reads them: fine -> worst, then "a person must look".
ACTIONS: tuple[str, ...] = ("Pass", "Hold", "Rework", "Reject", "Review")
# The defect class a dataset gives photos reviewed as "not a part / unusable image" when the user keeps them as an
# explicit reject class: a model trained on it rejects such photos instead of guessing a defect.
NOT_A_PART_CLASS = "not_a_part"


def check_action(action: str) -> None:
    """Raise ``ValueError`` unless ``action`` is one of :data:`ACTIONS`."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; choose from {', '.join(ACTIONS)}")


@dataclass(frozen=True)
class ActionPolicy:
    """Maps (defect, severity, needs-review) to an action. Defaults follow DESIGN.md.

    Look-up order: needs review -> ``review``; no defect -> ``no_defect``; an entry in ``overrides``
    keyed ``"defect/severity"`` then ``"defect"``; then ``by_severity``; else ``fallback``.
    """

    no_defect: str = "Pass"
    review: str = "Review"
    by_severity: dict[str, str] = field(default_factory=lambda: {"high": "Reject", "medium": "Rework", "low": "Hold"})
    overrides: dict[str, str] = field(default_factory=lambda: {NOT_A_PART_CLASS: "Reject"})
    fallback: str = "Hold"

    def __post_init__(self) -> None:
        for action in [
            self.no_defect,
            self.review,
            self.fallback,
            *self.by_severity.values(),
            *self.overrides.values(),
        ]:
            check_action(action)

    def decide(self, defect: str, severity: str | None, needs_review: bool, is_defect: bool) -> str:
        if needs_review:
            return self.review
        if not is_defect:
            return self.no_defect
        for key in (f"{defect}/{severity}", defect):
            if key in self.overrides:
                return self.overrides[key]
        return self.by_severity.get(severity or "", self.fallback)

    @classmethod
    def from_file(cls, path: str | Path) -> ActionPolicy:
        """Read a policy JSON file, e.g. ``{"by_severity": {"low": "Pass"}, "overrides": {"crack": "Reject"}}``."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read action policy {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"action policy {path} must be a JSON object")
        allowed = {"no_defect", "review", "by_severity", "overrides", "fallback"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"action policy {path}: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")
        defaults = cls()
        merged = {**defaults.by_severity, **data.get("by_severity", {})}
        return cls(
            no_defect=data.get("no_defect", defaults.no_defect),
            review=data.get("review", defaults.review),
            by_severity=merged,
            overrides={**defaults.overrides, **data.get("overrides", {})},
            fallback=data.get("fallback", defaults.fallback),
        )
