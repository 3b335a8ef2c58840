"""Dashboard exports: each chart as a print-resolution PNG (rendered server-side by vl-convert) and a CSV of
the aggregate behind it, and one report file (a zip with every PNG and CSV plus an HTML page and a text file
that say which filters and time range they show).
"""

from __future__ import annotations

import base64
import html
import io
import struct
import zipfile
from datetime import UTC, datetime

import altair as alt
import pandas as pd
import vl_convert

from visionqc.csvfile import write_csv
from visionqc.reporting.dashboard import ChartSection, kpi_lines, sections
from visionqc.safetext import printable
from visionqc.store.analytics import DashboardData

# Print resolution: twice the on-screen pixels, tagged 200 ppi (a 460 px wide chart prints ~11.7 cm wide).
PNG_SCALE = 2.0
PNG_PPI = 200.0


def chart_png(chart: alt.TopLevelMixin, *, scale: float = PNG_SCALE, ppi: float = PNG_PPI) -> bytes:
    """The chart as PNG bytes, rendered without a browser. Every text in the spec (titles, the filters in the
    subtitle, station names and file names in the data) is made printable first: a control character in a
    station name made vl-convert's renderer abort the whole process."""
    return vl_convert.vegalite_to_png(_printable_spec(chart.to_dict()), scale=scale, ppi=ppi)


def _printable_spec(value):
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {k: _printable_spec(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable_spec(v) for v in value]
    return value


def section_png(data: DashboardData, key: str) -> bytes:
    """One chart of the Dashboard as a PNG with the filters written under its title."""
    for section in sections(data, subtitle=data.subtitle()):
        if section.key == key:
            return chart_png(section.chart)
    raise KeyError(f"no chart {key!r} on the Dashboard")


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk; raises ValueError for anything that is not a PNG."""
    if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return struct.unpack(">II", png[16:24])


def frame_csv(frame: pd.DataFrame, timezone: str = "UTC") -> bytes:
    """A chart's numbers as CSV, through the one writer (:func:`visionqc.csvfile.write_csv`)."""
    return write_csv(frame, timezone=timezone)


def report_file_name(data: DashboardData, extension: str) -> str:
    first = data.first_day.isoformat() if data.first_day else "all"
    return f"visionqc-dashboard_{first}_{data.last_day.isoformat()}.{extension}"


def report_zip(data: DashboardData, *, generated_at: datetime | None = None) -> bytes:
    """One zip: ``report.html`` (filters, KPIs, every chart), ``filters.txt``, and a PNG and CSV per chart."""
    generated_at = generated_at or datetime.now(UTC)
    stamp = generated_at.strftime("%Y-%m-%d %H:%M UTC")
    described = data.describe()
    rendered = [(s, chart_png(s.chart)) for s in sections(data, subtitle=data.subtitle())]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("report.html", _html(data, rendered, stamp))
        text = ["VisionQC dashboard report", f"Generated: {stamp}", *map(printable, described), ""]
        text += [printable(f"{label}: {value}") for label, value in kpi_lines(data)]
        archive.writestr("filters.txt", "\n".join(text) + "\n")
        for section, png in rendered:
            # PNGs are already compressed; storing them saves time and nothing else.
            archive.writestr(f"{section.key}.png", png, compress_type=zipfile.ZIP_STORED)
            archive.writestr(f"{section.key}.csv", frame_csv(section.frame))
    return buffer.getvalue()


def _html(data: DashboardData, rendered: list[tuple[ChartSection, bytes]], stamp: str) -> str:
    def e(text: str) -> str:  # user text (stations, tags, file names) into HTML: printable, then escaped
        return html.escape(printable(text))

    filters = "".join(f"<li>{e(line)}</li>" for line in data.describe())
    kpis = "".join(f"<tr><th>{e(label)}</th><td>{e(value)}</td></tr>" for label, value in kpi_lines(data))
    figures = "".join(
        f'<figure><img alt="{e(s.title)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        f"<figcaption>{e(s.title)} — data in {e(s.key)}.csv</figcaption></figure>"
        for s, png in rendered
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>VisionQC dashboard report</title>
<style>
body {{ font-family: Arial, Helvetica, sans-serif; color: #1b1f24; margin: 2em; }}
table {{ border-collapse: collapse; }} th, td {{ text-align: left; padding: 4px 12px 4px 0; }}
figure {{ display: inline-block; margin: 1em 1em 1em 0; }} img {{ width: 560px; }}
figcaption {{ color: #555; font-size: 0.85em; }}
</style></head><body>
<h1>VisionQC dashboard report</h1>
<p>Generated {e(stamp)}</p>
<h2>Filters</h2><ul>{filters}</ul>
<h2>Key figures</h2><table>{kpis}</table>
<h2>Charts</h2>{figures}
</body></html>
"""
