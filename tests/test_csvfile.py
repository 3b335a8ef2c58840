"""The one CSV writer: what a spreadsheet user gets from every export."""

from __future__ import annotations

import csv
import io
from datetime import datetime

import pandas as pd

from visionqc.csvfile import UTF8_BOM, write_csv


def read(data: bytes) -> list[dict]:
    assert data.startswith(UTF8_BOM)
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))


def test_numbers_are_rounded_and_times_carry_their_zone():
    frame = pd.DataFrame(
        {
            "file_name": ["Prüfteil—1.jpg", "b.jpg"],
            "confidence": [0.95123456789012345, 0.1],
            "created_at": [datetime(2026, 3, 1, 13, 5, 9), datetime(2026, 7, 1, 23, 30, 0)],  # naive UTC
            "tags": [["retrain", "edge"], []],
            "count": [3, 4],
        }
    )
    rows = read(write_csv(frame, timezone="Europe/Berlin"))
    assert rows[0]["file_name"] == "Prüfteil—1.jpg"
    assert rows[0]["confidence"] == "0.9512" and rows[1]["confidence"] == "0.1"
    assert rows[0]["created_at"] == "2026-03-01T14:05:09+01:00"  # winter time
    assert rows[1]["created_at"] == "2026-07-02T01:30:00+02:00"  # summer time, the next local day
    assert rows[0]["tags"] == "retrain;edge" and rows[1]["tags"] == ""
    assert rows[0]["count"] == "3"
    assert read(write_csv(frame))[0]["created_at"] == "2026-03-01T13:05:09+00:00"


def test_chunks_share_one_header_and_no_chunk_still_names_the_columns(tmp_path):
    chunks = [pd.DataFrame({"a": [1.0], "b": ["x"]}), pd.DataFrame({"a": [2.123456], "b": ["y"]})]
    path = write_csv(chunks, tmp_path / "out.csv")
    assert path.read_bytes().decode("utf-8-sig").splitlines() == ["a,b", "1.0,x", "2.1235,y"]
    assert write_csv([], columns=["a", "b"]).decode("utf-8-sig").splitlines() == ["a,b"]
