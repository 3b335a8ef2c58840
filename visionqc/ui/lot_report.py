"""The "Download lot report (PDF)" button of Inspect (one batch) and History (the filtered set)."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from visionqc.filters import InspectionFilter
from visionqc.reporting.lot_report import lot_report_data, lot_report_pdf

HELP = (
    "A printable PDF: batch, station, operator, lot, model, times with their zone, counts by action, every "
    "Reject and Hold with its picture, labels and confidences, who reviewed it, and a sign-off line."
)


def download_button(
    store, f: InspectionFilter, *, key: str, disabled: bool = False, timezone: str = "UTC", name: str = "selection"
) -> None:
    """A download button whose PDF is made only when pressed; times are printed in ``timezone`` (the browser's)."""

    def pdf() -> bytes:
        return lot_report_pdf(lot_report_data(store, replace(f, timezone=timezone)))

    st.download_button(
        "Download lot report (PDF)",
        data=pdf,
        file_name=f"visionqc-lot-report-{name}.pdf",
        mime="application/pdf",
        icon=":material/picture_as_pdf:",
        on_click="ignore",
        disabled=disabled,
        key=key,
        help=HELP,
    )
