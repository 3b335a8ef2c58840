"""Sign-in and roles in the app (the rules are :mod:`visionqc.accounts`).

:func:`gate_or_error` runs in ``streamlit_app.py`` before the pages are registered. With sign-in on (an account
exists, or ``VISIONQC_SIGN_IN=required``), a session that is not signed in gets a navigation with one page, the
sign-in form (:func:`sign_in_page`), so every address leads there (the app always calls ``st.navigation``:
without it Streamlit would serve the ``pages/`` folder on its own, with no gate); a signed-in one gets only the
pages its role may open (:func:`may_open`), so a page above the role is not registered and its address leads
to the first page. Every action that changes data checks the role again on the server
when it runs (:func:`allowed`, :func:`refusal`), whatever the browser sent. Sessions expire after
:func:`~visionqc.accounts.session_idle_limit` without a click; a disabled account is signed out at its next
click. The signed-in user is the reviewer and operator on every record.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime

import streamlit as st

from visionqc import accounts
from visionqc.store import StoreError
from visionqc.ui import resources
from visionqc.ui.text import literal

LOG = logging.getLogger("visionqc.auth")
USER = "_visionqc_user"  # {"username", "role", "last_seen"} of the signed-in user
SIGN_IN_ON = "_visionqc_sign_in_on"  # whether this run requires sign-in (set by gate)
NOTICE = "_visionqc_sign_in_notice"  # why the last session ended (shown on the sign-in form)

# Which action each page needs; pages not named here need "view".
PAGE_ACTIONS = {"review-queue": "review", "models": "train", "users": "users"}


def _now() -> datetime:
    return datetime.now(UTC)


def sign_in_on(store) -> bool:
    """Sign-in is on when asked for (``VISIONQC_SIGN_IN=required``), when an account exists, and always on a
    shared PostgreSQL store (a plant network: never open to whoever reaches the page)."""
    return accounts.sign_in_forced() or store.engine == "postgresql" or store.has_users()


def current_user() -> dict | None:
    """The signed-in user (``username``, ``role``), or ``None`` (not signed in, or sign-in is off)."""
    return st.session_state.get(USER)


def signed_in_name() -> str | None:
    user = current_user()
    return user["username"] if user else None


def _role_now() -> str | None:
    """The signed-in user's role as the store has it now (``None``: not signed in, or disabled/removed)."""
    user = current_user()
    if user is None:
        return None
    account = resources.get_store(notice=False).user(user["username"])
    return None if account is None or account["disabled"] else account["role"]


def allowed(action: str) -> bool:
    """Whether this session may do ``action``: always with sign-in off, else by the signed-in user's role as
    the store has it now. Read again at each check: a button's callback runs before the page (and before
    :func:`gate`), so a role taken away or an account disabled a moment ago already counts."""
    if not st.session_state.get(SIGN_IN_ON):
        return True
    return accounts.can(_role_now(), action)


def refusal(action: str) -> str:
    """What to tell a user whose role does not allow ``action``."""
    user = current_user()
    needed = accounts.PERMISSIONS[action]
    who = f"Signed in as {user['username']} ({_role_now() or 'disabled'})" if user else "Not signed in"
    return f"{who}: this needs the {needed} role. Ask an admin if you should have it."


def may_open(url_path: str) -> bool:
    return allowed(PAGE_ACTIONS.get(url_path, "view"))


def sign_out(notice: str | None = None) -> None:
    user = st.session_state.pop(USER, None)
    if user:
        LOG.info("sign-out: %s%s", user["username"], f" ({notice})" if notice else "")
    if notice:
        st.session_state[NOTICE] = notice


SIGN_IN = "sign-in"  # gate_or_error's answer when the session must sign in first


def gate_or_error() -> StoreError | str | None:
    """Whether this run may show the app: ``None`` (yes), :data:`SIGN_IN` (show :func:`sign_in_page` and
    nothing else), or the :class:`StoreError` that kept the store from opening (show it and no page: a store
    that cannot be read cannot say who may come in)."""
    try:
        return None if gate(resources.get_store(notice=False)) else SIGN_IN
    except StoreError as exc:
        return exc


def gate(store) -> bool:
    """Whether the session may go on: sign-in is off, or the user is signed in, enabled and not idle too long."""
    on = sign_in_on(store)
    st.session_state[SIGN_IN_ON] = on
    if not on:
        st.session_state.pop(USER, None)
        return True
    user = current_user()
    if user is None:
        return False
    account = store.user(user["username"])
    if account is None or account["disabled"]:
        sign_out("Your account was disabled; ask an admin.")
        return False
    if _now() - user["last_seen"] > accounts.session_idle_limit():
        sign_out("Your session expired after a while without use; sign in again.")
        return False
    user["role"] = account["role"]  # a changed role applies at the next click
    user["last_seen"] = _now()
    return True


def sign_in_pages(specs) -> list:
    """The pages of a session that must sign in first: the sign-in form under every page's address, so a
    bookmarked or shared link asks for sign-in and then opens that page (if the role allows it)."""
    return [st.Page(sign_in_page, title="Sign in", url_path="sign-in", default=True)] + [
        st.Page(functools.partial(sign_in_page), title=spec.title, url_path=spec.url_path) for spec in specs
    ]


def sign_in_page() -> None:
    """The only page of a session that is not signed in (registered alone, so every address leads here)."""
    store = resources.get_store(notice=False)
    st.title("VisionQC")
    if not store.has_users():
        st.warning(
            "Sign-in is required here (a shared PostgreSQL store, or `VISIONQC_SIGN_IN=required`) but there is no "
            "account yet. On the server, create the first admin with `python -m visionqc users add NAME --role "
            "admin`, then reload.",
            icon=":material/person_add:",
        )
        return
    if notice := st.session_state.pop(NOTICE, None):
        st.info(notice, icon=":material/logout:")
    with st.form("sign_in_form", enter_to_submit=True, width=420):
        st.subheader("Sign in")
        username = st.text_input("User name", key="sign_in_username", autocomplete="username")
        password = st.text_input("Password", type="password", key="sign_in_password", autocomplete="current-password")
        pressed = st.form_submit_button("Sign in", type="primary", icon=":material/login:")
    if not pressed:
        return
    result = store.authenticate(username, password)
    if not result.ok:
        LOG.warning("failed sign-in for %r: %s", result.username, result.message)
        st.error(result.message, icon=":material/lock:")
        return
    LOG.info("sign-in: %s (%s)", result.username, result.role)
    st.session_state[USER] = {"username": result.username, "role": result.role, "last_seen": _now()}
    st.rerun()


def signed_in_box() -> None:
    """In the sidebar: who is signed in, with which role, and a sign-out button."""
    user = current_user()
    if user is None:
        return
    st.markdown(f"Signed in as **{literal(user['username'])}** · {user['role']}")
    if st.button("Sign out", key="sign_out", icon=":material/logout:"):
        sign_out("You signed out.")
        st.rerun()
