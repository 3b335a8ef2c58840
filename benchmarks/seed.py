"""Seed a VisionQC database with synthetic inspections in pure DuckDB SQL (a million rows in seconds).

    python benchmarks/seed.py /tmp/vq-bench 1000000

Shared by the dashboard and history benchmarks and by tests that need a full-looking database. Rows look
like magnetic-tile inspections: six defect types (one "no_defect"), low/medium/high severity, a 3×3 grid of
locations, actions from the default policy, ~8 % flagged for review, ~3 % reviewed (some corrected), spread
over ``days`` days before ``end`` with a defect rate that creeps up in the last weeks.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from visionqc.store import Store, counts

DEFECTS = ("no_defect", "blowhole", "break", "crack", "fray", "uneven")
# Cumulative shares of the defect types among defective rows (blowhole most common).
DEFECT_CUTS = (0.34, 0.52, 0.74, 0.88, 1.0)
LOCATIONS = tuple(f"{row}-{col}" for row in ("top", "middle", "bottom") for col in ("left", "center", "right"))
STATIONS = ("line-1", "line-2", "line-3")
MODEL = ("magnetic-tile", "1.0")


def seed_inspections(
    home: str | Path,
    rows: int,
    *,
    days: int = 120,
    end: datetime | None = None,
    seed: float = 0.42,
    start_id: int = 1,
) -> Store:
    """Append ``rows`` synthetic inspections to the store under ``home`` (created if needed); returns it."""
    store = Store(home)
    end = (end or datetime.now(UTC)).replace(tzinfo=None)
    defect_cases = " ".join(
        f"WHEN u_type < {cut} THEN '{name}'" for cut, name in zip(DEFECT_CUTS, DEFECTS[1:], strict=True)
    )
    location_list = "[" + ", ".join(f"'{name}'" for name in LOCATIONS) + "]"
    with store.connect() as con:
        con.execute("SELECT setseed(?)", [seed])
        for station in STATIONS:
            con.execute(
                "INSERT INTO batches (batch_id, created_at, station, operator, source, model_name, model_version, "
                "status, finished_at) VALUES (?, ?, ?, 'seed', 'cli', ?, ?, 'complete', ?) ON CONFLICT DO NOTHING",
                [f"seed-{station}", end, station, *MODEL, end],
            )
        station_list = "[" + ", ".join(f"'seed-{s}'" for s in STATIONS) + "]"
        con.execute(
            f"""
            INSERT INTO inspections BY NAME
            WITH draws AS (
                SELECT i, random() AS u_age, random() AS u_defect, random() AS u_type, random() AS u_sev,
                       random() AS u_loc, random() AS u_review, random() AS u_conf, random() AS u_station
                FROM range(?, ? + ?) t(i)
            ), aged AS (
                SELECT *, u_age * ? AS age_days FROM draws
            ), labelled AS (
                SELECT *,
                    -- the defect rate rises from ~25 % to ~35 % over the last 30 days
                    CASE WHEN u_defect < 0.25 + 0.10 * greatest(0, 1 - age_days / 30) THEN
                        CASE {defect_cases} END ELSE 'no_defect' END AS d,
                    CASE WHEN u_sev < 0.5 THEN 'low' WHEN u_sev < 0.82 THEN 'medium' ELSE 'high' END AS s,
                    {location_list}[1 + CAST(floor(u_loc * {len(LOCATIONS)}) AS INTEGER)] AS l,
                    u_review < 0.08 AS flagged
                FROM aged
            )
            SELECT
                i AS inspection_id,
                {station_list}[1 + CAST(floor(u_station * {len(STATIONS)}) AS INTEGER)] AS batch_id,
                sha256(CAST(i AS VARCHAR)) AS sha256,
                'tile_' || CAST(i AS VARCHAR) || '.jpg' AS file_name,
                CAST(? AS TIMESTAMP) - to_microseconds(CAST(age_days * 86400e6 AS BIGINT)) AS created_at,
                '{MODEL[0]}' AS model_name,
                '{MODEL[1]}' AS model_version,
                'no_defect' AS no_defect_label,
                d AS pred_defect,
                0.55 + 0.45 * u_conf AS pred_defect_conf,
                CASE WHEN d <> 'no_defect' THEN s END AS pred_severity,
                CASE WHEN d <> 'no_defect' THEN 0.5 + 0.5 * u_conf END AS pred_severity_conf,
                CASE WHEN d <> 'no_defect' THEN l END AS pred_location,
                CASE WHEN d <> 'no_defect' THEN 0.5 + 0.5 * u_conf END AS pred_location_conf,
                CASE WHEN flagged THEN 'Review' WHEN d = 'no_defect' THEN 'Pass'
                     WHEN s = 'high' THEN 'Reject' WHEN s = 'medium' THEN 'Rework' ELSE 'Hold' END AS pred_action,
                '{{}}' AS probabilities,
                u_conf AS ood_score,
                flagged AS needs_review,
                CASE WHEN flagged THEN 'low confidence' END AS review_reason,
                -- ~3 % reviewed: a third of those corrected to a crack at high severity, the rest confirmed
                CASE WHEN u_review < 0.03 THEN CASE WHEN u_review < 0.01 THEN 'crack' ELSE d END END AS rev_defect,
                CASE WHEN u_review < 0.03 THEN CASE WHEN u_review < 0.01 THEN 'high'
                     WHEN d <> 'no_defect' THEN s END END AS rev_severity,
                CASE WHEN u_review < 0.03 THEN CASE WHEN u_review < 0.01 OR d <> 'no_defect' THEN l END END
                    AS rev_location,
                CASE WHEN u_review < 0.03 THEN CASE WHEN u_review < 0.01 THEN 'Reject' WHEN d = 'no_defect'
                     THEN 'Pass' WHEN s = 'high' THEN 'Reject' WHEN s = 'medium' THEN 'Rework' ELSE 'Hold' END
                     END AS rev_action,
                CASE WHEN u_review < 0.03 THEN CAST(? AS TIMESTAMP) END AS reviewed_at,
                CASE WHEN u_review < 0.03 THEN 'seed' END AS reviewed_by
            FROM labelled
            """,
            [start_id, start_id, rows, float(days), end, end],
        )
        counts.rebuild(con)  # rows written in SQL, not through the store: the Dashboard's roll-up from them
    return store


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "visionqc-data")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    seed_inspections(target, count)
    print(f"seeded {count:,} inspections into {target}")
