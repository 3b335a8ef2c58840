"""Selections by inspection id, never by position.

Streamlit keeps a table's selection as row *positions*; a filter change then leaves the ticks on other images.
So every selectable table's widget key carries a fingerprint of the ids it shows (:func:`rows_key`): when the
rows change the table is a new widget and starts unticked, and :func:`dropped_notice` says what was unticked.
Bulk actions act on ids read from the rows the ticks were made on, and name them first (:func:`names_line`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pandas as pd
import streamlit as st

from visionqc.ui.text import literal


def ids_of(rows: pd.DataFrame) -> list[int]:
    return [int(i) for i in rows["inspection_id"]] if "inspection_id" in rows else []


def rows_key(base: str, rows: pd.DataFrame) -> str:
    """A widget key for a table of ``rows`` that changes whenever the inspections shown (or their order) do."""
    digest = hashlib.sha256(",".join(map(str, ids_of(rows))).encode()).hexdigest()[:12]
    return f"{base}_{digest}"


def _selection(event) -> dict:
    if event is None:
        return {}
    selection = event.get("selection", {}) if isinstance(event, dict) else getattr(event, "selection", {})
    return selection if isinstance(selection, dict) else dict(selection)


def selected_positions(event) -> list[int]:
    """Row positions ticked in an ``st.dataframe(on_select=...)`` event (or its session-state value)."""
    return [int(r) for r in _selection(event).get("rows", [])]


def selected_ids(event, rows: pd.DataFrame) -> list[int]:
    """The inspection ids of the ticked rows of ``rows`` (the rows the table was drawn with)."""
    ids = ids_of(rows)
    return [ids[p] for p in selected_positions(event) if 0 <= p < len(ids)]


def clicked_cells(event) -> list:
    """The cells clicked (``"single-cell"`` mode): ``[(row position, column name)]``."""
    return list(_selection(event).get("cells", []))


def clicked_id(event, rows: pd.DataFrame) -> int | None:
    """The inspection of the cell clicked (``"single-cell"`` mode), else of a single ticked row."""
    ids = ids_of(rows)
    for cell in clicked_cells(event):
        row = cell[0] if isinstance(cell, list | tuple) else None
        if isinstance(row, int) and 0 <= row < len(ids):
            return ids[row]
    return None


def names_line(rows: pd.DataFrame, ids: Sequence[int], limit: int = 6) -> str:
    """``"3 images: a.jpg, b.jpg, c.jpg"`` (with "and N more" past ``limit``): said before any bulk action.

    The names are escaped for Markdown (:func:`visionqc.ui.text.literal`), where every caller shows them."""
    by_id = dict(zip(ids_of(rows), rows["file_name"], strict=True)) if len(rows) else {}
    names = [literal(by_id.get(i, f"inspection {i}")) for i in ids]  # shown in Markdown: file names as typed
    head = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return f"{len(names)} image{'s' if len(names) != 1 else ''}: {head}"


def dropped_notice(base: str, key: str, ids: list[int], rows: pd.DataFrame) -> None:
    """Remember the ticks of table ``key``; when the rows changed (a new ``key``) and ticks were lost, say so."""
    state = st.session_state
    memo = f"{base}_last_selection"
    last_key, last_names = state.get(memo, (None, ""))
    if last_key not in (None, key) and last_names:
        st.info(f"The rows changed, so these ticks were cleared (nothing was done to them): {last_names}.")
    state[memo] = (key, names_line(rows, ids) if ids else "")
