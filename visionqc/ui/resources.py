"""What every page shares and loads once per process: the model registry and the active model, the store, the
browser's time zone.

The model runs in the fastest runtime its card allows (``VISIONQC_RUNTIME`` overrides): with an ONNX graph,
opening the app and classifying never import torch; the PyTorch network loads when a heatmap is first asked for.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st

from visionqc import config
from visionqc.model.card import ModelCard, ModelLoadError, read_card
from visionqc.registry import ModelRegistry
from visionqc.ui import errors
from visionqc.ui.cached import CachedStore


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def _load_predictor(model_path: str, card_mtime: float, runtime: str):
    from visionqc.model.predict import open_predictor

    return open_predictor(model_path, runtime=runtime)


@st.cache_resource(show_spinner=False)
def _open_registry(home: str) -> ModelRegistry:
    registry = ModelRegistry(home)
    registry.ensure_initialised()  # first start: the shipped model becomes the first registered, active version
    return registry


def get_registry() -> ModelRegistry:
    """The model registry of the data folder (the shipped model registered on first start)."""
    return _open_registry(str(config.data_dir()))


def active_model_dir():
    """The model directory in use: the registry's active version, or ``VISIONQC_MODEL`` when it pins one."""
    get_registry()
    return config.model_dir()


def get_predictor():
    """The active model's :class:`~visionqc.model.predict.Predictor`, or ``None`` (the reason: :func:`model_error`).

    Cached per model directory and card timestamp, so activating another model takes effect on the next rerun.
    """
    path = active_model_dir()
    card = path / "model.json"
    try:
        predictor = _load_predictor(str(path), card.stat().st_mtime if card.is_file() else 0.0, config.runtime())
    except ModelLoadError as exc:
        st.session_state["_visionqc_model_error"] = str(exc)
        return None
    st.session_state.pop("_visionqc_model_error", None)
    return predictor


def predictor_for(model_path) -> object:
    """The Predictor of any registered version (cached like the active one's), e.g. to re-inspect with it."""
    card = model_path / "model.json"
    return _load_predictor(str(model_path), card.stat().st_mtime if card.is_file() else 0.0, config.runtime())


def model_error() -> str | None:
    return st.session_state.get("_visionqc_model_error")


def clear_model_cache() -> None:
    """Forget the loaded models (the Models page calls this after activating or rolling back, to free memory)."""
    _load_predictor.clear()


@st.cache_resource(show_spinner=False)
def _open_store(home: str):
    from visionqc.store import Store

    return Store(home)


def get_store(*, notice: bool = True):
    """The :class:`~visionqc.store.Store` for the configured data directory (``VISIONQC_HOME``), its repeated
    reads cached until the database changes (:class:`~visionqc.ui.cached.CachedStore`).

    Opening checks the database: a damaged one raises :class:`~visionqc.store.StoreCorruptError` (the page
    boundary shows it; it is not cached, so the next run checks again). A read-only one is said on the page."""
    store = _open_store(str(config.data_dir()))
    if store.read_only and notice:
        errors.read_only_notice(store)
    return CachedStore(store)


def require_predictor():
    """The active model, or an explanation on the page and a stop (the page cannot work without it)."""
    predictor = get_predictor()
    if predictor is None:
        st.error(
            f"No model is loaded, so nothing can be inspected. {model_error()}\n\n"
            f"Activate another version on the **Models** page (folder now: `{config.model_dir()}`).",
            icon=":material/error:",
        )
        st.stop()
    return predictor


def active_card() -> ModelCard | None:
    """The active model's card, or ``None`` when it cannot be read (History still works without one).

    Read from ``model.json`` alone, without loading the network."""
    try:
        return read_card(active_model_dir())
    except ModelLoadError:
        return None


def browser_timezone() -> str:
    """The user's browser time zone (days in filters and times in tables use it); UTC if unknown."""
    name = getattr(st.context, "timezone", None) or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"
    return name
