"""What every page of the Streamlit app shares: the page registry, the model and the store (created once per
process), the sidebar, and small display helpers (percentages, action colours, thumbnails, CSV downloads).

Pages stay short and declarative by calling into this module; nothing here runs SQL or touches tensors
itself (that is :mod:`visionqc.store` and :mod:`visionqc.predict`).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from visionqc import config

PAGES_DIR = config.PROJECT_ROOT / "pages"

# Material icons for the pages we know; any other page file gets a generic one.
_PAGE_ICONS = {
    "inspect": ":material/photo_camera:",
    "history": ":material/history:",
    "dashboard": ":material/monitoring:",
    "explore": ":material/scatter_plot:",
    "review-queue": ":material/rule:",
    "model": ":material/model_training:",
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


# --- model and store, once per process ------------------------------------------------------------
@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def _load_predictor(model_path: str, card_mtime: float):
    from visionqc.predict import Predictor

    return Predictor(model_path)


def get_predictor():
    """The active model's :class:`~visionqc.predict.Predictor`, or ``None`` with the reason in :func:`model_error`.

    Cached per model directory and card timestamp, so activating another model takes effect on the next rerun.
    """
    from visionqc.checkpoint import ModelLoadError

    path = config.model_dir()
    card = path / "model.json"
    try:
        predictor = _load_predictor(str(path), card.stat().st_mtime if card.is_file() else 0.0)
    except ModelLoadError as exc:
        st.session_state["_visionqc_model_error"] = str(exc)
        return None
    st.session_state.pop("_visionqc_model_error", None)
    return predictor


def model_error() -> str | None:
    return st.session_state.get("_visionqc_model_error")


def clear_model_cache() -> None:
    """Forget the loaded model (the Model page calls this after activating or rolling back)."""
    _load_predictor.clear()


@st.cache_resource(show_spinner=False)
def _open_store(home: str):
    from visionqc.store import Store

    return Store(home)


def get_store():
    """The :class:`~visionqc.store.Store` for the configured data directory (``VISIONQC_HOME``)."""
    return _open_store(str(config.data_dir()))


# --- sidebar -------------------------------------------------------------------------------------
def render_sidebar() -> None:
    """The active model (name, version, classes per task) and the data folder, on every page."""
    predictor = get_predictor()
    with st.sidebar:
        st.subheader("Active model")
        if predictor is None:
            st.error(f"No model loaded: {model_error()}", icon=":material/error:")
            st.caption(f"Model folder: `{config.model_dir()}` (set `VISIONQC_MODEL` to use another).")
        else:
            card = predictor.card
            st.markdown(f"**{card.name}** · version `{card.version}`")
            for task in card.tasks:
                classes = ", ".join(task.classes)
                st.caption(f"**{task.name.capitalize()}**: {classes}")
        st.subheader("Data folder")
        st.caption(f"`{config.data_dir()}`")
        st.caption("Set `VISIONQC_HOME` to use another folder.")


# --- display helpers -----------------------------------------------------------------------------
def data_url(jpeg: bytes | None) -> str | None:
    """A ``data:`` URL for an ImageColumn cell (thumbnails are small JPEGs)."""
    if not jpeg:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def file_data_url(path: str | Path | None) -> str | None:
    if not path:
        return None
    try:
        return data_url(Path(path).read_bytes())
    except OSError:
        return None
