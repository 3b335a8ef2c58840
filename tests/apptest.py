"""The app in Streamlit's AppTest as a user meets it, on either backend.

On one machine (the DuckDB file, no accounts) sign-in is off and a reviewer types their name in the sidebar; on a
shared PostgreSQL store sign-in is always on (``visionqc.ui.auth.sign_in_on``) and the signed-in user is the
reviewer. :func:`open_app` and :func:`as_reviewer` hide that difference, so one page test runs on both: with the
``backend`` fixture (a new, empty store) or with the ``home`` fixture of ``tests/conftest.py`` parametrised by
:data:`BOTH_BACKENDS` (a private copy of the module's seeded store).
"""

from __future__ import annotations

import functools
import os

import pytest
from streamlit.testing.v1 import AppTest

from visionqc.accounts import hash_password
from visionqc.config import PROJECT_ROOT
from visionqc.store import Store

APP = str(PROJECT_ROOT / "streamlit_app.py")
PASSWORD = "a lead's password in the tests"

# For page tests over a module's seeded store: run on the DuckDB file and on a PostgreSQL clone of its rows.
BOTH_BACKENDS = pytest.mark.parametrize("home", ["duckdb", "postgresql"], indirect=True)


def shared_store() -> bool:
    """Whether this test runs on PostgreSQL (``VISIONQC_DATABASE_URL`` set by the ``backend``/``home`` fixture)."""
    return bool(os.environ.get("VISIONQC_DATABASE_URL"))


@functools.cache
def _password_hash() -> str:
    return hash_password(PASSWORD)  # argon2 takes ~0.4 s: once per test process


def add_account(name: str, role: str = "lead") -> None:
    """The account ``name`` (password :data:`PASSWORD`) in the store of ``VISIONQC_HOME``/``_DATABASE_URL``,
    made when missing. Before the first run: with no account at all the app shows no sign-in form."""
    store = Store()
    if store.user(name) is None:
        store.add_user(name, role, _password_hash())


def sign_in(at: AppTest, name: str) -> AppTest:
    """Sign in as ``name`` (an account of :func:`add_account`) through the form."""
    at.text_input(key="sign_in_username").set_value(name)
    at.text_input(key="sign_in_password").set_value(PASSWORD)
    [button] = [b for b in at.button if b.label == "Sign in"]
    button.click().run()
    assert not at.exception, at.exception
    assert any(f"Signed in as **{name}**" in m.value for m in at.sidebar.markdown), "the sign-in was refused"
    return at


def open_app(page: str | None = None, *, reviewer: str = "Ana", timeout: float = 180) -> AppTest:
    """The app through ``streamlit_app.py`` (its navigation and page boundary), on ``page`` when given. On a
    shared store the lead ``reviewer`` signs in first; on one machine nobody does (see :func:`as_reviewer`)."""
    if shared_store():
        add_account(reviewer)
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    assert not at.exception, f"the first page crashed: {at.exception}"
    if shared_store():
        sign_in(at, reviewer)
    if page is not None:
        at.switch_page(page).run()
        assert not at.exception, f"{page} crashed: {at.exception}"
    return at


def as_reviewer(at: AppTest, name: str) -> AppTest:
    """Review as ``name`` from the next run on: typed in the sidebar on one machine; on a shared store, the
    signed-in user (``open_app(reviewer=name)``), which this checks."""
    if shared_store():
        assert any(f"Signed in as **{name}**" in m.value for m in at.sidebar.markdown), f"not signed in as {name}"
    else:
        at.text_input(key="sidebar_reviewer").set_value(name)
    return at
