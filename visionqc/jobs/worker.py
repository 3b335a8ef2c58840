"""The worker: the process that runs a data folder's jobs, one at a time, outside any Streamlit script run.

``python -m visionqc.jobs.worker HOME`` waits for the data folder's worker lock (an ``flock`` on
``HOME/jobs/worker.lock``: at most one worker runs jobs, any others wait their turn), then claims queued jobs
oldest first until none is left, and exits. It runs at a lower CPU priority (``nice``) so the app stays
responsive. The lock also tells everyone else whether a worker is alive: the kernel releases it when the process
dies, even by ``kill -9``, so a job this machine runs, still marked running while the lock is free, belongs to a
dead worker (:func:`visionqc.jobs.queue.reconcile`).

On a plant's shared store the data folder is a shared mount, where a lock may not reach other machines (many
SMB mounts). So a worker also writes a heartbeat on its running job every :data:`HEARTBEAT_SECONDS` (the
database's clock), and a job another machine runs counts as dead only once its heartbeat is
:data:`SILENT_SECONDS` old.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import resource
import shutil
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionqc.jobs.progress import JOBS_DIR, LOG_FILE, JobCancelled, ProgressFile, cancel_requested, job_dir
from visionqc.store import Store

LOCK_FILE = "worker.lock"
NICENESS = 10
HEARTBEAT_SECONDS = 15.0
SILENT_SECONDS = 120  # eight beats missed: the worker is gone (a loaded machine delays a beat by seconds, not minutes)
# Job kinds and the function that runs each, imported only when a job of that kind runs. Each takes a
# JobContext and returns the result to record; it reports progress through ctx.progress (a ProgressFile).
JOB_KINDS: dict[str, str] = {
    "train": "visionqc.jobs.training_job:run",
    "anomaly": "visionqc.jobs.anomaly_job:run",
    "reinspect": "visionqc.jobs.reinspect_job:run",
}
DIED = "the job's process stopped before it finished (it was killed or crashed); nothing was registered"
# A re-inspection writes its batch chunk by chunk: what it finished before it stopped stays, each image whole.
DIED_REINSPECTING = (
    "the job's process stopped before it finished (it was killed or crashed); its new batch holds the images "
    "it had re-inspected"
)


def died(kind: str) -> str:
    """Why a job whose worker died failed, in the words of what it leaves behind."""
    return DIED_REINSPECTING if kind == "reinspect" else DIED


@dataclass
class JobContext:
    home: Path
    store: Store
    job: dict[str, Any]
    progress: ProgressFile | None = None
    log: list[str] = field(default_factory=list)

    @property
    def job_id(self) -> str:
        return self.job["job_id"]

    @property
    def work_dir(self) -> Path:
        return job_dir(self.home, self.job_id) / "work"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def lock_path(home: Path) -> Path:
    path = home / JOBS_DIR / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def handler(kind: str):
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(JOB_KINDS)}")
    module, _, function = JOB_KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), function)


@contextmanager
def heartbeat(store: Store, job_id: str) -> Iterator[None]:
    """Beat on ``job_id`` every :data:`HEARTBEAT_SECONDS` from a thread of its own, while the block runs. A beat
    that fails (the server away for a moment) is tried again at the next one."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                if not store.beat_job(job_id):
                    return  # finished or cancelled meanwhile: nothing left to keep alive
            except Exception as exc:  # a heartbeat must never end the job it watches
                print(f"heartbeat of job {job_id} not written: {exc}", file=sys.stderr, flush=True)

    thread = threading.Thread(target=beat, name=f"heartbeat {job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_one(home: Path, store: Store, job: dict[str, Any]) -> str:
    """Run a claimed job to its end and record how it ended; returns the final status."""
    ctx = JobContext(home, store, job)
    status, error, result = "failed", None, None
    cpu_before = _cpu_seconds()
    try:
        if cancel_requested(home, ctx.job_id):
            raise JobCancelled()
        # CPU time beside wall time: on a shared machine it says what the job would take on idle cores.
        with heartbeat(store, ctx.job_id):
            result = {**handler(job["kind"])(ctx), "cpu_seconds": round(_cpu_seconds() - cpu_before, 1)}
        status = "succeeded"
    except JobCancelled:
        status, error = "cancelled", "cancelled on request"
    except ValueError as exc:  # the data or the request (a dataset that cannot be trained on, a taken name)
        error = str(exc)
    except Exception as exc:  # a bug or the machine (out of memory, disk full): keep the traceback in the log
        error = f"{type(exc).__name__}: {exc}"
        (job_dir(home, ctx.job_id) / LOG_FILE).write_text(traceback.format_exc(), encoding="utf-8")
    finally:
        shutil.rmtree(ctx.work_dir, ignore_errors=True)
    if ctx.progress is not None:
        ctx.progress.finish(status, error)
    store.finish_job(ctx.job_id, status, error=error, result=result)
    return status


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m visionqc.jobs.worker HOME", file=sys.stderr)
        return 2
    home = Path(args[0]).resolve()
    os.environ["VISIONQC_HOME"] = str(home)
    os.nice(NICENESS)
    with lock_path(home).open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # wait for the worker before us; released by the kernel if we die
        from visionqc.jobs.queue import finish_orphans

        store = Store(home)
        finish_orphans(store)  # we hold the lock: a job still marked running had a worker that died
        while (job := store.claim_next_job(os.getpid())) is not None:
            run_one(home, store, job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
