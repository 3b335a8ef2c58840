"""Accounts and roles: who may do what, password hashing, and the sign-in rules (lock-out, session expiry).

Three roles, each allowed what the one before it may do and more:

- **operator**: inspect and view (Inspect, History, Dashboard, Explore);
- **lead**: also review, tag, mark unusable, delete and restore, build datasets, train, compare, promote, re-inspect;
- **admin**: also manage accounts.

Sign-in is off by default (one QC lead on a laptop types a name in the sidebar). It is on as soon as an account
exists in the data folder (``python -m visionqc users add``), always on a shared PostgreSQL store, and
``VISIONQC_SIGN_IN=required`` makes it mandatory even before the first account (the app then says how to create
the first admin). Passwords are hashed with Argon2id (``argon2-cffi``: the algorithm OWASP recommends, salted,
slow on purpose); nothing leaves the machine.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

ROLES = ("operator", "lead", "admin")

# The least role each action needs. Pages and their actions check these on the server (visionqc.ui.auth).
PERMISSIONS = {
    "view": "operator",
    "inspect": "operator",
    "review": "lead",
    "tag": "lead",
    "delete": "lead",
    "datasets": "lead",
    "train": "lead",
    "promote": "lead",
    "reinspect": "lead",
    "users": "admin",
}

# Lock-out: this many failed sign-ins for one account within the window lock it until the window has passed.
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 10

_HASHER = PasswordHasher()  # Argon2id with the library's defaults (RFC 9106 low-memory profile)
# Verified when the account does not exist, so a wrong name takes as long as a wrong password.
_DUMMY_HASH = _HASHER.hash("not a password of anyone")
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class AccountError(ValueError):
    """An account request the user can fix (bad name, weak password, unknown role); ``str(err)`` says what."""


def can(role: str | None, action: str) -> bool:
    """Whether ``role`` may do ``action`` (one of :data:`PERMISSIONS`)."""
    if action not in PERMISSIONS:
        raise KeyError(f"unknown action {action!r}")
    return role in ROLES and ROLES.index(role) >= ROLES.index(PERMISSIONS[action])


def check_username(name: str) -> str:
    name = (name or "").strip()
    if not _USERNAME.match(name):
        raise AccountError(
            f"{name!r} is not a valid user name: 1-64 letters, digits, dots, dashes, underscores or @, "
            "starting with a letter or digit"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    return role


def hash_password(password: str) -> str:
    """The Argon2id hash of ``password`` after checking it is long enough."""
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash`` (``None``: no such account; still takes the same time)."""
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password or "") and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def session_idle_limit() -> timedelta:
    """How long a signed-in session may stay idle before it must sign in again (``VISIONQC_SESSION_MINUTES``,
    default 60)."""
    try:
        minutes = float(os.environ.get("VISIONQC_SESSION_MINUTES", "60"))
    except ValueError:
        minutes = 60.0
    return timedelta(minutes=max(minutes, 0.05))


def sign_in_forced() -> bool:
    """``VISIONQC_SIGN_IN=required``: sign-in even before any account exists."""
    return os.environ.get("VISIONQC_SIGN_IN", "").strip().lower() == "required"
