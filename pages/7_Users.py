"""Users (admins only): the accounts people sign in with, and their roles."""

import streamlit as st

from visionqc.ui import pages, resources, users_view

pages.through_the_app(__file__)  # nothing of a page runs outside the app's navigation

st.title("Users")
users_view.require_admin()
st.caption(
    "Roles: **operator** inspects and views; **lead** also reviews, tags, deletes, builds datasets, trains and "
    "promotes models; **admin** also manages accounts. The same from a terminal: `python -m visionqc users`."
)
store = resources.get_store()
names = users_view.render_accounts(store)
users_view.render_forms(store, names)
