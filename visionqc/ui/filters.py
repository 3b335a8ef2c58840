"""The History filters as Streamlit widgets, returning the one filter model, an InspectionFilter.

History renders them; Explore (or any page) can call :func:`history_filters` with its own ``key`` so each
page keeps its own choices. Options come from the active model's classes plus what the database holds, so
labels of an older model stay filterable.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import streamlit as st

from visionqc.actions import ACTIONS
from visionqc.filters import InspectionFilter
from visionqc.labels import NO_VALUE, order_actions, order_severities, shown_all, stored_all
from visionqc.model.card import ModelCard, card_classes
from visionqc.store import Store

# Another page (the Dashboard's "Open in History") leaves an InspectionFilter here; History takes it over once.
HANDOFF_KEY = "history_handoff"

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
UNUSABLE_CHOICES = {"Show": None, "Only": True, "Hide": False}


def _options(*groups: Iterable[str | None], selected: Iterable[str] = ()) -> list[str]:
    """Distinct options in first-seen order; values the user already chose stay available."""
    seen: dict[str, None] = {}
    for group in (*groups, selected):
        for value in group:
            if value is not None and value != "":
                seen.setdefault(str(value), None)
    return list(seen)


# Every filter widget's empty value. "Clear filters" writes these into the widgets' state: deleting the keys
# instead would leave the browser showing (and sending back on the next click) the old values.
WIDGET_DEFAULTS: dict[str, object] = {
    "date_from": None,
    "date_to": None,
    "confidence": (0, 100),
    "file_name": "",
    "defects": [],
    "severities": [],
    "locations": [],
    "actions": [],
    "needs_review": "Any",
    "reviewed": "Any",
    "unusable": "Show",
    "deleted": "Hidden",
    "batches": [],
    "stations": [],
    "operators": [],
    "model_names": [],
    "model_versions": [],
    "tags_all": [],
    "tags_any": [],
    "tags_none": [],
}


def clear_filters(key: str = "history") -> None:
    """Reset every filter widget of ``key`` to its empty value (use as a button's on_click)."""
    for name, value in WIDGET_DEFAULTS.items():
        st.session_state[f"{key}_f_{name}"] = list(value) if isinstance(value, list) else value


def apply_handoff(key: str = "history") -> None:
    """Take over a filter another page handed over (the Dashboard's "Open in History"), once: every condition
    goes into its widget, so the user sees and can change it."""
    handed = st.session_state.pop(HANDOFF_KEY, None)
    if not isinstance(handed, InspectionFilter):
        return
    clear_filters(key)
    k = f"{key}_f_"
    state = st.session_state
    state[k + "date_from"] = handed.date_from
    state[k + "date_to"] = handed.date_to
    for field in (
        "defects",
        "severities",
        "locations",
        "actions",
        "stations",
        "operators",
        "model_names",
        "model_versions",
        "batches",
    ):
        state[k + field] = shown_all(getattr(handed, field))


def history_filters(
    store: Store,
    card: ModelCard | None = None,
    *,
    key: str = "history",
    timezone: str = "UTC",
    deleted_choice: bool = False,
) -> InspectionFilter:
    """Render the filter widgets (in the current container) and return the filter they describe.

    ``card`` is the active model's card (or ``None``); ``timezone`` is the IANA zone whose calendar days
    the date range means. ``deleted_choice`` adds "Deleted rows: Hidden / Only deleted" (History uses it to
    restore rows); without it deleted rows are always hidden. Widget keys start with ``f"{key}_f_"``; the
    result is also kept in ``st.session_state[f"{key}_filter"]``.
    """
    k = f"{key}_f_"
    apply_handoff(key)
    st.caption(FILTERS_HELP)
    fields: dict = {"timezone": timezone}
    fields |= _days_confidence_and_name(k)
    with store.sharing_connection():  # the options are a dozen small reads: one connection for them all
        fields |= _labels(store, card, k)
        fields |= _review_and_batches(store, k, deleted_choice)
        fields |= _tags_and_clear(store, key)
    result = InspectionFilter(**fields)
    st.session_state[f"{key}_filter"] = result  # other parts of the page (and tests) can read what is shown
    return result


def _days_confidence_and_name(k: str) -> dict:
    row = st.columns(4)
    date_from = row[0].date_input("From (day)", value=None, key=k + "date_from", format="YYYY-MM-DD")
    date_to = row[1].date_input("To (day, inclusive)", value=None, key=k + "date_to", format="YYYY-MM-DD")
    low, high = row[2].slider(
        "Defect confidence (%)",
        min_value=0,
        max_value=100,
        value=(0, 100),
        step=1,
        key=k + "confidence",
        help="The model's confidence in its defect type. Both ends are inclusive.",
    )
    file_name = row[3].text_input(
        "File name contains", key=k + "file_name", help="Case-insensitive; part of the name is enough."
    )
    return {
        "date_from": date_from if isinstance(date_from, date) else None,
        "date_to": date_to if isinstance(date_to, date) else None,
        "confidence_min": low / 100 if low > 0 else None,
        "confidence_max": high / 100 if high < 100 else None,
        "file_name": file_name or "",
    }


def _labels(store: Store, card: ModelCard | None, k: str) -> dict:
    state = st.session_state
    row = st.columns(4)
    defects = row[0].multiselect(
        "Defect types",
        _options(card_classes(card, "defect"), store.filter_values()["defect"], selected=state.get(k + "defects", [])),
        key=k + "defects",
    )
    severities = row[1].multiselect(
        "Severities",
        _options(
            order_severities([*card_classes(card, "severity"), *store.filter_values()["severity"]]),
            [NO_VALUE],
            selected=state.get(k + "severities", []),
        ),
        key=k + "severities",
        help=f"“{NO_VALUE}” = no severity (defect-free images).",
    )
    locations = row[2].multiselect(
        "Locations",
        _options(
            card_classes(card, "location"),
            store.filter_values()["location"],
            [NO_VALUE],
            selected=state.get(k + "locations", []),
        ),
        key=k + "locations",
        help=f"“{NO_VALUE}” = no location (defect-free images).",
    )
    actions = row[3].multiselect(
        "Actions",
        _options(order_actions([*ACTIONS, *store.filter_values()["action"]]), selected=state.get(k + "actions", [])),
        key=k + "actions",
    )
    return {
        "defects": tuple(defects),
        "severities": stored_all(severities),
        "locations": stored_all(locations),
        "actions": tuple(actions),
    }


def _review_and_batches(store: Store, k: str, deleted_choice: bool) -> dict:
    row = st.columns(4)
    needs_review = row[0].radio(
        "Needs review",
        list(REVIEW_CHOICES),
        horizontal=True,
        key=k + "needs_review",
        help="The model's flag: it was unsure.",
    )
    reviewed = row[1].radio(
        "Reviewed",
        list(REVIEWED_CHOICES),
        horizontal=True,
        key=k + "reviewed",
        help="Yes = a person corrected or confirmed the labels.",
    )
    unusable = row[2].radio(
        "Unusable photos",
        list(UNUSABLE_CHOICES),
        horizontal=True,
        key=k + "unusable",
        help="Photos a person marked “not a part / unusable image” (not our part, blurred, empty …). "
        "They never count in quality figures.",
    )
    deleted = "Hidden"
    if deleted_choice:
        deleted = row[3].radio(
            "Deleted rows",
            list(DELETED_CHOICES),
            horizontal=True,
            key=k + "deleted",
            help="Deleted rows are hidden everywhere; show them here to check or restore them.",
        )
    return {
        "needs_review": REVIEW_CHOICES[needs_review],
        "reviewed": REVIEWED_CHOICES[reviewed],
        "unusable": UNUSABLE_CHOICES[unusable],
        "deleted": DELETED_CHOICES[deleted],
    } | _batches_stations_operators(store, k)


def _batches_stations_operators(store: Store, k: str) -> dict:
    state = st.session_state
    row = st.columns(1 + len(PICK_FIELDS))
    batches = store.list_batches()
    labels = {b.batch_id: _batch_label(b.batch_id, b.station, b.inspected) for b in batches.itertuples()}
    batch_ids = row[0].multiselect(
        "Batches",
        _options(labels, selected=state.get(k + "batches", [])),
        key=k + "batches",
        format_func=lambda b: labels.get(b, b),
    )
    picked = {}
    for column, (field, label, help_text) in zip(row[1:], PICK_FIELDS, strict=True):
        picked[field] = column.multiselect(
            label,
            _options(store.filter_values()[PICK_COLUMNS[field]], selected=state.get(k + field, [])),
            key=k + field,
            help=help_text,
        )
    return {"batches": tuple(batch_ids), **{field: stored_all(values) for field, values in picked.items()}}


PICK_FIELDS = (
    ("stations", "Stations", "Where the batch was inspected."),
    ("operators", "Operators", "Who ran the batch."),
    ("model_names", "Models", "The model that classified the image."),
    ("model_versions", "Model versions", "The model version that classified the image, as the Models page names it."),
)
PICK_COLUMNS = {
    "stations": "station",
    "operators": "operator",
    "model_names": "model_name",
    "model_versions": "model_version",
}


TAG_FIELDS = (
    ("tags_all", "Tags: all of (AND)"),
    ("tags_any", "Tags: any of (OR)"),
    ("tags_none", "Tags: none of (NOT)"),
)


def _tags_and_clear(store: Store, key: str) -> dict:
    """The three tag boxes and, beside them, "Clear filters"."""
    k = f"{key}_f_"
    options = _options(store.filter_values()["tag"])
    *columns, clear_column = st.columns([3, 3, 3, 2], vertical_alignment="bottom")
    chosen = {}
    for column, (field, label) in zip(columns, TAG_FIELDS, strict=True):
        selected = st.session_state.get(k + field, [])
        chosen[field] = tuple(
            column.multiselect(label, _options(options, selected=selected), key=k + field, help=TAG_HELP)
        )
    clear_column.button(
        "Clear filters", key=k + "clear", on_click=clear_filters, args=(key,), icon=":material/filter_alt_off:"
    )
    return chosen


def _batch_label(batch_id: str, station, inspected) -> str:
    parts = [batch_id]
    if isinstance(station, str) and station:
        parts.append(station)
    parts.append(f"{int(inspected)} images")
    return " · ".join(parts)


def hand_off(state, handed: InspectionFilter) -> None:
    """Open History with ``handed`` as its filter (the widgets are filled on History's next run)."""
    state[HANDOFF_KEY] = handed
