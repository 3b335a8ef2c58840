"""History: find any past inspection, review and tag many at once, export the filtered set as CSV or a PDF report."""

import streamlit as st

from visionqc.ui import history, lot_report, pages, resources, results
from visionqc.ui.corrections import show_message
from visionqc.ui.filters import history_filters

pages.through_the_app(__file__)  # nothing of a page runs outside the app's navigation

st.title("History")
store = resources.get_store()
card = resources.active_card()
timezone = resources.browser_timezone()

with st.expander("Filters", expanded=True, icon=":material/filter_alt:"):
    flt = history_filters(store, card, key="history", timezone=timezone, deleted_choice=True)

sort_col, order_col, size_col, page_col = st.columns([2, 1, 1, 1])
sort = sort_col.selectbox(
    "Sort by", list(history.SORT_CHOICES), key="history_sort", help="Sorts the whole result, not only this page."
)
descending = order_col.radio("Order", ["Descending", "Ascending"], horizontal=True, key="history_order")
page_size = size_col.selectbox("Rows per page", [25, 50, 100, 200], index=1, key="history_page_size")
total = store.count(flt)
pages = max(1, -(-total // page_size))
history.keep_page_in_range("history_page", pages, (flt, sort, descending, page_size))
page = page_col.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1, key="history_page")
page = min(int(page), pages)

rows, total = store.search(
    flt, sort=history.SORT_CHOICES[sort], descending=descending == "Descending", page=page - 1, page_size=page_size
)
first = (page - 1) * page_size + 1 if total else 0
st.markdown(
    f"**{total:,} inspection{' matches' if total == 1 else 's match'}** · "
    f"showing {first:,}–{first + len(rows) - 1 if total else 0:,}"
)
view = results.choose_view("history")
selected = results.render_results(
    store, rows, card, key=history.HISTORY_TABLE, view=view, timezone=timezone, history=True, multi=True
)

with st.container(horizontal=True):
    st.download_button(
        f"Download all {total:,} matching inspections as CSV",
        data=lambda: store.export_csv(flt, sort=history.SORT_CHOICES[sort], descending=descending == "Descending"),
        file_name="visionqc-history.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        disabled=total == 0,
        key="history_csv",
    )
    lot_report.download_button(store, flt, key="history_pdf", disabled=total == 0, timezone=timezone)

show_message("history_bulk")  # e.g. "Deleted 3 inspection(s)", shown even once the rows are gone
if not selected:
    st.caption(
        "Tick rows (the boxes at the left of the table, or “Select” on a picture) to tag, review, mark unusable "
        "or delete them. Click any cell of a row to see the image."
    )
    st.stop()
history.render_bulk_actions(store, rows, selected, key="history_bulk", deleted=flt.deleted == "only")
