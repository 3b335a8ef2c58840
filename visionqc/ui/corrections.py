"""The one correction form, used by every detail view and by the review queue: the labels to confirm or
correct, a note, and who reviewed. Saving goes through the store's audit trail; errors become messages."""

from __future__ import annotations

import functools
from typing import Any

import streamlit as st

from visionqc.labels import NO_VALUE, UNUSABLE_REASONS, shown, stored
from visionqc.model.card import ModelCard, card_classes
from visionqc.store import StoreError
from visionqc.ui import auth
from visionqc.ui.sidebar import NO_REVIEWER_MESSAGE, last_reviewer
from visionqc.ui.tables import TASK_COLUMNS
from visionqc.ui.text import literal


def flash(group: str, kind: str, text: str) -> None:
    """Leave a message (``kind`` = success / error / warning / info) for :func:`show_message` of ``group``."""
    st.session_state[f"{group}_message"] = (kind, text)


def show_message(group: str) -> None:
    """Show (once) the message a callback left for the widget group ``group``."""
    message = st.session_state.pop(f"{group}_message", None)
    if message:
        getattr(st, message[0])(message[1])


def reports_errors(callback):
    """A widget callback whose database errors become a message of its group, not a traceback.

    The callback takes the message group as its keyword argument ``group``."""

    @functools.wraps(callback)
    def run(*args, **kwargs):
        try:
            callback(*args, **kwargs)
        except (StoreError, ValueError) as exc:
            flash(kwargs["group"], "error", f"Not saved: {exc}")

    return run


def task_names(card: ModelCard | None) -> list[str]:
    return [t.name for t in card.tasks] if card is not None else ["defect", "severity", "location"]


@reports_errors
def _review(store, detail: dict, card: ModelCard | None, kind: str, *, key: str, group: str):
    state = st.session_state
    if not auth.allowed("review"):  # checked when the click arrives, whatever the page showed
        flash(group, "error", auth.refusal("review"))
        return
    reviewer = last_reviewer()
    if not reviewer:
        flash(group, "error", NO_REVIEWER_MESSAGE)
        return
    note = (state.get(f"{key}_note") or "").strip() or None
    name = detail["file_name"]
    if kind == "unusable":
        reason = state.get(f"{key}_unusable_reason") or UNUSABLE_REASONS[0]
        store.mark_unusable([int(detail["inspection_id"])], reviewer, reason, note=note)
        flash(
            group,
            "success",
            f"Marked {literal(name)} as unusable ({literal(reason)}, by {literal(reviewer)}): "
            "it leaves every quality figure.",
        )
        return
    if kind == "confirm":
        store.review([int(detail["inspection_id"])], reviewer, "confirm", note=note)
        flash(
            group, "success", f"Confirmed {literal(name)} as {literal(detail.get('defect'))} (by {literal(reviewer)})."
        )
        return
    labels: dict[str, Any] = {
        task: stored(state.get(f"{key}_{task}")) for task, _ in TASK_COLUMNS if task in task_names(card)
    }
    store.review([int(detail["inspection_id"])], reviewer, "correct", note=note, **labels)
    shown_labels = " · ".join(shown(v) for v in labels.values())
    flash(
        group,
        "success",
        f"Saved: {shown_labels} for {literal(name)} (by {literal(reviewer)}). The model's prediction is kept.",
    )


def _skip(skipped_key: str, inspection_id: int) -> None:
    st.session_state.setdefault(skipped_key, []).append(inspection_id)


def correction_form(
    store,
    detail: dict,
    card: ModelCard | None,
    *,
    key: str,
    group: str,
    skipped_key: str | None = None,
) -> None:
    """The labels of one inspection to confirm or correct, with a note, or "not a part / unusable image".

    ``key`` prefixes the widgets' keys; messages go to ``group`` (show them with :func:`show_message`). The
    reviewer is the name set in the sidebar. With ``skipped_key`` a Skip button adds the inspection to that
    list. Keyboard: Y confirm, S save the correction, U unusable, N skip.
    """
    if not auth.allowed("review"):
        st.caption(f":material/lock: Reviewing is for leads. {auth.refusal('review')}")
        return
    tasks = task_names(card)
    iid = int(detail["inspection_id"])
    with st.form(f"{key}_form", border=True, enter_to_submit=False):
        st.markdown("**Confirm or correct the labels**")
        for task, title in TASK_COLUMNS:
            if task not in tasks:
                continue
            current = detail.get(task)
            options = list(dict.fromkeys([*card_classes(card, task), *([current] if current else [])]))
            if task != "defect":
                options = [NO_VALUE, *options]
            index = options.index(current) if current in options else 0
            # An anomaly model knows no defect types: the reviewer names one (typed, or one named before), and
            # these reviews become the labelled dataset a classifier later learns from.
            naming = task == "defect" and card is not None and card.raw.get("kind") == "anomaly"
            if naming:
                named = [v for v in store.distinct_values("defect") if isinstance(v, str)]
                options = list(dict.fromkeys([*options, *sorted(named)]))
            st.selectbox(
                title, options, index=index, key=f"{key}_{task}", accept_new_options=naming,
                help="Type the defect's name (e.g. crack) to name a new type." if naming else None,
            )  # fmt: skip
        if card is not None and "severity" in tasks:
            st.caption(f"Choosing “{literal(card.no_defect_class)}” clears severity and location.")
        st.text_input("Note (optional)", key=f"{key}_note")
        args = {"key": key, "group": group}
        with st.container(horizontal=True):
            st.form_submit_button(
                "Confirm",
                type="primary",
                icon=":material/check:",
                shortcut="Y",
                on_click=_review,
                args=(store, detail, card, "confirm"),
                kwargs=args,
                help="The labels shown are right (Y).",
            )
            st.form_submit_button(
                "Save correction",
                icon=":material/edit:",
                shortcut="S",
                on_click=_review,
                args=(store, detail, card, "correct"),
                kwargs=args,
                help="Save the labels chosen above (S).",
            )
            if skipped_key is not None:
                st.form_submit_button(
                    "Skip", icon=":material/skip_next:", shortcut="N", on_click=_skip, args=(skipped_key, iid)
                )
        st.markdown("**Or: not a part / unusable image**")
        with st.container(horizontal=True, vertical_alignment="bottom"):
            st.selectbox("Why", UNUSABLE_REASONS, key=f"{key}_unusable_reason", width=200)
            st.form_submit_button(
                "Not a part / unusable",
                icon=":material/hide_image:",
                shortcut="U",
                on_click=_review,
                args=(store, detail, card, "unusable"),
                kwargs=args,
                help="The photo is not of our part, or cannot be judged (U). It leaves every quality figure; "
                "the audit trail keeps why. A correction later gives it labels again.",
            )
        if last_reviewer():
            st.caption(f"Reviewing as **{literal(last_reviewer())}** (the name in the sidebar).")
        else:
            st.warning(NO_REVIEWER_MESSAGE, icon=":material/person:")
