"""The printable lot report: one batch (or any filtered set of inspections) as a PDF a QC lead signs.

Header (batch, station, operator, part number, lot, model and version, inspection times with their zone),
counts by action with the unusable photos counted apart, then every Reject and Hold with its thumbnail,
labels, the model's confidences and who reviewed it, and a sign-off line. Written with fpdf2; text in DejaVu
Sans when the system has it (any file name prints), else in the PDF core font with what Latin-1 cannot say
replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
from fpdf import FPDF

from visionqc.actions import ACTIONS
from visionqc.filters import InspectionFilter
from visionqc.labels import order_actions, shown
from visionqc.reporting import palette
from visionqc.safetext import printable

LISTED_ACTIONS = ("Reject", "Hold")
MAX_LISTED = 2_000  # a lot report lists every Reject and Hold; past this, a filtered History set is not a lot
FONT_FILES = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/TTF/DejaVuSans.ttf"),
)
THUMB_MM = 11.0


@dataclass
class LotReport:
    """Everything the PDF shows; built by :func:`lot_report_data`, drawn by :func:`lot_report_pdf`."""

    title: str
    summary: dict[str, Any]
    listed: pd.DataFrame  # the Reject and Hold rows (Store.search columns), in inspection order
    timezone: str
    generated_at: datetime
    scope: list[str] = field(default_factory=list)  # the filter in words, for a History set

    def header_rows(self) -> list[tuple[str, str]]:
        s = self.summary

        def joined(key: str) -> str:
            return ", ".join(map(str, s.get(key) or [])) or "—"

        return [
            ("Batch", joined("batches")),
            ("Station", joined("stations")),
            ("Operator", joined("operators")),
            ("Part number", joined("part_numbers")),
            ("Lot", joined("lots")),
            ("Model and version", joined("models")),
            ("Inspected", self._span()),
            ("Report made", self._time(self.generated_at)),
        ]

    def _time(self, value: datetime | None) -> str:
        if value is None or pd.isna(value):
            return "—"
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        local = aware.astimezone(ZoneInfo(self.timezone))
        offset = f"{local:%z}"
        return f"{local:%Y-%m-%d %H:%M} {self.timezone} (UTC{offset[:3]}:{offset[3:]})"

    def _span(self) -> str:
        first, last = self.summary.get("first_at"), self.summary.get("last_at")
        if first is None or pd.isna(first):
            return "—"
        return self._time(first) if first == last else f"{self._time(first)} to {self._time(last)}"

    def action_rows(self) -> list[tuple[str, int, str]]:
        """(action, count, share of the usable inspections), every action, in reading order."""
        by_action = self.summary.get("by_action") or {}
        total = sum(by_action.values())
        return [
            (a, by_action.get(a, 0), f"{by_action.get(a, 0) / total:.1%}" if total else "—")
            for a in order_actions([*ACTIONS, *by_action])
        ]


def lot_report_data(
    store, f: InspectionFilter, *, title: str | None = None, scope: list[str] | None = None
) -> LotReport:
    """Gather a report for the inspections of ``f`` (``f.timezone`` is the zone times are printed in)."""
    summary = store.report_summary(f)
    listed_filter = replace(f, actions=LISTED_ACTIONS, unusable=False)
    listed, _ = store.search(listed_filter, sort="inspection_id", descending=False, page_size=MAX_LISTED)
    rank = {a: i for i, a in enumerate(LISTED_ACTIONS)}  # rejects first, then holds, each in inspection order
    listed = listed.sort_values(["action", "inspection_id"], key=lambda c: c.map(rank) if c.name == "action" else c)
    batches = summary.get("batches") or []
    if title is None:
        title = f"Lot report: batch {batches[0]}" if len(batches) == 1 else "Lot report: selected inspections"
    return LotReport(title, summary, listed, f.timezone, datetime.now(UTC), scope or [])


def batch_report_data(store, batch_id: str, timezone: str = "UTC") -> LotReport:
    if store.batch(batch_id) is None:
        raise ValueError(f"there is no batch {batch_id!r}")
    return lot_report_data(store, InspectionFilter(batches=(batch_id,), timezone=timezone))


def report_file_name(report: LotReport) -> str:
    batches = report.summary.get("batches") or []
    stem = batches[0] if len(batches) == 1 else f"{report.generated_at:%Y%m%d-%H%M}"
    return f"visionqc-lot-report-{stem}.pdf"


class _Pdf(FPDF):
    def __init__(self, report: LotReport):
        super().__init__(orientation="P", unit="mm", format="A4")
        self.report = report
        self.set_margins(15, 15, 15)
        self.set_auto_page_break(auto=True, margin=18)
        font = next((p for p in FONT_FILES if p.is_file()), None)
        if font is not None:
            self.add_font("Body", "", str(font))
            bold = font.with_name("DejaVuSans-Bold.ttf")
            self.add_font("Body", "B", str(bold if bold.is_file() else font))
            self.family, self.unicode_text = "Body", True
        else:
            self.family, self.unicode_text = "helvetica", False

    def text_of(self, value: Any) -> str:
        """Text as the PDF prints it: control characters removed (file names and notes are user input)."""
        text = printable(shown(value) if not isinstance(value, str) else value)
        return text if self.unicode_text else text.encode("latin-1", "replace").decode("latin-1")

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self.family, "", 8)
        self.set_text_color(110)
        self.cell(0, 5, self.text_of(f"{self.report.title} · page {self.page_no()}/{{nb}}"), align="C")
        self.set_text_color(0)


def _cell_text(pdf: _Pdf, text: str, width: float) -> str:
    """``text`` cut with "…" to fit ``width`` mm in the current font."""
    text = pdf.text_of(text)
    if pdf.get_string_width(text) <= width - 1:
        return text
    ellipsis = "…" if pdf.unicode_text else "..."
    while text and pdf.get_string_width(text + ellipsis) > width - 1:
        text = text[:-1]
    return text + ellipsis


def _header(pdf: _Pdf, report: LotReport) -> None:
    pdf.set_font(pdf.family, "B", 16)
    pdf.cell(0, 9, pdf.text_of(report.title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(pdf.family, "", 10)
    for label, value in report.header_rows():
        pdf.set_font(pdf.family, "B", 10)
        pdf.cell(38, 6, pdf.text_of(label))
        pdf.set_font(pdf.family, "", 10)
        pdf.multi_cell(0, 6, pdf.text_of(value), new_x="LMARGIN", new_y="NEXT", align="L")
    for line in report.scope:
        pdf.set_font(pdf.family, "", 9)
        pdf.multi_cell(0, 5, pdf.text_of(line), new_x="LMARGIN", new_y="NEXT", align="L")
    pdf.ln(3)


def _counts(pdf: _Pdf, report: LotReport) -> None:
    s = report.summary
    pdf.set_font(pdf.family, "B", 12)
    pdf.cell(0, 8, pdf.text_of(f"Results: {s['inspected']:,} parts inspected"), new_x="LMARGIN", new_y="NEXT")
    widths = (40, 25, 30)
    pdf.set_font(pdf.family, "B", 10)
    for text, width in zip(("Action", "Images", "Share"), widths, strict=True):
        pdf.cell(width, 7, text, border="B")
    pdf.ln()
    pdf.set_font(pdf.family, "", 10)
    for action, count, share in report.action_rows():
        red, green, blue = _rgb(palette.action_color(action))
        pdf.set_fill_color(red, green, blue)
        pdf.cell(3, 6, "", fill=True)
        pdf.cell(widths[0] - 3, 6, pdf.text_of(f" {action}"))
        pdf.cell(widths[1], 6, f"{count:,}", align="R")
        pdf.cell(widths[2], 6, share, align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    notes = [
        f"Unusable photos (not a part, blurred, empty …; in no count above): {s['unusable']:,}",
        f"Reviewed by a person: {s['reviewed']:,} · still waiting for review: {s['open_reviews']:,}",
    ]
    for line in notes:
        pdf.multi_cell(0, 6, pdf.text_of(line), new_x="LMARGIN", new_y="NEXT", align="L")
    pdf.ln(3)


# Widths in mm; together the 180 mm between the margins of an A4 page.
LIST_COLUMNS = (("", THUMB_MM + 3), ("File", 53), ("Action", 16), ("Defect", 27), ("Severity", 22))
LIST_COLUMNS += (("Location", 24), ("Reviewed by", 24))


def _listed(pdf: _Pdf, report: LotReport) -> None:
    rows = report.listed
    pdf.set_font(pdf.family, "B", 12)
    pdf.cell(0, 8, pdf.text_of(f"Rejects and holds ({len(rows):,})"), new_x="LMARGIN", new_y="NEXT")
    if rows.empty:
        pdf.set_font(pdf.family, "", 10)
        pdf.cell(0, 6, "None in this lot.", new_x="LMARGIN", new_y="NEXT")
        return
    _list_header(pdf)
    height = THUMB_MM + 2.5
    for row in rows.to_dict("records"):
        if pdf.will_page_break(height):
            pdf.add_page()
            _list_header(pdf)
        _list_row(pdf, row, height)


def _list_header(pdf: _Pdf) -> None:
    pdf.set_font(pdf.family, "B", 9)
    for title, width in LIST_COLUMNS:
        pdf.cell(width, 6, title, border="B")
    pdf.ln()


def _with_confidence(label: Any, predicted: Any, confidence: Any) -> str:
    """A label with the model's confidence when the label is the model's own (a person's has none)."""
    if not isinstance(label, str) or not label:
        return shown(None)
    if label == predicted and confidence is not None and not pd.isna(confidence):
        return f"{label} {100 * float(confidence):.0f}%"
    return str(label)


def _list_row(pdf: _Pdf, row: dict, height: float) -> None:
    x, y = pdf.get_x(), pdf.get_y()
    thumb = row.get("thumb_file")
    if isinstance(thumb, str) and Path(thumb).is_file():
        pdf.image(thumb, x=x + 1, y=y + 1, h=THUMB_MM, keep_aspect_ratio=True, w=THUMB_MM)
    pdf.set_xy(x + LIST_COLUMNS[0][1], y)
    pdf.set_font(pdf.family, "", 8.5)
    values = [
        row.get("file_name"),
        row.get("action"),
        _with_confidence(row.get("defect"), row.get("pred_defect"), row.get("pred_defect_conf")),
        _with_confidence(row.get("severity"), row.get("pred_severity"), row.get("pred_severity_conf")),
        _with_confidence(row.get("location"), row.get("pred_location"), row.get("pred_location_conf")),
        row.get("reviewed_by") if isinstance(row.get("reviewed_by"), str) else "not yet",
    ]
    file_width = LIST_COLUMNS[1][1]
    _file_name_cell(pdf, shown(values[0]), file_width, height)
    pdf.set_xy(x + LIST_COLUMNS[0][1] + file_width, y)
    for (_, width), value in zip(LIST_COLUMNS[2:], values[1:], strict=True):
        pdf.cell(width, height, _cell_text(pdf, shown(value), width), border="B")
    pdf.ln(height)


def _file_name_cell(pdf: _Pdf, name: str, width: float, height: float, lines: int = 3) -> None:
    """The file name whole, wrapped on up to ``lines`` lines (a long path keeps its end: the file's own name)."""
    text = pdf.text_of(name)
    room = (width - 2) * lines * 0.95
    if pdf.get_string_width(text) > room:
        ellipsis = "…" if pdf.unicode_text else "..."
        while text and pdf.get_string_width(ellipsis + text) > room:
            text = text[1:]
        text = ellipsis + text
    x, y = pdf.get_x(), pdf.get_y()
    pdf.cell(width, height, "", border="B")  # the row's rule
    pdf.set_xy(x, y + 1)
    pdf.multi_cell(width, 3.8, text, wrapmode="CHAR", align="L", max_line_height=3.8)


def _sign_off(pdf: _Pdf) -> None:
    if pdf.will_page_break(40):
        pdf.add_page()
    pdf.ln(8)
    pdf.set_font(pdf.family, "B", 11)
    pdf.cell(0, 7, "Sign-off", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(pdf.family, "", 10)
    pdf.multi_cell(
        0,
        6,
        pdf.text_of("I checked this lot's results and the rejects and holds listed above."),
        new_x="LMARGIN",
        new_y="NEXT",
        align="L",
    )
    pdf.ln(10)
    for label in ("Name", "Date", "Signature"):
        pdf.cell(18, 6, pdf.text_of(label))
        pdf.cell(38, 6, "", border="B")
        pdf.cell(4, 6, "")
    pdf.ln()


def _rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)


def lot_report_pdf(report: LotReport) -> bytes:
    """The report as PDF bytes (A4 portrait)."""
    pdf = _Pdf(report)
    pdf.set_title(report.title)
    pdf.set_creator("VisionQC")
    pdf.add_page()
    _header(pdf, report)
    _counts(pdf, report)
    _listed(pdf, report)
    _sign_off(pdf)
    return bytes(pdf.output())
