"""A list of inspections to work through, as a compact table or a picture grid (Inspect, History, the review
queue): a click on any cell of a row, or a tile's "Open", shows the inspection in a side panel; with
``multi`` rows can be ticked for bulk actions, always by inspection id."""

from __future__ import annotations

import itertools

import pandas as pd
import streamlit as st

from visionqc.model.card import ModelCard
from visionqc.ui.detail import open_detail
from visionqc.ui.grid import render_grid, take_open_request
from visionqc.ui.selection import clicked_cells, clicked_id, dropped_notice, selected_ids
from visionqc.ui.tables import show_inspections

VIEWS = {"table": ":material/table_rows: Table", "pictures": ":material/grid_view: Pictures"}
_CLICKS = itertools.count()


def choose_view(key: str) -> str:
    view = st.segmented_control(
        "View", list(VIEWS), format_func=VIEWS.get, default="table", key=f"{key}_view", label_visibility="collapsed"
    )
    return view or "table"


def render_results(
    store,
    rows: pd.DataFrame,
    card: ModelCard | None,
    *,
    key: str,
    view: str = "table",
    timezone: str = "UTC",
    history: bool = False,
    multi: bool = False,
) -> list[int]:
    """Show ``rows`` as ``view`` ("table" or "pictures"); returns the ids ticked (``multi``) on these rows."""
    if view == "pictures":
        ticked = render_grid(rows, key=f"{key}_grid", selectable=multi)
        requested = take_open_request(f"{key}_grid")
        open_detail(store, requested, card, key=f"{key}_detail", token=next(_CLICKS) if requested else None)
        table_key = st.session_state[f"{key}_grid_key"]
    else:
        event = show_inspections(
            rows,
            card,
            key=key,
            timezone=timezone,
            history=history,
            selection=["multi-row", "single-cell"] if multi else "single-cell",
        )
        table_key = st.session_state[f"{key}_key"]
        ticked = selected_ids(event, rows) if multi else []
        clicked = clicked_id(event, rows)
        open_detail(store, clicked, card, key=f"{key}_detail", token=(table_key, str(clicked_cells(event))))
    if multi:
        dropped_notice(key, table_key, ticked, rows)
    return ticked
