"""The Users page (admins): the accounts, adding one, a new password, a role, disabling and enabling."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from visionqc.accounts import MIN_PASSWORD_LENGTH, ROLES, AccountError, hash_password
from visionqc.labels import NO_VALUE
from visionqc.store import StoreError
from visionqc.ui import auth
from visionqc.ui.corrections import flash, show_message
from visionqc.ui.text import literal

GROUP = "users"


def require_admin() -> None:
    """Stop the page unless the session may manage accounts (the page is not registered for others either)."""
    if not auth.allowed("users"):
        st.error(auth.refusal("users"), icon=":material/lock:")
        st.stop()


def render_accounts(store) -> list[str]:
    """The accounts as a table; returns their names."""
    show_message(GROUP)
    users = store.users()
    if users.empty:
        st.info("No accounts yet: sign-in is off. Add the first one (an admin) below.", icon=":material/info:")
        return []
    users = users.copy()
    for column in ("created_at", "password_changed_at", "last_sign_in"):
        users[column] = [NO_VALUE if pd.isna(t) else f"{t:%Y-%m-%d %H:%M}" for t in users[column]]
    users["created_by"] = users["created_by"].fillna(NO_VALUE)
    table = users.rename(
        columns={
            "username": "User",
            "role": "Role",
            "disabled": "Disabled",
            "created_at": "Added (UTC)",
            "created_by": "Added by",
            "password_changed_at": "Password set (UTC)",
            "last_sign_in": "Last sign-in (UTC)",
        }
    )
    st.dataframe(table, hide_index=True, width="stretch")
    return list(users["username"])


def names_exist(store) -> bool:
    return not store.users().empty


def _act(store, what: str) -> None:
    state = st.session_state
    if not auth.allowed("users"):  # checked when the click arrives
        flash(GROUP, "error", auth.refusal("users"))
        return
    field = "disable" if what == "enable" else what
    name = (state.get(f"users_{field}_name") or "").strip()
    try:
        if what == "add":
            if not names_exist(store) and state["users_add_role"] != "admin":
                raise AccountError("the first account must be an admin, who can then add the others")
            store.add_user(
                name,
                state["users_add_role"],
                hash_password(state.get("users_add_password") or ""),
                created_by=auth.signed_in_name(),
            )
            done = f"Added {literal(name)} ({state['users_add_role']})."
        elif what == "password":
            store.set_password(name, hash_password(state.get("users_password_password") or ""))
            done = f"New password set for {literal(name)}."
        elif what == "role":
            if name == auth.signed_in_name() and state["users_role_role"] != "admin":
                raise AccountError("you cannot take the admin role from yourself; another admin can")
            store.set_role(name, state["users_role_role"])
            done = f"{literal(name)} is now {state['users_role_role']}."
        else:
            disable = what == "disable"
            if disable and name == auth.signed_in_name():
                raise AccountError("you cannot disable your own account")
            store.set_disabled(name, disable)
            done = f"{literal(name)} is {'disabled' if disable else 'enabled'}."
    except (AccountError, StoreError) as exc:
        flash(GROUP, "error", f"Not changed: {exc}")
        return
    for field in ("add_password", "password_password"):
        state.pop(f"users_{field}", None)
    flash(GROUP, "success", done)


def render_forms(store, names: list[str]) -> None:
    add, change = st.columns(2, border=True)
    with add:
        st.markdown("**Add an account**")
        st.text_input("User name", key="users_add_name")
        st.selectbox("Role", ROLES, key="users_add_role")
        st.text_input(
            "Password", type="password", key="users_add_password", help=f"At least {MIN_PASSWORD_LENGTH} characters."
        )
        st.button("Add", key="users_add_btn", on_click=_act, args=(store, "add"), type="primary")
    if not names:
        return
    with change:
        st.markdown("**Change an account**")
        st.selectbox("Account", names, key="users_password_name")
        st.text_input("New password", type="password", key="users_password_password")
        st.button("Set password", key="users_password_btn", on_click=_act, args=(store, "password"))
        st.divider()
        st.selectbox("Account", names, key="users_role_name")
        st.selectbox("New role", ROLES, key="users_role_role")
        st.button("Change role", key="users_role_btn", on_click=_act, args=(store, "role"))
        st.divider()
        st.selectbox("Account", names, key="users_disable_name")
        with st.container(horizontal=True):
            st.button("Disable", key="users_disable_btn", on_click=_act, args=(store, "disable"))
            st.button("Enable", key="users_enable_btn", on_click=_act, args=(store, "enable"))
