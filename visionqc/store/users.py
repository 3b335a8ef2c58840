"""Accounts in the store: users with a role and a password hash, and the log of sign-in attempts.

The rules (roles, hashing, lock-out) are :mod:`visionqc.accounts`; this module only keeps the rows. Each
change is one short transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from visionqc.accounts import (
    FAILURE_WINDOW,
    MAX_FAILURES,
    AccountError,
    check_role,
    check_username,
    verify_password,
)
from visionqc.store.records import utc_now

USER_COLUMNS = ("username", "role", "password_hash", "disabled", "created_at", "created_by", "password_changed_at")


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in attempt: the account (without its hash) when it succeeded, else why not."""

    ok: bool
    username: str
    role: str | None = None
    message: str = ""


class UsersMixin:
    """The accounts part of :class:`~visionqc.store.Store` (needs ``connect`` and ``_write``)."""

    def add_user(self, username: str, role: str, password_hash: str, *, created_by: str | None = None) -> None:
        """A new account; :class:`~visionqc.accounts.AccountError` when the name is taken or invalid."""
        username, role = check_username(username), check_role(role)

        def work(con) -> None:
            taken = con.execute("SELECT count(*) FROM users WHERE lower(username) = lower(?)", [username]).fetchone()
            if taken[0]:
                raise AccountError(f"there is already an account named {username!r}")
            now = utc_now()
            con.execute(
                "INSERT INTO users (username, role, password_hash, disabled, created_at, created_by, "
                "password_changed_at) VALUES (?, ?, ?, false, ?, ?, ?)",
                [username, role, password_hash, now, created_by, now],
            )

        self._write(work)

    def _update_user(self, username: str, assignments: str, values: list[Any]) -> None:
        def work(con) -> None:
            found = con.execute(
                f"UPDATE users SET {assignments} WHERE username = ? RETURNING username", [*values, username]
            ).fetchall()
            if not found:
                raise AccountError(f"there is no account named {username!r}")

        self._write(work)

    def set_password(self, username: str, password_hash: str) -> None:
        self._update_user(username, "password_hash = ?, password_changed_at = ?", [password_hash, utc_now()])

    def set_role(self, username: str, role: str) -> None:
        self._update_user(username, "role = ?", [check_role(role)])

    def set_disabled(self, username: str, disabled: bool) -> None:
        self._update_user(username, "disabled = ?", [bool(disabled)])

    def user(self, username: str) -> dict[str, Any] | None:
        """The account (``username``, ``role``, ``password_hash``, ``disabled``, ...) or ``None``."""
        with self.connect() as con:
            row = con.execute(f"SELECT {', '.join(USER_COLUMNS)} FROM users WHERE username = ?", [username]).fetchone()
        return None if row is None else dict(zip(USER_COLUMNS, row, strict=True))

    def users(self) -> pd.DataFrame:
        """Every account without its hash, with its last successful sign-in."""
        with self.connect() as con:
            return con.execute(
                """SELECT u.username, u.role, u.disabled, u.created_at, u.created_by, u.password_changed_at,
                    (SELECT max(attempted_at) FROM sign_ins s WHERE s.username = u.username AND s.ok) AS last_sign_in
                FROM users u ORDER BY u.username"""
            ).df()

    def has_users(self) -> bool:
        """Whether any account is enabled (sign-in is then required)."""
        with self.connect() as con:
            return bool(con.execute("SELECT count(*) FROM users WHERE NOT disabled").fetchone()[0])

    def record_sign_in(self, username: str, ok: bool, reason: str | None = None) -> None:
        self._write(
            lambda con: con.execute(
                "INSERT INTO sign_ins (attempted_at, username, ok, reason) VALUES (?, ?, ?, ?)",
                [utc_now(), username[:64], ok, reason],
            )
        )

    def failed_sign_ins(self, username: str, since: datetime) -> list[datetime]:
        """When ``username``'s failed sign-ins since ``since`` (naive UTC) happened, oldest first. A success
        in between clears the earlier ones; attempts refused while locked do not count (they would keep the
        account locked for as long as someone keeps trying)."""
        with self.connect() as con:
            rows = con.execute(
                """SELECT attempted_at FROM sign_ins WHERE username = ? AND NOT ok AND attempted_at >= ?
                  AND coalesce(reason, '') <> 'locked'
                  AND attempted_at > coalesce(
                      (SELECT max(attempted_at) FROM sign_ins WHERE username = ? AND ok), TIMESTAMP '1970-01-01')
                ORDER BY attempted_at""",
                [username, since, username],
            ).fetchall()
        return [r[0] for r in rows]

    def authenticate(self, username: str, password: str) -> SignIn:
        """Check a sign-in and record it. Refused without looking at the password while the account has had
        :data:`~visionqc.accounts.MAX_FAILURES` failures within :data:`~visionqc.accounts.FAILURE_WINDOW`.
        The message never says whether the name or the password was wrong."""
        name = (username or "").strip()[:64]
        now = utc_now()
        failures = self.failed_sign_ins(name, now - FAILURE_WINDOW)
        if len(failures) >= MAX_FAILURES:
            self.record_sign_in(name, False, "locked")
            wait = max(1, int((failures[-MAX_FAILURES] + FAILURE_WINDOW - now).total_seconds() // 60) + 1)
            return SignIn(
                False,
                name,
                message=f"Too many failed sign-ins for this account: try again in {wait} minute(s), "
                "or ask an admin to set a new password.",
            )
        account = self.user(name) if name else None
        if not verify_password(account["password_hash"] if account else None, password):
            self.record_sign_in(name, False, "wrong name or password")
            left = MAX_FAILURES - len(failures) - 1
            warning = f" {left} more failed attempt(s) lock the account for a while." if 0 < left < 3 else ""
            return SignIn(False, name, message="Wrong user name or password." + warning)
        if account["disabled"]:
            self.record_sign_in(name, False, "disabled")
            return SignIn(False, name, message="This account is disabled; ask an admin.")
        self.record_sign_in(name, True)
        return SignIn(True, account["username"], account["role"])
