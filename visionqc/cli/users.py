"""``users add|passwd|role|disable|enable|list``: the accounts people sign in to the app with.

Whoever can run this on the server can read the data folder anyway, so the command line needs no sign-in.
Passwords are asked twice without echo (or read from standard input with ``--password-stdin``, for scripts);
they are never an argument, which would leave them in the shell history and the process list.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from visionqc import config
from visionqc.cli.common import EXIT_OK


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"New password for {args.name}: ")
    if first != getpass.getpass("The same again: "):
        raise ValueError("the two passwords differ; nothing was changed")
    return first


def _store():
    from visionqc.store import Store

    return Store(config.data_dir())


def cmd_add(args: argparse.Namespace) -> int:
    from visionqc.accounts import check_role, check_username, hash_password

    name, role = check_username(args.name), check_role(args.role)
    store = _store()
    store.add_user(name, role, hash_password(_password(args)), created_by="command line")
    print(f"added {name} ({role}); sign-in is now required in the app for {store.home}")
    return EXIT_OK


def cmd_passwd(args: argparse.Namespace) -> int:
    from visionqc.accounts import hash_password

    store = _store()
    if store.user(args.name) is None:
        raise ValueError(f"there is no account named {args.name!r}")
    store.set_password(args.name, hash_password(_password(args)))
    print(f"new password set for {args.name}")
    return EXIT_OK


def cmd_role(args: argparse.Namespace) -> int:
    _store().set_role(args.name, args.role)
    print(f"{args.name} is now {args.role} (from the next click in an open session)")
    return EXIT_OK


def _set_disabled(name: str, disabled: bool) -> int:
    _store().set_disabled(name, disabled)
    print(f"{name} is {'disabled (signed out at the next click)' if disabled else 'enabled'}")
    return EXIT_OK


def cmd_disable(args: argparse.Namespace) -> int:
    return _set_disabled(args.name, True)


def cmd_enable(args: argparse.Namespace) -> int:
    return _set_disabled(args.name, False)


def cmd_list(args: argparse.Namespace) -> int:
    import pandas as pd

    users = _store().users()
    if users.empty:
        print("no accounts: sign-in is off (add one with `python -m visionqc users add NAME --role admin`)")
        return EXIT_OK
    for row in users.itertuples():
        last = "never" if pd.isna(row.last_sign_in) else f"{row.last_sign_in:%Y-%m-%d %H:%M} UTC"
        state = "disabled" if row.disabled else "enabled"
        print(f"{row.username:<24} {row.role:<9} {state:<9} last sign-in: {last}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    from visionqc.accounts import ROLES

    p = sub.add_parser(
        "users",
        help="manage the accounts of the app's sign-in (add, passwd, role, disable, enable, list)",
        description="Accounts for signing in to the app. As soon as one account exists in the data folder "
        "(VISIONQC_HOME), the app asks everyone to sign in. Roles: operator (inspect, view), lead (also review, "
        "tag, delete, datasets, training, promote), admin (also accounts).",
    )
    users = p.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    for name, func, text in (
        ("add", cmd_add, "add an account"),
        ("passwd", cmd_passwd, "set a new password"),
        ("role", cmd_role, "change an account's role"),
        ("disable", cmd_disable, "stop an account from signing in (its records keep its name)"),
        ("enable", cmd_enable, "let a disabled account sign in again"),
    ):
        q = users.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        q.add_argument("name", help="the user name")
        if name in ("add", "role"):
            q.add_argument("--role", choices=ROLES, required=True)
        if name in ("add", "passwd"):
            q.add_argument(
                "--password-stdin", action="store_true", help="read the password from the first line of stdin"
            )
        q.set_defaults(func=func)
    q = users.add_parser("list", help="list the accounts", description="List the accounts.")
    q.set_defaults(func=cmd_list)
