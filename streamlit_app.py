"""VisionQC entry point: `streamlit run streamlit_app.py`.

Every file in pages/ becomes a page, in file-name order ("1_Inspect.py" -> "Inspect"); the sidebar
shows the active model and the data folder on every page.
"""

from pathlib import Path

import streamlit as st

from visionqc.ui import auth, errors, pages, sidebar

# The icon is a file of ours: a Material icon name would make the browser fetch it from the internet.
st.set_page_config(page_title="VisionQC", page_icon=str(Path(__file__).parent / "assets" / "icon.png"), layout="wide")

# Sign-in when it is on (visionqc.ui.auth): until the user is signed in, the sign-in form is the app's only
# page. A store that cannot be opened cannot say who may come in: then no page runs, and the reason is shown.
access = auth.gate_or_error()
if access == auth.SIGN_IN:
    st.navigation(auth.sign_in_pages(pages.page_specs()), position="hidden").run()
    st.stop()
store_error = access

# Only the pages the signed-in role may open are registered: the others' addresses do not exist for it.
registered = [
    st.Page(spec.path, title=spec.title, icon=spec.icon, url_path=spec.url_path)
    for spec in pages.page_specs()
    if store_error or auth.may_open(spec.url_path)
]
if not registered:
    st.error(f"No pages found in {Path(__file__).parent / 'pages'}.")
    st.stop()

current = st.navigation(registered)
if (wanted := pages.asked_for(registered)) is not None and wanted.url_path != current.url_path:
    st.switch_page(wanted)  # the page a bookmark named before the server had run this script
sidebar.render_sidebar()
if store_error is not None:
    errors.show_store_error(store_error)
    st.stop()
with errors.page_boundary(), pages.entered():  # a busy, damaged, read-only or full data folder: a message
    current.run()
