"""Sign-in and roles in the app (AppTest through streamlit_app.py): the form, the pages each role may open,
actions refused on the server, the signed-in name in the audit trail, expiry and disabled accounts.

The tests that write or read account, sign-in and review rows run on both backends (``BOTH_BACKENDS``: a private
PostgreSQL clone of the module's seeded store second); the ones about one machine without accounts run on the
DuckDB file only, and a shared store's own rule (sign-in always asked) has its test."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from apptest import BOTH_BACKENDS
from records import seed_inspections
from streamlit.testing.v1 import AppTest

from visionqc.accounts import hash_password
from visionqc.config import PROJECT_ROOT
from visionqc.filters import InspectionFilter
from visionqc.store import Store
from visionqc.ui import auth, history

APP = str(PROJECT_ROOT / "streamlit_app.py")
PASSWORDS = {"olga": "operator secret 1", "lea": "lead secret 22", "ada": "admin secret 333"}
ROLES = {"olga": "operator", "lea": "lead", "ada": "admin"}


@pytest.fixture(scope="module")
def seeded_home(tmp_path_factory) -> Path:
    """40 inspections and the three accounts; each test gets a private copy through ``home`` (tests/conftest.py)."""
    home = tmp_path_factory.mktemp("sign-in") / "visionqc-data"
    store = seed_inspections(home, 40, days=5)
    for name, password in PASSWORDS.items():
        store.add_user(name, ROLES[name], hash_password(password))
    return home


def open_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def sign_in(at: AppTest, name: str, password: str | None = None) -> AppTest:
    at.text_input(key="sign_in_username").set_value(name)
    at.text_input(key="sign_in_password").set_value(PASSWORDS[name] if password is None else password)
    [button] = [b for b in at.button if b.label == "Sign in"]
    button.click().run()
    assert not at.exception, at.exception
    return at


def reachable(at: AppTest, page: str) -> bool:
    try:
        at.switch_page(page)
    except ValueError as exc:  # AppTest knows only the pages st.navigation registered
        assert "Could not find a navigation page" in str(exc)
        return False
    at.run()
    assert not at.exception, at.exception
    return True


@pytest.mark.duckdb_only("one machine without accounts: a shared store always asks for sign-in (last test)")
def test_without_accounts_nobody_signs_in_and_names_are_typed(tmp_path, monkeypatch, default_model_dir):
    monkeypatch.setenv("VISIONQC_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("VISIONQC_MODEL", str(default_model_dir))
    at = open_app()
    assert [t.value for t in at.title] == ["Inspect"]
    assert at.sidebar.text_input(key="sidebar_reviewer") is not None
    assert reachable(at, "pages/5_Review_queue.py") and reachable(at, "pages/7_Users.py")


@BOTH_BACKENDS
def test_with_accounts_only_the_sign_in_form_shows(home):
    at = open_app()
    assert [t.value for t in at.title] == ["VisionQC"] and [s.value for s in at.subheader] == ["Sign in"]
    assert not at.dataframe and not at.sidebar.text_input, "no page and no sidebar before signing in"
    sign_in(at, "lea", "not the password")
    assert [e.value for e in at.error] == ["Wrong user name or password."]
    assert [t.value for t in at.title] == ["VisionQC"]


def test_an_operator_inspects_and_views_but_cannot_review_tag_or_train(home):
    at = sign_in(open_app(), "olga")
    assert [t.value for t in at.title] == ["Inspect"]
    assert any("Signed in as **olga** · operator" in m.value for m in at.sidebar.markdown)
    for page in ("pages/5_Review_queue.py", "pages/6_Models.py", "pages/7_Users.py"):
        assert not reachable(at, page), page
    assert reachable(at, "pages/3_Dashboard.py") and reachable(at, "pages/2_History.py")
    tick(at, [0, 1])
    assert not [b for b in at.button if b.key == "history_bulk_delete_btn"]
    assert any("Tagging, reviewing and deleting are for leads" in c.value for c in at.caption)


def tick(at: AppTest, rows: list[int]) -> None:
    at.session_state[at.session_state[f"{history.HISTORY_TABLE}_key"]] = {
        "selection": {"rows": rows, "columns": [], "cells": []}
    }
    at.run()
    assert not at.exception, at.exception


@BOTH_BACKENDS
def test_a_role_taken_away_counts_at_the_very_next_click(home):
    """The check runs on the server when the click arrives, not only when the page drew the button."""
    at = sign_in(open_app(), "lea")
    reachable(at, "pages/2_History.py")
    tick(at, [0, 1])
    at.checkbox(key="history_bulk_confirm_delete").check()
    Store(home).set_role("lea", "operator")  # an admin, elsewhere, while the lead's page is open
    at.button(key="history_bulk_delete_btn").click().run()
    assert any("Signed in as lea (operator): this needs the lead role" in e.value for e in at.error)
    assert Store(home).count() == 40


@BOTH_BACKENDS
def test_a_lead_reviews_and_the_audit_trail_names_the_signed_in_user(home):
    at = sign_in(open_app(), "lea")
    assert not reachable(at, "pages/7_Users.py") and reachable(at, "pages/5_Review_queue.py")
    assert not at.sidebar.text_input, "no typed name: the signed-in user reviews"
    [confirm] = [b for b in at.button if b.label == "Confirm"]
    first = int(Store(home).review_queue(InspectionFilter(), 0.6)[0][0])
    confirm.click().run()
    assert not at.exception, at.exception
    trail = Store(home).inspection_detail(first)["reviews"]
    assert list(trail["reviewer"]) == ["lea"] and list(trail["kind"]) == ["confirm"]


@BOTH_BACKENDS
def test_an_admin_adds_an_account_that_can_then_sign_in(home):
    at = sign_in(open_app(), "ada")
    assert reachable(at, "pages/7_Users.py")
    at.text_input(key="users_add_name").set_value("otto")
    at.selectbox(key="users_add_role").set_value("operator")
    at.text_input(key="users_add_password").set_value("otto's password")
    at.button(key="users_add_btn").click().run()
    assert any("Added otto (operator)" in s.value for s in at.success)
    assert Store(home).authenticate("otto", "otto's password").role == "operator"


@BOTH_BACKENDS
def test_an_idle_session_expires_and_a_disabled_account_is_signed_out(home, monkeypatch):
    at = sign_in(open_app(), "lea")
    at.session_state[auth.USER]["last_seen"] -= timedelta(hours=2)
    at.run()
    assert [s.value for s in at.subheader] == ["Sign in"]
    assert any("session expired" in i.value for i in at.info)
    sign_in(at, "lea")
    assert [t.value for t in at.title] == ["Inspect"]
    Store(home).set_disabled("lea", True)
    at.run()
    assert [s.value for s in at.subheader] == ["Sign in"] and any("disabled" in i.value for i in at.info)


@pytest.mark.duckdb_only("one machine without accounts: a shared store always asks for sign-in (last test)")
def test_sign_in_can_be_required_before_any_account_exists(tmp_path, monkeypatch, default_model_dir):
    monkeypatch.setenv("VISIONQC_HOME", str(tmp_path / "plant"))
    monkeypatch.setenv("VISIONQC_MODEL", str(default_model_dir))
    monkeypatch.setenv("VISIONQC_SIGN_IN", "required")
    at = open_app()
    assert any("python -m visionqc users add NAME --role admin" in w.value for w in at.warning)
    assert [t.value for t in at.title] == ["VisionQC"] and not at.text_input


def test_a_shared_store_always_asks_for_sign_in(tmp_path, monkeypatch, default_model_dir, postgres_server):
    """A plant's PostgreSQL store is never open to whoever reaches the page, even before the first account."""
    monkeypatch.setenv("VISIONQC_HOME", str(tmp_path / "shared-mount"))
    monkeypatch.setenv("VISIONQC_MODEL", str(default_model_dir))
    monkeypatch.setenv("VISIONQC_DATABASE_URL", postgres_server.new_schema_url())
    at = open_app()
    assert any("a shared PostgreSQL store" in w.value for w in at.warning)
    assert [t.value for t in at.title] == ["VisionQC"] and not at.text_input
    Store(tmp_path / "shared-mount").add_user("lea", "lead", hash_password(PASSWORDS["lea"]))
    at = sign_in(open_app(), "lea")
    assert [t.value for t in at.title] == ["Inspect"] and reachable(at, "pages/5_Review_queue.py")
