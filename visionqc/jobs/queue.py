"""Queueing, cancelling and watching jobs, from the app or the command line.

:func:`submit` records a queued job and starts a worker process (:mod:`visionqc.jobs.worker`) in its own
session, so it outlives the Streamlit script run, the browser tab and the app's reruns. One worker runs at a
time per data folder; the others wait for its lock, so jobs queue. :func:`reconcile` (the Models page calls it
on every refresh) finishes jobs whose worker died and starts a worker when queued jobs have none.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from visionqc import config
from visionqc.jobs.progress import JOBS_DIR, job_dir, read_progress, request_cancel
from visionqc.jobs.worker import JOB_KINDS, SILENT_SECONDS, died, lock_path
from visionqc.registry import ModelRegistry
from visionqc.store import Store
from visionqc.store.jobs import this_host

_SPAWNED: list[subprocess.Popen] = []  # reaped on the next call, so finished workers leave no zombies


def worker_running(home: Path) -> bool:
    """Whether a worker holds the data folder's lock right now (it dies with its process, even by kill -9)."""
    with lock_path(home).open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


def _reap() -> None:
    """Collect the exit status of workers this process started that have ended (no zombies left behind)."""
    for process in list(_SPAWNED):
        if process.poll() is not None:
            _SPAWNED.remove(process)


def start_worker(store: Store) -> subprocess.Popen:
    """A worker process for the store's data folder and database (its PostgreSQL URL, when it has one, even if
    ``VISIONQC_DATABASE_URL`` is not set here), detached from the caller (its own session)."""
    _reap()
    home = store.home
    (home / JOBS_DIR).mkdir(parents=True, exist_ok=True)
    log = (home / JOBS_DIR / "worker.log").open("ab")
    env = {**os.environ, "VISIONQC_HOME": str(home)}
    if store.url is not None:  # the worker reads the jobs where they were queued, never the data folder's file
        env["VISIONQC_DATABASE_URL"] = store.url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(config.PROJECT_ROOT), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "visionqc.jobs.worker", str(home)],
        cwd=config.PROJECT_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    _SPAWNED.append(process)
    return process


def submit(
    store: Store,
    kind: str,
    params: dict[str, Any],
    *,
    by: str | None,
    dataset_id: str | None = None,
    model_name: str | None = None,
) -> str:
    """Queue a job and make sure a worker will run it; returns the job id."""
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(JOB_KINDS)}")
    job_id = store.add_job(kind, params, created_by=by, dataset_id=dataset_id, model_name=model_name)
    start_worker(store)
    return job_id


def cancel(store: Store, job_id: str) -> str:
    """Cancel a queued job at once, or ask a running one to stop at its next step. Returns what happened."""
    job = store.job(job_id)
    if job is None:
        raise ValueError(f"there is no job {job_id!r}")
    if job["status"] == "queued" and store.finish_job(job_id, "cancelled", error="cancelled before it started",
                                                      from_states=("queued",)):  # fmt: skip
        return "cancelled"
    if job["status"] in ("queued", "running"):
        request_cancel(store.home, job_id)
        return "stopping"
    return job["status"]


def finish_orphans(store: Store) -> list[str]:
    """Finish the jobs marked running whose worker is gone (call only while holding the worker lock or after
    seeing it free): this machine's, and another machine's once its heartbeat is :data:`SILENT_SECONDS` old. A job
    whose model did reach the registry succeeded; any other failed, with the reason."""
    gone = store.jobs_without_worker(this_host(), SILENT_SECONDS)
    if not gone:
        return []
    registry = ModelRegistry(store.home)
    registered = {v.job_id: v for v in registry.versions() if v.job_id}
    finished = []
    for job_id, kind in gone:
        if job_id in registered:
            version = registered[job_id]
            store.finish_job(job_id, "succeeded", result={"model": version.ref(), "metrics": version.metrics})
        else:
            store.finish_job(job_id, "failed", error=died(kind))
        shutil.rmtree(job_dir(store.home, job_id) / "work", ignore_errors=True)  # the dead job's half-made files
        finished.append(job_id)
    return finished


def reconcile(store: Store) -> None:
    """Finish jobs whose worker died; start a worker for queued jobs that have none."""
    _reap()
    if worker_running(store.home):
        return
    finish_orphans(store)
    if store.count_jobs("queued"):
        start_worker(store)


def jobs_with_progress(store: Store, limit: int = 20, kinds: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The newest jobs (of ``kinds``, or every kind) with their live progress (``progress``: the progress file, or
    ``None``)."""
    jobs = store.jobs(limit=limit, kinds=kinds)
    jobs["progress"] = [read_progress(store.home, j) for j in jobs["job_id"]]
    return jobs


def describe(kind: str, params: dict[str, Any]) -> str:
    """One line saying what a job of ``kind`` does, for the job lists."""
    module, _, _ = JOB_KINDS.get(kind, JOB_KINDS["train"]).partition(":")
    return importlib.import_module(module).describe(params)
