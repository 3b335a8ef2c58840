"""What a user sees when the data folder is busy, damaged, read-only or full: a message, never a stack trace.

:func:`page_boundary` wraps every page (``streamlit_app.py``): a :class:`~visionqc.store.StoreError` a page
raises becomes a message saying what failed and what to do, and the full trace goes to the server log.
Anything else is a bug: Streamlit shows it without details (``client.showErrorDetails = "none"`` in
``.streamlit/config.toml``) and logs the trace, and the tests see it as an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from visionqc.store import StoreBusyError, StoreCorruptError, StoreError, StoreReadOnlyError, StoreSpaceError

LOG = logging.getLogger("visionqc.ui")

# A damaged, read-only or full data folder's message starts with what happened; the others get a headline.
_HEADLINES = (
    ((StoreCorruptError, StoreReadOnlyError, StoreSpaceError), ""),
    (StoreBusyError, "The database is busy"),
    (StoreError, "The inspection database cannot be used"),
)


def show_store_error(exc: StoreError, then: str = "") -> None:
    """The error as a message on the page, with what to do ``then`` (e.g. how to continue a batch)."""
    LOG.warning("store error shown on the page: %s", exc, exc_info=exc)
    headline = next(text for kind, text in _HEADLINES if isinstance(exc, kind))
    text = f"**{headline}:** {exc}" if headline else str(exc)
    st.error(text + (f"\n\n{then}" if then else ""), icon=":material/error:")


@contextmanager
def page_boundary() -> Iterator[None]:
    """Run a page; a store error stops it with a message instead of a stack trace."""
    try:
        yield
    except StoreError as exc:
        show_store_error(exc)


def read_only_notice(store) -> None:
    """Say, on a page that opened a read-only store, that it can be browsed but nothing can be saved."""
    st.info(
        f"**Browsing only.** The data folder `{store.home}` cannot be written ({store.read_only_reason}): "
        "History, Dashboard and Explore work, but inspecting, reviews, tags and deletions are switched off. "
        "Make the folder writable, or set `VISIONQC_HOME` to a writable folder, to change anything.",
        icon=":material/visibility:",
    )
