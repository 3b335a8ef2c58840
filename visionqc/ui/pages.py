"""The page registry: every ``pages/*.py`` becomes a page of the app, in file-name order; and the guard that keeps
a page from running anywhere but inside the app's navigation.

Streamlit serves a ``pages/`` folder on its own until the entry script has called ``st.navigation`` in the
server's lifetime: the first address typed or bookmarked after a (re)start, e.g. ``/History``, would run
``pages/2_History.py`` alone, without the sign-in gate, the roles or the sidebar. So every page starts with
:func:`through_the_app`: run outside :func:`entered` (which ``streamlit_app.py`` holds around the page it runs),
it sends the browser to the entry script, which signs the user in if needed and then opens the page asked for
(:func:`asked_for`), if the user's role may open it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from visionqc import config

PAGES_DIR = config.PROJECT_ROOT / "pages"
ENTRY = "streamlit_app.py"
_ENTERED: ContextVar[bool] = ContextVar("visionqc_page_entered", default=False)
_ASKED_FOR = "_visionqc_page_asked_for"  # the page an address named before the app had its navigation


@contextmanager
def entered() -> Iterator[None]:
    """Around the page the entry script runs: pages run inside it are running through the app."""
    token = _ENTERED.set(True)
    try:
        yield
    finally:
        _ENTERED.reset(token)


def through_the_app(page_file: str) -> None:
    """The first line of every page (``pages.through_the_app(__file__)``): outside the app's navigation, remember
    the page and go to the entry script instead (nothing of the page runs)."""
    if _ENTERED.get():
        return
    st.session_state[_ASKED_FOR] = Path(page_file).resolve()
    st.switch_page(ENTRY)


def asked_for(registered: list) -> object | None:
    """The registered page (an ``st.Page`` of ``registered``) an address asked for before the app had its
    navigation, once: ``None`` when there was none or the user's role may not open it (it is not registered)."""
    wanted = st.session_state.pop(_ASKED_FOR, None)
    if wanted is None:
        return None
    url_path = next((spec.url_path for spec in page_specs() if Path(spec.path).resolve() == wanted), None)
    return next((page for page in registered if url_path is not None and page.url_path == url_path), None)


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
