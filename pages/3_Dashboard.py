"""Dashboard: how are we doing, what is getting worse, where, and what did we do about it.

Numbers come from visionqc.store.analytics (one DuckDB query per filter state), charts and words from
visionqc.reporting. Clicking a bar or slice sets a cross-filter kept in session state.
"""

from functools import partial
from zoneinfo import available_timezones

import streamlit as st

from visionqc.filters import PERIODS, InspectionFilter, Period
from visionqc.labels import stored_all
from visionqc.reporting import charts, dashboard, exports
from visionqc.store import analytics
from visionqc.ui import pages, resources
from visionqc.ui.filters import hand_off

pages.through_the_app(__file__)  # nothing of a page runs outside the app's navigation

CROSS_KEY = "dashboard_cross"  # {dimension: [values]} picked on the charts
GENERATION_KEY = "dashboard_chart_generation"  # bumped on "clear" so the charts forget their selection


def go_to_page(path: str, label: str, icon: str) -> None:
    """A link to another page; plain text when the page is not registered (the page run on its own)."""
    try:
        st.page_link(path, label=label, icon=icon)
    except st.errors.StreamlitAPIException:
        st.markdown(f"**{label}** in the sidebar.")


st.title("Dashboard")
store = resources.get_store()
st.session_state.setdefault(CROSS_KEY, {})
st.session_state.setdefault(GENERATION_KEY, 0)

if store.count() == 0:
    st.info("Nothing has been inspected yet. Classify a batch of photos on the **Inspect** page and come back here.")
    go_to_page("pages/1_Inspect.py", "Go to Inspect", ":material/photo_camera:")
    st.stop()

# --- filters ------------------------------------------------------------------------------------
options = analytics.filter_options(store)
period = st.segmented_control(
    "Period",
    list(PERIODS),
    format_func=lambda p: PERIODS[p][0],
    default="30d",
    key="dashboard_period",
)
period = period or "30d"
start = end = None
if period == "custom":
    picked = st.date_input("Days", value=(), key="dashboard_custom_days")
    if len(picked) == 2:
        start, end = picked
    elif len(picked) == 1:
        start = end = picked[0]
scope, zone = st.columns([3, 1])
with scope:
    models_col, stations_col, operators_col = st.columns(3)
    models = models_col.multiselect("Models", options["models"], placeholder="All models", key="dashboard_models")
    stations = stations_col.multiselect(
        "Stations", options["stations"], placeholder="All stations", key="dashboard_stations"
    )
    operators = operators_col.multiselect(
        "Operators", options["operators"], placeholder="All operators", key="dashboard_operators"
    )
with zone:
    zones = sorted(available_timezones() | {analytics.configured_timezone()})
    time_zone = st.selectbox(
        "Time zone (day boundary)", zones, index=zones.index(analytics.configured_timezone()), key="dashboard_tz"
    )
    include_no_defect = st.toggle("Include “no defect”", key="dashboard_include_no_defect")

dashboard_filter = InspectionFilter(
    timezone=time_zone, model_names=tuple(models), stations=tuple(stations), operators=tuple(operators)
)
for dimension, values in st.session_state[CROSS_KEY].items():
    dashboard_filter = dashboard_filter.with_labels(dimension, stored_all(values))
data = analytics.dashboard_data(
    store, dashboard_filter, Period(period, start, end), include_no_defect=include_no_defect
)


def clear_cross_filters() -> None:
    st.session_state[CROSS_KEY] = {}
    st.session_state[GENERATION_KEY] += 1


def apply_selection(chart_key: str, dimension: str) -> None:
    state = st.session_state.get(chart_key) or {}
    selection = (state.get("selection") or {}).get(charts.selection_name(dimension))
    st.session_state[CROSS_KEY] = {
        **st.session_state[CROSS_KEY],
        dimension: charts.selection_values(selection, dimension),
    }


st.caption(" · ".join(data.describe()))
with st.container(horizontal=True):
    st.button(
        "Clear chart filters",
        on_click=clear_cross_filters,
        disabled=not data.picks,
        icon=":material/filter_alt_off:",
    )
    if st.button("Open in History", icon=":material/history:", help="The same filters on the History page."):
        hand_off(st.session_state, data.history_filter())
        st.switch_page("pages/2_History.py")
    st.download_button(
        "Download report",
        data=partial(exports.report_zip, data),
        file_name=exports.report_file_name(data, "zip"),
        mime="application/zip",
        on_click="ignore",
        icon=":material/download:",
        type="primary",
        disabled=data.empty,
        help="A zip with every chart as PNG and CSV and an HTML page naming the filters and time range.",
    )

if data.empty:
    st.warning("No inspections match these filters. Widen the period or clear the model, station or chart filters.")

# --- KPIs ---------------------------------------------------------------------------------------
cards = dashboard.kpi_cards(data.kpis)
for row in (cards[:4], cards[4:]):  # two rows: labels and deltas stay readable on a laptop screen
    for column, card in zip(st.columns(4), row, strict=False):
        column.metric(border=True, **card)

# --- charts -------------------------------------------------------------------------------------
generation = st.session_state[GENERATION_KEY]
chart_sections = dashboard.sections(data)
for row in range(0, len(chart_sections), 2):
    for column, section in zip(st.columns(2), chart_sections[row : row + 2], strict=False):
        with column, st.container(border=True):
            key = f"dashboard_chart_{section.key}_{generation}"
            if section.dimension:
                st.altair_chart(
                    section.chart,
                    key=key,
                    on_select=partial(apply_selection, key, section.dimension),
                    selection_mode=charts.selection_name(section.dimension),
                )
            else:
                st.altair_chart(section.chart, key=key)
            with st.container(horizontal=True):
                st.download_button(
                    "PNG",
                    data=partial(exports.section_png, data, section.key),
                    file_name=f"{section.key}.png",
                    mime="image/png",
                    on_click="ignore",
                    icon=":material/image:",
                    key=f"png_{section.key}",
                    help="The chart at print resolution, with the filters written under its title.",
                )
                st.download_button(
                    "CSV",
                    data=exports.frame_csv(section.frame, timezone=time_zone),
                    file_name=f"{section.key}.csv",
                    mime="text/csv",
                    on_click="ignore",
                    icon=":material/table:",
                    key=f"csv_{section.key}",
                    help="The numbers behind the chart.",
                )
