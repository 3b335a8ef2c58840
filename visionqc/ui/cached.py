"""The store as pages use it: reads answered from a cache until the database changes.

A History click (a row ticked, a sort order, the next page) reruns the whole page, and each read opens the
database file afresh (a connection must not outlive a call: another process may be waiting to write). Opening
costs tens of milliseconds at 100,000 inspections, and a page makes a dozen reads, most of which (filter
options, batch lists, the page of rows already shown) have not changed since the last rerun.

:class:`CachedStore` wraps the :class:`~visionqc.store.Store`: the read methods named in :data:`READS` are
cached (``st.cache_data``, shared by every session of the process) under the store's
:meth:`~visionqc.store.Store.data_version`, which changes with any commit by any process, so a cached answer is
never older than the database. Everything else (every write) goes straight to the store.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

# Reads a page repeats on every rerun. Their results are small: a page of rows, a list of options.
READS = frozenset(
    {
        "batch",
        "batch_duplicates",
        "batch_failures",
        "batch_rows",
        "batch_summary",
        "count",
        "distinct_values",
        "filter_values",
        "has_users",
        "inspection_detail",
        "list_batches",
        "review_queue",
        "search",
        "user",
    }
)

# Reads whose answers are megabytes (the embeddings of a map): only the last few are kept.
LARGE_READS = frozenset({"map_points"})


@st.cache_data(max_entries=512, show_spinner=False)
def _read(home: str, version: tuple, method: str, args: tuple, kwargs: tuple, _store) -> Any:
    return getattr(_store, method)(*args, **dict(kwargs))


@st.cache_data(max_entries=4, show_spinner=False)
def _read_large(home: str, version: tuple, method: str, args: tuple, kwargs: tuple, _store) -> Any:
    return getattr(_store, method)(*args, **dict(kwargs))


class CachedStore:
    """The store with its repeated reads cached per data version; otherwise the store itself."""

    def __init__(self, store):
        self.store = store

    def __getattr__(self, name: str):
        attribute = getattr(self.store, name)
        if name not in READS and name not in LARGE_READS:
            return attribute
        read = _read_large if name in LARGE_READS else _read

        def cached(*args, **kwargs):
            if kwargs.get("page_size") == 0:  # the whole result (an export): too big to keep
                return attribute(*args, **kwargs)
            key = tuple(sorted(kwargs.items()))
            return read(str(self.store.home), self.store.data_version(), name, args, key, _store=self.store)

        return cached
