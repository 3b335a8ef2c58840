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

from visionqc import config, palette
from visionqc.checkpoint import card_classes
from visionqc.store import StoreError

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


def require_predictor():
    """The active model, or an explanation on the page and a stop (the page cannot work without it)."""
    predictor = get_predictor()
    if predictor is None:
        st.error(
            f"No model is loaded, so nothing can be inspected. {model_error()}\n\n"
            f"Put a model in `{config.model_dir()}` or point `VISIONQC_MODEL` at a model folder.",
            icon=":material/error:",
        )
        st.stop()
    return predictor


def active_card():
    """The active model's card, or ``None`` when no model loads (History still works without one)."""
    predictor = get_predictor()
    return None if predictor is None else predictor.card


def browser_timezone() -> str:
    """The user's browser time zone (days in filters and times in tables use it); UTC if unknown."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = getattr(st.context, "timezone", None) or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"
    return name


# --- who is reviewing ----------------------------------------------------------------------------
_REVIEWER = "_visionqc_reviewer"


def reviewer_input(key: str, label: str = "Your name", default: str = "") -> str:
    """A name field that remembers its value across pages; every correction is recorded under it."""
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(_REVIEWER) or default
    name = st.text_input(label, key=key, help="Recorded with every correction, tag and deletion (the audit trail).")
    if name.strip():
        st.session_state[_REVIEWER] = name.strip()
    return name.strip()


# --- uploads and batches ---------------------------------------------------------------------------
def upload_key(files) -> str:
    """Identifies one set of uploaded files: the same files (by upload id, name and size) give the same key."""
    import hashlib

    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: (f.name, f.file_id)):
        digest.update(f"{f.file_id}\0{f.name}\0{f.size}\n".encode())
    return digest.hexdigest()[:16]


def expand_uploads(named_bytes):
    """(name, bytes) pairs -> the files and failures to inspect (zips unpacked safely, non-images reported)."""
    from visionqc.uploads import iter_named_bytes

    return list(iter_named_bytes(named_bytes))


_BATCHES = "_visionqc_inspected_uploads"  # upload key -> batch id, so a rerun never inspects the same files twice
CURRENT_BATCH = "inspect_batch_id"
RESULTS_TABLE = "inspect_results"


def inspected_batch(key: str) -> str | None:
    return st.session_state.get(_BATCHES, {}).get(key)


def inspect_uploads(store, predictor, key: str, named_bytes, *, station: str, operator: str, note: str) -> str | None:
    """Inspect the uploaded files as one batch, with a progress bar; returns the batch id (``None``, with the
    reason shown, when the database failed).

    Remembered under ``key`` (see :func:`upload_key`): calling it again for the same uploads returns the
    batch already saved instead of classifying and saving the files a second time.
    """
    from visionqc.ingest import run_batch

    done_before = inspected_batch(key)
    if done_before is not None:
        st.session_state[CURRENT_BATCH] = done_before
        return done_before
    items = expand_uploads(named_bytes)
    bar = st.progress(0.0, text=f"Classifying {len(items)} files…")

    def progress(done: int, total: int | None) -> None:
        total = total or max(done, 1)
        bar.progress(min(done / total, 1.0), text=f"Classified {done} of {total} files")

    try:
        result = run_batch(
            store,
            predictor,
            items,
            station=station.strip() or None,
            operator=operator.strip() or None,
            note=note.strip() or None,
            source="app",
            progress=progress,
        )
    except StoreError as exc:
        bar.empty()
        st.error(
            f"The batch could not be saved completely: {exc}. Files saved before the problem are kept; press "
            "Inspect again to go on (files already saved are then reported as duplicates).",
            icon=":material/error:",
        )
        return None
    bar.empty()
    st.session_state.pop(RESULTS_TABLE, None)  # a row selected in the previous batch means nothing here
    st.session_state.setdefault(_BATCHES, {})[key] = result.batch_id
    st.session_state[CURRENT_BATCH] = result.batch_id
    return result.batch_id


# --- tables ------------------------------------------------------------------------------------------
NO_VALUE = palette.NO_SEVERITY  # "—" where a label does not apply (severity of a defect-free image)
TASK_COLUMNS = (("defect", "Defect"), ("severity", "Severity"), ("location", "Location"))


def data_url(jpeg: bytes | None) -> str | None:
    """A ``data:`` URL for an ImageColumn cell (thumbnails are small JPEGs)."""
    if not jpeg:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


@st.cache_data(max_entries=20_000, show_spinner=False)
def thumbnail_url(path: str | None) -> str | None:
    # Thumbnails are content-addressed (named by SHA-256), so a cached URL never goes stale.
    if not path:
        return None
    try:
        return data_url(Path(path).read_bytes())
    except OSError:
        return None


def _confidence(label, predicted, confidence) -> float | None:
    """The model's confidence, in percent, when the label shown is the model's own; ``None`` once a person
    changed it (a percentage beside a person's label would read as the person's certainty)."""
    if label is None or label != predicted or confidence is None or confidence != confidence:
        return None
    return round(100 * float(confidence), 1)


STATUS_NEEDS_REVIEW, STATUS_CORRECTED, STATUS_CONFIRMED = "Needs review", "Corrected", "Confirmed"
STATUS_COLORS = {
    STATUS_NEEDS_REVIEW: palette.action_color("Review"),
    STATUS_CORRECTED: "#8e44ad",
    STATUS_CONFIRMED: "#7f8c8d",
}


def _status(needs_review, reviewed, changed: bool) -> list[str]:
    if reviewed:
        return [STATUS_CORRECTED if changed else STATUS_CONFIRMED]
    return [STATUS_NEEDS_REVIEW] if needs_review else []


def inspections_table(rows, *, timezone: str = "UTC", history: bool = False):
    """Store rows (``Store.search`` / ``batch_rows``) -> the table a QC lead reads: thumbnail, file, each
    task's effective label with the model's confidence in percent, action, review state."""
    import pandas as pd

    out = pd.DataFrame(index=rows.index)
    out["Image"] = [thumbnail_url(p) for p in rows["thumb_file"]] if "thumb_file" in rows else None
    out["File"] = rows["file_name"]
    changed = pd.Series(False, index=rows.index)
    for task, title in TASK_COLUMNS:
        if task not in rows:
            continue
        labels = [None if v is None or v != v else v for v in rows[task]]
        predicted = [None if v is None or v != v else v for v in rows[f"pred_{task}"]]
        changed |= pd.Series([a != b for a, b in zip(labels, predicted, strict=True)], index=rows.index)
        # Severity is a coloured pill (a one-item list); a missing label stays empty and shows the placeholder "—".
        out[title] = [[v] if v else None for v in labels] if task == "severity" else labels
        out[f"{title} %"] = [
            _confidence(label, pred, conf)
            for label, pred, conf in zip(labels, predicted, rows[f"pred_{task}_conf"], strict=True)
        ]
    out["Action"] = [[a] if isinstance(a, str) else [] for a in rows["action"]]
    out["Status"] = [
        _status(bool(n), bool(r), bool(c))
        for n, r, c in zip(rows["needs_review"].fillna(False), rows["reviewed"].fillna(False), changed, strict=True)
    ]
    if history:  # Inspect shows one batch: the time, batch and station are in its heading
        out["Reviewed by"] = rows["reviewed_by"]
        out["Tags"] = [list(t) if t is not None and len(t) else [] for t in rows["tags"]]
        out["Inspected at"] = _local_times(rows["created_at"], timezone)
        out["Batch"] = rows["batch_id"]
        out["Station"] = rows.get("station")
        out["Outlier score"] = rows.get("outlier_score")
        out["Near-duplicate similarity"] = rows.get("near_duplicate_similarity")
    out["Why review"] = rows["review_reason"]
    return out


def _local_times(values, timezone: str):
    import pandas as pd

    stamps = pd.to_datetime(values)
    return stamps.dt.tz_localize("UTC").dt.tz_convert(timezone).dt.tz_localize(None)


def table_column_config(card=None, *, timezone: str = "UTC") -> dict:
    """Column settings for :func:`inspections_table`: thumbnails, percent confidences, coloured actions."""
    cc = st.column_config
    severities = palette.order_severities(card_classes(card, "severity"))
    actions = list(palette.ACTION_ORDER)
    percent = "%.0f%%"
    help_conf = "How sure the model is of its label. “—” where a person changed the label or none applies."
    statuses = list(STATUS_COLORS)
    return {
        "Image": cc.ImageColumn("Image", width="small", help="Click a row to see the photo large."),
        "File": cc.TextColumn("File", width="medium"),
        "Defect": cc.TextColumn("Defect"),
        "Defect %": cc.NumberColumn("Defect conf.", format=percent, help=help_conf, width="small"),
        "Severity": cc.MultiselectColumn(
            "Severity",
            options=severities,
            color=[palette.severity_color(s) for s in severities],
            width="small",
        ),
        "Severity %": cc.NumberColumn("Sev. conf.", format=percent, help=help_conf, width="small"),
        "Location": cc.TextColumn("Location", width="small"),
        "Location %": cc.NumberColumn("Loc. conf.", format=percent, help=help_conf, width="small"),
        "Action": cc.MultiselectColumn(
            "Action", options=actions, color=[palette.action_color(a) for a in actions], width="small"
        ),
        "Status": cc.MultiselectColumn(
            "Review",
            options=statuses,
            color=[STATUS_COLORS[s] for s in statuses],
            width=115,
            help="Needs review: the model is unsure, a person should look. Corrected / Confirmed: a person did.",
        ),
        "Why review": cc.TextColumn("Why the model is unsure", width="medium"),
        "Reviewed by": cc.TextColumn("Reviewed by", width="small"),
        "Tags": cc.ListColumn("Tags", width="small"),
        "Batch": cc.TextColumn("Batch", width="small"),
        "Station": cc.TextColumn("Station", width="small"),
        "Inspected at": cc.DatetimeColumn("Inspected at", format="YYYY-MM-DD HH:mm", help=f"Time zone: {timezone}"),
        "Outlier score": cc.NumberColumn(
            "Outlier score",
            format="%.3f",
            width="small",
            help="How unlike the training images of its class (0 = typical). Computed on the Explore page.",
        ),
    }


def selected_rows(event) -> list[int]:
    """Row positions selected in an ``st.dataframe(on_select=...)`` event (or its session-state value)."""
    if event is None:
        return []
    selection = event.get("selection", {}) if isinstance(event, dict) else getattr(event, "selection", {})
    rows = selection.get("rows", []) if isinstance(selection, dict) else getattr(selection, "rows", [])
    return [int(r) for r in rows]


# --- batch summary --------------------------------------------------------------------------------
_ACTION_MARKDOWN_COLOR = {"Pass": "green", "Hold": "yellow", "Rework": "orange", "Reject": "red", "Review": "blue"}


def render_batch_summary(summary: dict) -> None:
    """Two rows of metrics: the batch's counts, then how many images got each action."""
    cells = [
        ("Inspected", summary.get("inspected", 0), "New images classified in this batch."),
        ("Needs review", summary.get("needs_review", 0), "The model was unsure about these; a person should look."),
        ("Duplicates", summary.get("duplicates", 0), "Same bytes as an earlier inspection: reported, not re-counted."),
        ("Failed", summary.get("failures", 0), "Files that could not be read; listed below with the reason."),
    ]
    for column, (label, value, help_text) in zip(st.columns(len(cells)), cells, strict=True):
        column.metric(label, f"{value:,}", help=help_text, border=True)
    by_action = summary.get("by_action", {})
    actions = palette.order_actions([*palette.ACTION_ORDER, *by_action])
    for column, action in zip(st.columns(len(actions)), actions, strict=True):
        color = _ACTION_MARKDOWN_COLOR.get(action, "gray")
        column.metric(f":{color}[■] {action}", f"{by_action.get(action, 0):,}", border=True)


# --- one inspection -------------------------------------------------------------------------------
def _dash(value) -> str:
    return palette.NO_SEVERITY if value is None or value != value or value == "" else str(value)


def probabilities_table(probabilities: dict[str, float], current: str | None):
    """One task's classes, likeliest first, with the model's probability in percent; ✔ marks the current label."""
    import pandas as pd

    ordered = sorted(probabilities.items(), key=lambda kv: -kv[1])
    return pd.DataFrame(
        {
            "Class": [f"{label} ✔" if label == current else label for label, _ in ordered],
            "Probability": [round(100 * float(p), 1) for _, p in ordered],
        }
    )


def render_probabilities(detail: dict, key: str) -> None:
    """Every class probability, one tab per task (severity and location only where the model saw a defect)."""
    probabilities = detail.get("probabilities") or {}
    tasks = [t for t in probabilities if probabilities[t]]
    if not tasks:
        return
    st.caption("The model's probabilities (✔ = the label this image has now)")
    for task, tab in zip(tasks, st.tabs([t.capitalize() for t in tasks]), strict=True):
        tab.dataframe(
            probabilities_table(probabilities[task], detail.get(task)),
            hide_index=True,
            width="stretch",
            column_config={
                "Probability": st.column_config.ProgressColumn(
                    "Probability", min_value=0, max_value=100, format="%.1f%%"
                )
            },
            key=f"{key}_probs_{task}",
        )


def reviews_table(reviews):
    """The review history (oldest first) in words: when, who, what, the labels before."""
    import pandas as pd

    rows = []
    for r in reviews.itertuples():
        before = r.previous if isinstance(r.previous, dict) else {}
        rows.append(
            {
                "When (UTC)": r.created_at,
                "Who": r.reviewer,
                "What": {
                    "correct": "corrected",
                    "confirm": "confirmed",
                    "delete": "deleted",
                    "restore": "restored",
                }.get(r.kind, r.kind),
                "Labels after": " · ".join(_dash(v) for v in (r.defect, r.severity, r.location, r.action)),
                "Labels before": " · ".join(_dash(before.get(k)) for k in ("defect", "severity", "location", "action")),
                "Note": r.note if isinstance(r.note, str) else "",
            }
        )
    return pd.DataFrame(rows, columns=["When (UTC)", "Who", "What", "Labels after", "Labels before", "Note"])


def _reports_errors(callback):
    """A widget callback whose database errors become a message beside the widget, not a traceback.

    The callback's third argument is the widget-group key that its messages are shown under."""
    import functools

    @functools.wraps(callback)
    def run(*args):
        try:
            callback(*args)
        except (StoreError, ValueError) as exc:
            _flash(args[2], "error", f"Not saved: {exc}")

    return run


def _flash(key: str, kind: str, text: str) -> None:
    st.session_state[f"{key}_message"] = (kind, text)


@_reports_errors
def _save_correction(store, inspection_id: int, key: str, card) -> None:
    state = st.session_state
    reviewer = (state.get(f"{key}_who") or "").strip()
    if not reviewer:
        state[f"{key}_message"] = ("error", "Enter your name first: every correction records who made it.")
        return
    labels = {}
    for task, _ in TASK_COLUMNS:
        if task in _task_names(card):
            value = state.get(f"{key}_{task}")
            labels[task] = None if value in (None, palette.NO_SEVERITY) else value
    state[_REVIEWER] = reviewer
    store.review(
        [inspection_id],
        reviewer,
        "correct",
        defect=labels.get("defect", ...),
        severity=labels.get("severity", ...),
        location=labels.get("location", ...),
        note=(state.get(f"{key}_note") or "").strip() or None,
    )
    shown = " · ".join(_dash(v) for v in labels.values())
    state[f"{key}_message"] = ("success", f"Saved: {shown} (by {reviewer}). The model's prediction is kept.")


@_reports_errors
def _confirm(store, inspection_id: int, key: str) -> None:
    state = st.session_state
    reviewer = (state.get(f"{key}_who") or "").strip()
    if not reviewer:
        state[f"{key}_message"] = ("error", "Enter your name first: every review records who made it.")
        return
    state[_REVIEWER] = reviewer
    store.mark_reviewed([inspection_id], reviewer, note=(state.get(f"{key}_note") or "").strip() or None)
    state[f"{key}_message"] = ("success", f"Confirmed as correct (by {reviewer}).")


def _task_names(card) -> list[str]:
    return [t.name for t in card.tasks] if card is not None else ["defect", "severity", "location"]


def render_inspection_detail(store, inspection_id: int, card=None, *, key: str = "detail") -> None:
    """The photo large (with the heatmap of where the model looked), every class probability, the labels with a
    correction form, tags and review history."""
    detail = store.inspection_detail(int(inspection_id))
    if detail is None:
        st.info("This inspection no longer exists.")
        return
    key = f"{key}_{int(inspection_id)}"
    left, right = st.columns([3, 2], gap="large")
    with left:
        from visionqc.heatmap_view import render_image_with_heatmap

        render_image_with_heatmap(detail, get_predictor(), key=key)
    with right:
        st.markdown(f"**{detail['file_name']}**")
        predicted = " · ".join(
            f"{_dash(detail.get(f'pred_{t}'))}"
            + (f" ({100 * detail[f'pred_{t}_conf']:.0f}%)" if detail.get(f"pred_{t}_conf") is not None else "")
            for t, _ in TASK_COLUMNS
        )
        st.caption(f"Model predicted: {predicted} → **{detail.get('pred_action')}**")
        if detail.get("needs_review"):
            st.warning(f"Needs review: {detail.get('review_reason') or 'the model is unsure'}", icon=":material/flag:")
        if detail.get("reviewed"):
            st.caption(f"Reviewed by {detail.get('reviewed_by')} at {detail.get('reviewed_at'):%Y-%m-%d %H:%M} UTC")
        if detail.get("tags"):
            st.caption("Tags: " + ", ".join(detail["tags"]))
        render_probabilities(detail, key)
        _correction_form(store, detail, card, key)
    reviews = detail.get("reviews")
    if reviews is not None and len(reviews):
        st.markdown("**Review history** (the model's prediction above is never changed)")
        st.dataframe(reviews_table(reviews), hide_index=True, width="stretch", key=f"{key}_reviews")


def _correction_form(store, detail: dict, card, key: str) -> None:
    message = st.session_state.pop(f"{key}_message", None)
    if message:
        getattr(st, message[0])(message[1])
    tasks = _task_names(card)
    with st.form(f"{key}_form", border=True):
        st.markdown("**Correct the labels**")
        for task, title in TASK_COLUMNS:
            if task not in tasks:
                continue
            current = detail.get(task)
            classes = card_classes(card, task)
            options = list(dict.fromkeys([*classes, *([current] if current else [])]))
            if task != "defect":
                options = [palette.NO_SEVERITY, *options]
            index = options.index(current) if current in options else 0
            st.selectbox(title, options, index=index, key=f"{key}_{task}")
        if card is not None and "severity" in tasks:
            st.caption(f"Choosing “{card.no_defect_class}” clears severity and location.")
        st.text_input("Note (optional)", key=f"{key}_note")
        if f"{key}_who" not in st.session_state:
            st.session_state[f"{key}_who"] = st.session_state.get(_REVIEWER, "")
        st.text_input("Your name", key=f"{key}_who", help="Recorded with the correction (the audit trail).")
        save, confirm = st.columns(2)
        save.form_submit_button(
            "Save correction",
            type="primary",
            on_click=_save_correction,
            args=(store, int(detail["inspection_id"]), key, card),
        )
        confirm.form_submit_button(
            "Confirm as correct", on_click=_confirm, args=(store, int(detail["inspection_id"]), key)
        )


# --- History: sorting, paging and bulk actions ------------------------------------------------------
HISTORY_TABLE = "history_results"
# What the user sees -> the store's sortable column.
SORT_CHOICES = {
    "Inspected at": "created_at",
    "Defect confidence": "confidence",
    "File name": "file_name",
    "Defect": "defect",
    "Severity": "severity",
    "Location": "location",
    "Action": "action",
    "Needs review": "needs_review",
    "Reviewed": "reviewed",
    "Batch": "batch_id",
    "Outlier score (Explore)": "outlier_score",
    "Near-duplicate similarity (Explore)": "near_duplicate_similarity",
}


def keep_page_in_range(key: str, pages: int, signature: object) -> None:
    """Call before the page-number widget: back to page 1 when the filter changed, never past the last page."""
    sig_key = f"{key}_signature"
    if st.session_state.get(sig_key) != repr(signature):
        st.session_state[sig_key] = repr(signature)
        st.session_state[key] = 1
    elif st.session_state.get(key, 1) > pages:
        st.session_state[key] = pages


def show_message(key: str) -> None:
    """Show (once) the message a callback left for the widget group ``key``."""
    message = st.session_state.pop(f"{key}_message", None)
    if message:
        getattr(st, message[0])(message[1])


@_reports_errors
def _bulk(store, ids: list[int], key: str, what: str) -> None:
    state = st.session_state
    reviewer = (state.get(f"{key}_who") or "").strip()
    if not reviewer:
        _flash(key, "error", "Enter your name first: tags, reviews and deletions record who made them.")
        return
    state[_REVIEWER] = reviewer
    if what == "add_tags":
        tags = [t.strip() for t in (state.get(f"{key}_add") or "").split(",") if t.strip()]
        if not tags:
            _flash(key, "error", "Type one or more tags, separated by commas.")
            return
        added = store.add_tags(ids, tags)
        state[f"{key}_add"] = ""
        _flash(key, "success", f"Tagged {len(ids)} inspection(s) with {', '.join(tags)} ({added} new tag(s)).")
    elif what == "remove_tags":
        tags = list(state.get(f"{key}_remove") or [])
        if not tags:
            _flash(key, "error", "Choose the tags to remove.")
            return
        removed = store.remove_tags(ids, tags)
        _flash(key, "success", f"Removed {removed} tag(s) from the selected inspections.")
    elif what == "review":
        changed = store.mark_reviewed(ids, reviewer)
        _flash(key, "success", f"Marked {changed} inspection(s) as reviewed by {reviewer}.")
    elif what == "restore":
        restored = store.restore(ids, reviewer)
        state.pop(HISTORY_TABLE, None)  # the restored rows leave the "only deleted" view
        _flash(key, "success", f"Restored {restored} inspection(s); the restore is in the audit trail.")
    elif what == "delete":
        if not state.get(f"{key}_confirm_delete"):
            _flash(key, "error", "Tick “Yes, delete them” first.")
            return
        deleted = store.soft_delete(ids, reviewer, note=(state.get(f"{key}_why") or "").strip() or None)
        state[f"{key}_confirm_delete"] = False
        state.pop(HISTORY_TABLE, None)  # the selected rows are gone
        _flash(key, "success", f"Deleted {deleted} inspection(s); the deletion is in the audit trail.")


def render_bulk_actions(store, selected, *, key: str = "bulk", deleted: bool = False) -> None:
    """Tag, untag, mark reviewed or (soft-)delete the selected inspections (rows of ``Store.search``) at once;
    for rows that are deleted (``deleted=True``), restore them."""
    ids = [int(i) for i in selected["inspection_id"]]
    show_message(key)
    if f"{key}_who" not in st.session_state:
        st.session_state[f"{key}_who"] = st.session_state.get(_REVIEWER, "")
    st.text_input("Your name", key=f"{key}_who", help="Recorded with every change (the audit trail).")
    if deleted:
        st.button(
            "Restore selected",
            key=f"{key}_restore_btn",
            on_click=_bulk,
            args=(store, ids, key, "restore"),
            icon=":material/restore_from_trash:",
        )
        return
    tag_col, untag_col, review_col, delete_col = st.columns(4, border=True)
    with tag_col:
        st.text_input("Add tags (comma-separated)", key=f"{key}_add", placeholder="e.g. retrain, line-2")
        st.button("Add tags", key=f"{key}_add_btn", on_click=_bulk, args=(store, ids, key, "add_tags"))
    with untag_col:
        present = sorted({t for tags in selected["tags"] if tags is not None for t in tags})
        st.multiselect("Remove tags", present, key=f"{key}_remove")
        st.button("Remove tags", key=f"{key}_remove_btn", on_click=_bulk, args=(store, ids, key, "remove_tags"))
    with review_col:
        st.caption("Accept the current labels of every selected row.")
        st.button(
            "Mark reviewed", key=f"{key}_review_btn", on_click=_bulk, args=(store, ids, key, "review"), type="primary"
        )
    with delete_col:
        st.text_input("Why delete (optional)", key=f"{key}_why")
        st.checkbox("Yes, delete them", key=f"{key}_confirm_delete")
        st.button(
            "Delete selected", key=f"{key}_delete_btn", on_click=_bulk, args=(store, ids, key, "delete"), icon="🗑️"
        )
        st.caption("Deleted rows are hidden everywhere and kept in the audit trail.")
