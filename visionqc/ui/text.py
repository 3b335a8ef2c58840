"""User text shown in Streamlit's Markdown (captions, messages, headings) is shown as typed, never interpreted.

A file name, station, note, tag or reviewer name is hostile: ``[open me](http://evil.example)`` would become a
link, ``:red[…]`` a colour, ``**`` bold, ``$x$`` a formula. :func:`literal` backslash-escapes every ASCII
punctuation character Markdown or Streamlit's directives give a meaning to (CommonMark allows escaping any of
them), so the text reads exactly as it was written. Tables (``st.dataframe``) show plain text and need nothing.
"""

from __future__ import annotations

import re
from typing import Any

from visionqc.labels import shown
from visionqc.safetext import printable

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:&\"'=])")


def literal(value: Any) -> str:
    """``value`` as Markdown that renders as the plain text (missing values as "—")."""
    return _MARKDOWN.sub(r"\\\1", printable(shown(value)))


def literals(values, separator: str = ", ") -> str:
    return separator.join(literal(v) for v in values)
