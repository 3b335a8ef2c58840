"""Accounts: roles, password hashes, the account rows, sign-in with its lock-out, and `python -m visionqc users`."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

from visionqc import accounts
from visionqc.accounts import AccountError, can, hash_password, verify_password
from visionqc.config import PROJECT_ROOT
from visionqc.store import Store

PASSWORD = "a long enough secret"


def test_each_role_may_do_what_the_one_below_it_may_and_more():
    assert can("operator", "inspect") and can("operator", "view")
    assert not any(can("operator", a) for a in ("review", "tag", "delete", "datasets", "train", "promote", "users"))
    assert all(can("lead", a) for a in ("inspect", "review", "tag", "delete", "datasets", "train", "promote"))
    assert not can("lead", "users") and can("admin", "users") and can("admin", "review")
    assert not can(None, "view") and not can("root", "view")
    with pytest.raises(KeyError):
        can("admin", "launch")


def test_passwords_are_salted_argon2id_hashes_and_checked_in_full():
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith("$argon2id$") and first != second and PASSWORD not in first
    assert verify_password(first, PASSWORD) and verify_password(second, PASSWORD)
    assert not verify_password(first, PASSWORD + "x") and not verify_password(first, "")
    assert not verify_password(None, PASSWORD) and not verify_password("not a hash", PASSWORD)
    with pytest.raises(AccountError, match="at least 10 characters"):
        hash_password("short")


@pytest.mark.parametrize("name", ["", " ", "two words", "-dash", "x" * 65, "ana;DROP", "é"])
def test_user_names_are_plain(name):
    with pytest.raises(AccountError, match="not a valid user name"):
        accounts.check_username(name)


@pytest.fixture
def store(tmp_path, backend) -> Store:
    """An account store on each backend: the DuckDB file, then PostgreSQL (``backend`` in tests/conftest.py)."""
    store = Store(tmp_path / "home")
    store.add_user("lea", "lead", hash_password(PASSWORD), created_by="test")
    return store


def test_accounts_are_kept_without_their_passwords(store):
    assert store.has_users()
    with pytest.raises(AccountError, match="already an account named 'LEA'"):
        store.add_user("LEA", "admin", hash_password(PASSWORD))
    with pytest.raises(AccountError, match="unknown role"):
        store.add_user("max", "boss", hash_password(PASSWORD))
    store.set_role("lea", "admin")
    store.set_disabled("lea", True)
    listed = store.users()
    assert list(listed["username"]) == ["lea"] and "password_hash" not in listed.columns
    assert listed.iloc[0]["role"] == "admin" and bool(listed.iloc[0]["disabled"])
    assert not store.has_users(), "no enabled account: sign-in is off again"
    with pytest.raises(AccountError, match="no account named 'max'"):
        store.set_password("max", hash_password(PASSWORD))


def test_sign_in_checks_the_password_and_records_every_attempt(store):
    assert store.authenticate("lea", PASSWORD).role == "lead"
    wrong = store.authenticate("lea", "wrong password!")
    unknown = store.authenticate("nobody", PASSWORD)
    assert not wrong.ok and not unknown.ok
    assert wrong.message == unknown.message == "Wrong user name or password.", "never says which was wrong"
    store.set_disabled("lea", True)
    assert store.authenticate("lea", PASSWORD).message == "This account is disabled; ask an admin."
    with store.connect() as con:
        log = con.execute("SELECT username, ok, reason FROM sign_ins ORDER BY attempted_at").fetchall()
    assert log == [
        ("lea", True, None),
        ("lea", False, "wrong name or password"),
        ("nobody", False, "wrong name or password"),
        ("lea", False, "disabled"),
    ]


def test_five_failures_lock_the_account_for_a_while(store):
    for attempt in range(accounts.MAX_FAILURES):
        result = store.authenticate("lea", f"guess number {attempt}")
        assert not result.ok
    locked = store.authenticate("lea", PASSWORD)
    assert not locked.ok and "Too many failed sign-ins" in locked.message and "15 minute(s)" in locked.message
    # Once the failures are older than the window, the right password works again.
    with store.connect() as con:
        con.execute("UPDATE sign_ins SET attempted_at = attempted_at - ?", [accounts.FAILURE_WINDOW + timedelta(1)])
    assert store.authenticate("lea", PASSWORD).ok


def test_the_warning_before_the_lock_counts_down(store):
    messages = [store.authenticate("lea", "not it at all").message for _ in range(4)]
    assert messages[0] == messages[1] == "Wrong user name or password."
    assert messages[2].endswith("2 more failed attempt(s) lock the account for a while.")
    assert messages[3].endswith("1 more failed attempt(s) lock the account for a while.")


def run_cli(home, *args, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "visionqc", "users", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={"VISIONQC_HOME": str(home), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_the_command_line_manages_accounts(tmp_path):
    home = tmp_path / "home"
    added = run_cli(home, "add", "ana", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0 and "added ana (admin)" in added.stdout
    weak = run_cli(home, "add", "bo", "--role", "operator", "--password-stdin", stdin="short\n")
    assert weak.returncode != 0 and "at least 10 characters" in weak.stderr and "Traceback" not in weak.stderr
    assert run_cli(home, "disable", "ana").returncode == 0
    listed = run_cli(home, "list").stdout
    assert "ana" in listed and "disabled" in listed and "bo" not in listed
    missing = run_cli(home, "passwd", "zed", "--password-stdin", stdin=PASSWORD + "\n")
    assert missing.returncode != 0 and "no account named 'zed'" in missing.stderr
    assert Store(home).authenticate("ana", PASSWORD).message == "This account is disabled; ask an admin."
