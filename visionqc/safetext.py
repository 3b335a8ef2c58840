"""Text that comes from users and files, made safe for the place it is written to.

Every file name (including names inside uploaded zips), station, operator, note, tag, review note and reason is
hostile until written:

- **Spreadsheets** read a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return as a
  formula ("CSV injection", OWASP): ``=HYPERLINK("http://…","open me").jpg`` becomes a live link.
  :func:`formula_safe` prefixes such a cell with a single quote, OWASP's recommendation: the spreadsheet shows
  the text and runs nothing. A cell that already starts with a quote gets one more, so
  :func:`from_formula_safe` can give back the exact original (our own dataset reader relies on it).
- **PDF and HTML reports** get :func:`printable`: control characters (which can hide text or break a layout)
  are removed; HTML escaping stays the job of :func:`html.escape` at the place HTML is built.
"""

from __future__ import annotations

import re

# Characters that make a spreadsheet cell a formula (OWASP "CSV Injection"), and the quote that escapes them.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def formula_safe(text: str) -> str:
    """``text`` as a spreadsheet cell that is never evaluated (see the module docstring)."""
    if text.startswith(FORMULA_STARTS) or text.startswith(QUOTE):
        return QUOTE + text
    return text


def from_formula_safe(text: str) -> str:
    """The exact original of a :func:`formula_safe` cell (a cell that was not escaped comes back unchanged)."""
    if text.startswith(QUOTE) and text[1:].startswith((*FORMULA_STARTS, QUOTE)):
        return text[1:]
    return text


def printable(text: str) -> str:
    """``text`` without control characters and invisible direction marks; newlines and tabs become spaces."""
    return _CONTROL.sub("", text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " "))
