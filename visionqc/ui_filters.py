"""The History filters as Streamlit widgets, returning the store's :class:`~visionqc.store.HistoryFilter`.

History renders them; Explore (or any page) can call :func:`history_filters` with its own ``key`` so each
page keeps its own choices. Options come from the active model's classes plus what the database holds, so
labels of an older model stay filterable.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import streamlit as st

from visionqc import palette
from visionqc.checkpoint import card_classes
from visionqc.store import HistoryFilter, Store

NO_VALUE = palette.NO_SEVERITY  # "—": shown for "no severity / no location" (defect-free images)

TAG_HELP = (
    "How the three tag boxes work: **All of** keeps rows that carry *every* listed tag (AND). "
    "**Any of** keeps rows that carry *at least one* of the listed tags (OR). "
    "**None of** drops every row that carries *any* of the listed tags (NOT). "
    "The boxes combine with AND, and an empty box does not filter. Example: All of `retrain`, "
    "Any of `scratch`, `dent`, None of `ignore` = rows tagged retrain, and scratch or dent, and not ignore."
)
FILTERS_HELP = (
    "All filters combine with AND; choosing several values in one box means *any of them* (OR). Labels are the "
    "effective ones: the latest review if the row was reviewed, else the model's prediction."
)
REVIEW_CHOICES = {"Any": None, "Yes": True, "No": False}
REVIEWED_CHOICES = {"Any": None, "Yes": True, "No": False}
DELETED_CHOICES = {"Hidden": "hide", "Only deleted": "only"}


def _options(*groups: Iterable[str | None], selected: Iterable[str] = ()) -> list[str]:
    """Distinct options in first-seen order; values the user already chose stay available."""
    seen: dict[str, None] = {}
    for group in (*groups, selected):
        for value in group:
            if value is not None and value != "":
                seen.setdefault(str(value), None)
    return list(seen)


def _none_for_dash(values: Iterable[str]) -> tuple[str | None, ...]:
    return tuple(None if v == NO_VALUE else v for v in values)


def clear_filters(key: str = "history") -> None:
    """Reset every filter widget of ``key`` (use as a button's on_click)."""
    for name in list(st.session_state.keys()):
        if str(name).startswith(f"{key}_f_") or name == f"{key}_carried":
            del st.session_state[name]


def _dash_for_none(values: Iterable[str | None]) -> list[str]:
    return [NO_VALUE if v is None else str(v) for v in values]


def apply_handoff(key: str = "history") -> None:
    """Take over a filter another page handed over (the Dashboard's "Open in History"), once.

    Labels and days go into the widgets, so the user sees and can change them; models and stations have no
    widget here and are carried in ``{key}_carried`` (shown above the filters) until "Clear filters".
    """
    from visionqc.analytics import HISTORY_FILTER_KEY

    handed = st.session_state.pop(HISTORY_FILTER_KEY, None)
    if not isinstance(handed, HistoryFilter):
        return
    clear_filters(key)
    k = f"{key}_f_"
    state = st.session_state
    state[k + "date_from"] = handed.date_from
    state[k + "date_to"] = handed.date_to
    state[k + "defects"] = _dash_for_none(handed.defects)
    state[k + "severities"] = _dash_for_none(handed.severities)
    state[k + "locations"] = _dash_for_none(handed.locations)
    state[k + "actions"] = _dash_for_none(handed.actions)
    carried = {"model_names": tuple(handed.model_names), "stations": tuple(handed.stations)}
    if any(carried.values()):
        state[f"{key}_carried"] = carried


def history_filters(
    store: Store, card=None, *, key: str = "history", timezone: str = "UTC", deleted_choice: bool = False
) -> HistoryFilter:
    """Render the filter widgets (in the current container) and return the filter they describe.

    ``card`` is the active model's card (or ``None``); ``timezone`` is the IANA zone whose calendar days
    the date range means. ``deleted_choice`` adds "Deleted rows: Hidden / Only deleted" (History uses it to
    restore rows); without it deleted rows are always hidden. Widget keys start with ``f"{key}_f_"``; the
    result is also kept in ``st.session_state[f"{key}_filter"]``.
    """
    k = f"{key}_f_"
    state = st.session_state
    apply_handoff(key)
    st.caption(FILTERS_HELP)
    carried = state.get(f"{key}_carried") or {}
    if any(carried.values()):
        parts = [
            f"models {', '.join(carried['model_names'])}" if carried.get("model_names") else "",
            f"stations {', '.join(carried['stations'])}" if carried.get("stations") else "",
        ]
        st.caption("From the Dashboard, also limited to " + " and ".join(p for p in parts if p) + ".")

    row1 = st.columns(4)
    date_from = row1[0].date_input("From (day)", value=None, key=k + "date_from", format="YYYY-MM-DD")
    date_to = row1[1].date_input("To (day, inclusive)", value=None, key=k + "date_to", format="YYYY-MM-DD")
    confidence = row1[2].slider(
        "Defect confidence (%)",
        min_value=0,
        max_value=100,
        value=(0, 100),
        step=1,
        key=k + "confidence",
        help="The model's confidence in its defect type. Both ends are inclusive.",
    )
    file_name = row1[3].text_input(
        "File name contains", key=k + "file_name", help="Case-insensitive; part of the name is enough."
    )

    row2 = st.columns(4)
    defects = row2[0].multiselect(
        "Defect types",
        _options(card_classes(card, "defect"), store.distinct_values("defect"), selected=state.get(k + "defects", [])),
        key=k + "defects",
    )
    severities = row2[1].multiselect(
        "Severities",
        _options(
            palette.order_severities(
                [*card_classes(card, "severity"), *store.distinct_values("severity")],
            ),
            [NO_VALUE],
            selected=state.get(k + "severities", []),
        ),
        key=k + "severities",
        help=f"“{NO_VALUE}” = no severity (defect-free images).",
    )
    locations = row2[2].multiselect(
        "Locations",
        _options(
            card_classes(card, "location"),
            store.distinct_values("location"),
            [NO_VALUE],
            selected=state.get(k + "locations", []),
        ),
        key=k + "locations",
        help=f"“{NO_VALUE}” = no location (defect-free images).",
    )
    actions = row2[3].multiselect(
        "Actions",
        _options(
            palette.order_actions([*palette.ACTION_ORDER, *store.distinct_values("action")]),
            selected=state.get(k + "actions", []),
        ),
        key=k + "actions",
    )

    row3 = st.columns(4)
    needs_review = row3[0].radio(
        "Needs review",
        list(REVIEW_CHOICES),
        horizontal=True,
        key=k + "needs_review",
        help="The model's flag: it was unsure.",
    )
    reviewed = row3[1].radio(
        "Reviewed",
        list(REVIEWED_CHOICES),
        horizontal=True,
        key=k + "reviewed",
        help="Yes = a person corrected or confirmed the labels.",
    )
    batches = store.list_batches()
    batch_labels = {
        row.batch_id: _batch_label(row.batch_id, row.station, row.inspected) for row in batches.itertuples()
    }
    batch_ids = row3[2].multiselect(
        "Batches",
        _options(batch_labels, selected=state.get(k + "batches", [])),
        key=k + "batches",
        format_func=lambda b: batch_labels.get(b, b),
    )
    deleted = "Hidden"
    if deleted_choice:
        deleted = row3[3].radio(
            "Deleted rows",
            list(DELETED_CHOICES),
            horizontal=True,
            key=k + "deleted",
            help="Deleted rows are hidden everywhere; show them here to check or restore them.",
        )

    tag_options = _options(store.distinct_values("tag"))
    row4 = st.columns([3, 3, 3, 2], vertical_alignment="bottom")
    tags_all = row4[0].multiselect(
        "Tags: all of (AND)",
        _options(tag_options, selected=state.get(k + "tags_all", [])),
        key=k + "tags_all",
        help=TAG_HELP,
    )
    tags_any = row4[1].multiselect(
        "Tags: any of (OR)",
        _options(tag_options, selected=state.get(k + "tags_any", [])),
        key=k + "tags_any",
        help=TAG_HELP,
    )
    tags_none = row4[2].multiselect(
        "Tags: none of (NOT)",
        _options(tag_options, selected=state.get(k + "tags_none", [])),
        key=k + "tags_none",
        help=TAG_HELP,
    )

    row4[3].button(
        "Clear filters", key=k + "clear", on_click=clear_filters, args=(key,), icon=":material/filter_alt_off:"
    )

    low, high = confidence
    result = HistoryFilter(
        date_from=date_from if isinstance(date_from, date) else None,
        date_to=date_to if isinstance(date_to, date) else None,
        timezone=timezone,
        defects=tuple(defects),
        severities=_none_for_dash(severities),
        locations=_none_for_dash(locations),
        actions=tuple(actions),
        confidence_min=low / 100 if low > 0 else None,
        confidence_max=high / 100 if high < 100 else None,
        needs_review=REVIEW_CHOICES[needs_review],
        reviewed=REVIEWED_CHOICES[reviewed],
        batches=tuple(batch_ids),
        file_name=file_name or "",
        tags_all=tuple(tags_all),
        tags_any=tuple(tags_any),
        tags_none=tuple(tags_none),
        deleted=DELETED_CHOICES[deleted],
        model_names=tuple(carried.get("model_names", ())),
        stations=tuple(carried.get("stations", ())),
    )
    st.session_state[f"{key}_filter"] = result  # other parts of the page (and tests) can read what is shown
    return result


def _batch_label(batch_id: str, station, inspected) -> str:
    parts = [batch_id]
    if isinstance(station, str) and station:
        parts.append(station)
    parts.append(f"{int(inspected)} images")
    return " · ".join(parts)
