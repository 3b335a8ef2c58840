"""The picture grid: every inspection as a thumbnail with its action badge, for Inspect, History and the review
queue. A tile's "Open" button opens the inspection in the side panel; with ``selectable`` each tile has a tick
box keyed by the rows shown, so ticks never move to other images when the rows change."""

from __future__ import annotations

import html

import pandas as pd
import streamlit as st

from visionqc.ui.selection import ids_of, rows_key
from visionqc.ui.tables import thumbnail_url
from visionqc.ui.text import literal

# Streamlit's markdown badge colours, nearest to the palette's action colours.
BADGE_COLORS = {"Pass": "green", "Hold": "yellow", "Rework": "orange", "Reject": "red", "Review": "blue"}
TILES_PER_ROW = 6


def badge(action: str | None) -> str:
    if not isinstance(action, str) or not action:
        return ":gray-badge[—]"
    return f":{BADGE_COLORS.get(action, 'gray')}-badge[{action}]"


def tile_caption(row: pd.Series) -> str:
    """Action badge, defect type with the model's confidence, and a flag for review or unusable."""
    parts = [badge(row.get("action"))]
    if bool(row.get("unusable")):
        parts.append(f":violet-badge[unusable: {literal(row.get('unusable_reason'))}]")
    else:
        defect = literal(row.get("defect"))
        confidence = row.get("confidence")
        same = row.get("defect") == row.get("pred_defect")
        parts.append(f"{defect} {100 * confidence:.0f}%" if same and confidence == confidence else defect)
        if bool(row.get("needs_review")) and not bool(row.get("reviewed")):
            parts.append(":blue[:material/flag:]")
    return " ".join(parts)


def tile_picture(thumb: str | None, file_name: str) -> str:
    """The thumbnail in a box of fixed height (tall and wide photos line up) and the whole file name under it."""
    url = thumbnail_url(thumb) if isinstance(thumb, str) else None
    name = html.escape(file_name)
    picture = (
        f'<img src="{url}" alt="{name}" style="width:100%;height:130px;object-fit:contain;background:#f2f5f9">'
        if url
        else '<div style="height:130px;background:#f2f5f9"></div>'
    )
    caption = f'<div style="font-size:0.78rem;color:#555;word-break:break-all;line-height:1.25">{name}</div>'
    return picture + caption


def _request_open(key: str, inspection_id: int) -> None:
    st.session_state[f"{key}_open_request"] = inspection_id


def take_open_request(key: str) -> int | None:
    """The inspection whose "Open" button was pressed in grid ``key`` since the last run (once)."""
    return st.session_state.pop(f"{key}_open_request", None)


def render_grid(rows: pd.DataFrame, *, key: str, selectable: bool = False, per_row: int = TILES_PER_ROW) -> list[int]:
    """Draw ``rows`` as tiles; returns the ids ticked (with ``selectable``), in row order."""
    grid_key = rows_key(key, rows) if selectable else key
    st.session_state[f"{key}_key"] = grid_key
    ticked = []
    records = rows.to_dict("records")
    for start in range(0, len(records), per_row):
        for column, row in zip(st.columns(per_row), records[start : start + per_row], strict=False):
            iid = int(row["inspection_id"])
            with column.container(border=True):
                st.html(tile_picture(row.get("thumb_file"), str(row["file_name"])))
                st.markdown(tile_caption(pd.Series(row)))
                with st.container(horizontal=True, vertical_alignment="center"):
                    if selectable and st.checkbox("Select", key=f"{grid_key}_{iid}"):
                        ticked.append(iid)
                    st.button("Open", key=f"{key}_open_{iid}", on_click=_request_open, args=(key, iid), type="tertiary")
    order = {i: n for n, i in enumerate(ids_of(rows))}
    return sorted(ticked, key=order.get)
