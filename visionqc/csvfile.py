"""The one CSV writer every export goes through (History, a batch, the Dashboard's chart data, dataset labels).

What a spreadsheet user gets, whatever the export: UTF-8 with a byte-order mark (so "—" and accents read
right), numbers rounded to 4 decimal places (a confidence of 0.9512, not 0.95123456789012345), times in ISO 8601
with their zone offset (``2026-03-01T14:05:09+01:00``, never a bare UTC time), lists joined by ``;``, and no
text cell a spreadsheet would run as a formula (:func:`visionqc.safetext.formula_safe`; numbers stay numbers).
Frames arrive in chunks so a million-row export never sits in memory at once. Pure pandas: no database, no
Streamlit.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd

from visionqc.safetext import formula_safe

UTF8_BOM = b"\xef\xbb\xbf"
DECIMALS = 4


def _iso_times(values: pd.Series, timezone: str) -> pd.Series:
    """Naive UTC (or zone-aware) datetimes -> ISO 8601 text in ``timezone`` with its offset, e.g. +01:00."""
    stamps = pd.to_datetime(values)
    if stamps.dt.tz is None:
        stamps = stamps.dt.tz_localize("UTC")
    text = stamps.dt.tz_convert(ZoneInfo(timezone)).dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    # strftime gives +0100; ISO 8601's extended format, which the date part uses, wants +01:00.
    return text.where(text.isna(), text.str[:-2] + ":" + text.str[-2:])


def prepare(frame: pd.DataFrame, timezone: str = "UTC") -> pd.DataFrame:
    """One chunk as it will be written: rounded numbers, zoned ISO times, joined lists, formula-safe text."""
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            out[column] = _iso_times(values, timezone)
        elif pd.api.types.is_float_dtype(values):
            out[column] = values.round(DECIMALS)
        elif pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
            out[column] = values.map(_text_cell)
    out.columns = [_text_cell(str(c)) for c in out.columns]
    return out


def _text_cell(value):
    """A text cell as written: lists joined by ``;``, text that a spreadsheet would evaluate escaped."""
    if isinstance(value, list | tuple):
        value = ";".join(map(str, value))
    return formula_safe(value) if isinstance(value, str) else value


def write_csv(
    chunks: pd.DataFrame | Iterable[pd.DataFrame],
    path: str | Path | None = None,
    *,
    timezone: str = "UTC",
    columns: Iterable[str] = (),
) -> bytes | Path:
    """Write one frame, or chunks of frames with the same columns, as CSV. Returns the bytes, or writes
    ``path`` and returns it. ``columns`` names the header when no chunk comes at all."""
    if isinstance(chunks, pd.DataFrame):
        chunks = [chunks]
    if path is None:
        buffer = io.BytesIO()
        _write(buffer, chunks, timezone, columns)
        return buffer.getvalue()
    with Path(path).open("wb") as target:
        _write(target, chunks, timezone, columns)
    return Path(path)


def _write(target, chunks: Iterable[pd.DataFrame], timezone: str, columns: Iterable[str]) -> None:
    target.write(UTF8_BOM)
    header = True
    for chunk in chunks:
        # CRLF as RFC 4180 says: then a field holding a bare CR or LF (a file name can) is quoted, never a new row.
        text = prepare(chunk, timezone).to_csv(index=False, header=header, lineterminator="\r\n")
        target.write(text.encode("utf-8"))
        header = False
    if header:  # no chunk at all: the header alone
        empty = prepare(pd.DataFrame(columns=list(columns)), timezone)
        target.write(empty.to_csv(index=False, lineterminator="\r\n").encode("utf-8"))
