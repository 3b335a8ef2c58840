"""Is a dataset trainable? Class counts turned into errors (refused) and warnings (shown beside the dataset)."""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_IMAGES_PER_CLASS = 2  # a class needs one image to train on and one to validate with
SMALL_CLASS = 10  # below this a class is shown as too small to learn


class DatasetProblem(ValueError):
    """A dataset that cannot be made or used as asked; ``str(err)`` says what and how to fix it."""


@dataclass
class DatasetCheck:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_errors(self) -> None:
        if self.errors:
            raise DatasetProblem("; ".join(self.errors))


def check_classes(class_counts: dict[str, int], no_defect_class: str | None = None) -> DatasetCheck:
    """Errors: fewer than two classes with images, a class with fewer than :data:`MIN_IMAGES_PER_CLASS` images.
    Warnings: classes under :data:`SMALL_CLASS` images, no defect-free images."""
    check = DatasetCheck()
    present = {c: n for c, n in class_counts.items() if n > 0}
    if not present:
        check.errors.append("it holds no images")
        return check
    if len(present) < 2:
        (only,) = present
        check.errors.append(f"it has only one class ({only}); a model needs at least two to tell apart")
    tiny = sorted(c for c, n in present.items() if n < MIN_IMAGES_PER_CLASS)
    if tiny:
        which = f"class {tiny[0]} has" if len(tiny) == 1 else f"classes {', '.join(tiny)} have"
        check.errors.append(
            f"{which} only one image; each class needs at least {MIN_IMAGES_PER_CLASS} "
            f"(and {SMALL_CLASS} or more to be learnt)"
        )
    small = sorted(c for c, n in present.items() if MIN_IMAGES_PER_CLASS <= n < SMALL_CLASS)
    if small:
        listed = ", ".join(f"{c} ({present[c]})" for c in small)
        check.warnings.append(f"too few images to learn well (fewer than {SMALL_CLASS}): {listed}")
    if no_defect_class and no_defect_class not in present:
        check.warnings.append(f"no defect-free ({no_defect_class}) images: the model will never learn what is fine")
    return check


def check_label(label: str) -> str | None:
    """Why ``label`` cannot be a class (it becomes a folder name on export), or ``None`` when it can."""
    if not label or not label.strip():
        return "an empty class name"
    if label in (".", "..") or label.startswith(".") or any(ch in label for ch in "/\\\0"):
        return f"class name {label!r} cannot be a folder name"
    return None
