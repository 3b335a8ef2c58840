"""The page registry: every ``pages/*.py`` becomes a page of the app, in file-name order."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from visionqc import config

PAGES_DIR = config.PROJECT_ROOT / "pages"


_PAGE_ICONS = {
    "inspect": ":material/photo_camera:",
    "history": ":material/history:",
    "dashboard": ":material/monitoring:",
    "explore": ":material/scatter_plot:",
    "review-queue": ":material/rule:",
    "models": ":material/model_training:",
    "users": ":material/group:",
}


@dataclass(frozen=True)
class PageSpec:
    path: str
    title: str
    url_path: str
    icon: str


def page_specs(pages_dir: Path = PAGES_DIR) -> list[PageSpec]:
    """One entry per ``pages/*.py`` in file-name order: ``3_Review_queue.py`` -> title "Review queue"."""
    specs = []
    for path in sorted(pages_dir.glob("*.py"), key=lambda p: _sort_key(p.name)):
        if path.name.startswith(("_", ".")):
            continue
        stem = re.sub(r"^\d+[_\- ]*", "", path.stem) or path.stem
        title = stem.replace("_", " ").strip()
        url_path = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        specs.append(PageSpec(str(path), title, url_path, _PAGE_ICONS.get(url_path, ":material/article:")))
    return specs


def _sort_key(name: str) -> tuple[int, str]:
    # "10_X.py" sorts after "9_Y.py": compare the numeric prefix as a number.
    match = re.match(r"^(\d+)", name)
    return (int(match.group(1)) if match else 1_000_000, name)
