"""Jobs in the store: long work (training) queued, claimed by the one worker of the data folder, finished.

Only state changes are written here (queued -> running -> succeeded / failed / cancelled), each one short
transaction, so the worker process and the app share the DuckDB file without holding it. Live progress is a
small file beside the job (:mod:`visionqc.jobs.progress`), not a row: it changes every second.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from typing import Any

import duckdb
import pandas as pd

from visionqc.store.records import utc_now

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
# The database's own clock in UTC: heartbeats written and compared by one clock, whichever machine's they are.
DATABASE_NOW = "(now() AT TIME ZONE 'UTC')"


def this_host() -> str:
    """The name a worker records on the jobs it runs (``VISIONQC_HOST``, else the machine's host name)."""
    return os.environ.get("VISIONQC_HOST") or socket.gethostname()


class JobsMixin:
    """The job part of :class:`~visionqc.store.Store` (needs ``connect`` and ``_write``)."""

    def add_job(
        self,
        kind: str,
        params: dict[str, Any],
        *,
        created_by: str | None,
        dataset_id: str | None = None,
        model_name: str | None = None,
    ) -> str:
        """Queue a job; returns its id (``YYYYmmdd-HHMMSS-xxxx``, sortable by creation)."""
        now = utc_now()
        job_id = f"{now:%Y%m%d-%H%M%S}-{os.urandom(2).hex()}"
        self._write(
            lambda con: con.execute(
                "INSERT INTO jobs (job_id, kind, created_at, created_by, status, params, dataset_id, model_name) "
                "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                [job_id, kind, now, created_by, json.dumps(params), dataset_id, model_name],
            )
        )
        return job_id

    def claim_next_job(self, pid: int, host: str | None = None) -> dict[str, Any] | None:
        """The oldest queued job, now marked running by process ``pid`` on ``host`` (default: this machine), its
        first heartbeat written; ``None`` when nothing is queued."""
        host = host or this_host()

        def work(con: duckdb.DuckDBPyConnection) -> str | None:
            taken: list[str] = []  # by another transaction meanwhile: never picked twice, so this ends
            while True:
                row = con.execute(
                    "SELECT job_id FROM jobs WHERE status = 'queued' "
                    "AND job_id NOT IN (SELECT unnest(?::VARCHAR[])) ORDER BY created_at, job_id LIMIT 1",
                    [taken],
                ).fetchone()
                if row is None:
                    return None
                # Still queued when marked: PostgreSQL (read committed) lets another transaction cancel or claim
                # the job between the two statements, and re-checks this condition against what it committed.
                claimed = con.execute(
                    "UPDATE jobs SET status = 'running', started_at = ?, pid = ?, host = ?, "
                    f"heartbeat_at = {DATABASE_NOW} WHERE job_id = ? AND status = 'queued' RETURNING job_id",
                    [utc_now(), pid, host, row[0]],
                ).fetchall()
                if claimed:
                    return row[0]
                taken.append(row[0])

        job_id = self._write(work)
        return None if job_id is None else self.job(job_id)

    def beat_job(self, job_id: str) -> bool:
        """The running job's worker is alive (now, by the database's clock); ``False`` when it is no longer running."""
        return self._write(
            lambda con: bool(
                con.execute(
                    f"UPDATE jobs SET heartbeat_at = {DATABASE_NOW} WHERE job_id = ? AND status = 'running' "
                    "RETURNING job_id",
                    [job_id],
                ).fetchall()
            )
        )

    def jobs_without_worker(self, host: str, silent_for: int) -> list[tuple[str, str]]:
        """``(job_id, kind)`` of the running jobs whose worker is gone, asked on ``host`` while no worker of this
        data folder runs here (its lock is free): those this machine ran (or that name no machine: claimed before
        migration 14), and those of any machine whose worker has not beaten for ``silent_for`` seconds."""
        with self.connect() as con:
            return [
                (r[0], r[1])
                for r in con.execute(
                    "SELECT job_id, kind FROM jobs WHERE status = 'running' AND (host IS NULL OR host = ? "
                    f"OR heartbeat_at IS NULL OR heartbeat_at < {DATABASE_NOW} - INTERVAL '{int(silent_for)} seconds') "
                    "ORDER BY job_id",
                    [host],
                ).fetchall()
            ]

    def set_job_model(self, job_id: str, model_name: str, model_version: str) -> None:
        self._write(
            lambda con: con.execute(
                "UPDATE jobs SET model_name = ?, model_version = ? WHERE job_id = ?",
                [model_name, model_version, job_id],
            )
        )

    def finish_job(
        self,
        job_id: str,
        status: str,
        *,
        error: str | None = None,
        result: dict[str, Any] | None = None,
        from_states: tuple[str, ...] = ("queued", "running"),
    ) -> bool:
        """Record how a job in one of ``from_states`` ended; ``False`` if it was in none (nothing changes)."""
        if status not in FINISHED:
            raise ValueError(f"a job finishes as one of {FINISHED}, not {status!r}")

        def work(con: duckdb.DuckDBPyConnection) -> bool:
            changed = con.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error = ?, result = ? "
                "WHERE job_id = ? AND status IN (SELECT unnest(?::VARCHAR[])) RETURNING job_id",
                [status, utc_now(), error, json.dumps(result) if result is not None else None, job_id,
                 list(from_states)],
            ).fetchall()  # fmt: skip
            return bool(changed)

        return self._write(work)

    def job(self, job_id: str) -> dict[str, Any] | None:
        with self.connect() as con:
            df = con.execute("SELECT * FROM jobs WHERE job_id = ?", [job_id]).df()
        return None if df.empty else _job_dict(df.iloc[0].to_dict())

    def jobs(self, limit: int = 50, kinds: Sequence[str] | None = None) -> pd.DataFrame:
        """The newest jobs first (of ``kinds``, or every kind; ``params`` and ``result`` parsed)."""
        where, args = ("WHERE kind IN (SELECT unnest(?::VARCHAR[]))", [list(kinds)]) if kinds is not None else ("", [])
        with self.connect() as con:
            df = con.execute(
                f"SELECT * FROM jobs {where} ORDER BY created_at DESC, job_id DESC LIMIT ?", [*args, limit]
            ).df()
        df["params"] = [json.loads(p) if isinstance(p, str) else {} for p in df["params"]]
        df["result"] = [json.loads(r) if isinstance(r, str) else None for r in df["result"]]
        return df

    def count_jobs(self, *states: str, kinds: Sequence[str] | None = None) -> int:
        """How many jobs are in one of ``states`` (of ``kinds``, or every kind)."""
        kind = " AND kind IN (SELECT unnest(?::VARCHAR[]))" if kinds is not None else ""
        args = [list(states)] + ([list(kinds)] if kinds is not None else [])
        with self.connect() as con:
            return int(
                con.execute(
                    f"SELECT count(*) FROM jobs WHERE status IN (SELECT unnest(?::VARCHAR[])){kind}", args
                ).fetchone()[0]
            )


def _job_dict(row: dict[str, Any]) -> dict[str, Any]:
    row["params"] = json.loads(row["params"]) if isinstance(row.get("params"), str) else {}
    row["result"] = json.loads(row["result"]) if isinstance(row.get("result"), str) else None
    for key in ("error", "model_name", "model_version", "dataset_id", "created_by", "host"):
        if isinstance(row.get(key), float):  # NaN from pandas for NULL
            row[key] = None
    if row.get("pid") is not None and row["pid"] == row["pid"]:
        row["pid"] = int(row["pid"])
    else:
        row["pid"] = None
    return row
