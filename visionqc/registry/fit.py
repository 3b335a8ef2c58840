"""Does the active model know these images? The rule behind Inspect's "this batch looks foreign" notice.

A model's out-of-distribution score says how far an image lies from everything it was trained on; above the
card's calibrated cut, the model is guessing. When most of a batch is past the cut, the model was made for other
parts, and the honest thing to say is so, with the way out. Pure Python: no model, no database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

FOREIGN_SHARE = 0.5  # "most images"
MIN_IMAGES = 5  # fewer than this says nothing about a batch


@dataclass(frozen=True)
class BatchFit:
    images: int
    foreign: int  # images whose OOD score is above the model's cut

    @property
    def share(self) -> float:
        return self.foreign / self.images if self.images else 0.0

    @property
    def looks_foreign(self) -> bool:
        return self.images >= MIN_IMAGES and self.share > FOREIGN_SHARE


def batch_fit(ood_scores: Sequence[float | None], ood_threshold: float | None) -> BatchFit:
    """How many of a batch's images are out of the model's distribution (scores above ``ood_threshold``).
    A model without a calibrated cut, or images without a score, never count as foreign."""
    scored = [s for s in ood_scores if s is not None and s == s]
    if ood_threshold is None:
        return BatchFit(len(scored), 0)
    return BatchFit(len(scored), sum(1 for s in scored if s > ood_threshold))
