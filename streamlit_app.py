"""VisionQC entry point: `streamlit run streamlit_app.py`.

Every file in pages/ becomes a page, in file-name order ("1_Inspect.py" -> "Inspect"); the sidebar
shows the active model and the data folder on every page.
"""

from pathlib import Path

import streamlit as st

from visionqc.ui import errors, pages, sidebar

# The icon is a file of ours: a Material icon name would make the browser fetch it from the internet.
st.set_page_config(page_title="VisionQC", page_icon=str(Path(__file__).parent / "assets" / "icon.png"), layout="wide")

registered = [
    st.Page(spec.path, title=spec.title, icon=spec.icon, url_path=spec.url_path) for spec in pages.page_specs()
]
if not registered:
    st.error(f"No pages found in {Path(__file__).parent / 'pages'}.")
    st.stop()

current = st.navigation(registered)
sidebar.render_sidebar()
with errors.page_boundary():  # a busy, damaged, read-only or full data folder: a message, not a stack trace
    current.run()
