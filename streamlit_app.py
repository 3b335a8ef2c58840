"""VisionQC entry point: `streamlit run streamlit_app.py`.

Every file in pages/ becomes a page, in file-name order ("1_Inspect.py" -> "Inspect"); the sidebar
shows the active model and the data folder on every page.
"""

from pathlib import Path

import streamlit as st

from visionqc import app_state

st.set_page_config(page_title="VisionQC", page_icon=":material/fact_check:", layout="wide")

pages = [
    st.Page(spec.path, title=spec.title, icon=spec.icon, url_path=spec.url_path) for spec in app_state.page_specs()
]
if not pages:
    st.error(f"No pages found in {Path(__file__).parent / 'pages'}.")
    st.stop()

current = st.navigation(pages)
app_state.render_sidebar()
current.run()
