"""A job's live progress: a small JSON file beside the job, rewritten atomically at most once a second.

The worker process writes it; the app reads it on every refresh. Progress changes every second, so it is a file
and not a database row: DuckDB lets one process write at a time, and the app must never wait for a job.
Cancelling is a file too (``cancel``): the worker looks for it at every step and stops at the next one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionqc.training.pipeline import Step

JOBS_DIR = "jobs"
PROGRESS_FILE = "progress.json"
CANCEL_FILE = "cancel"
LOG_FILE = "log.txt"
WRITE_EVERY_S = 1.0


class JobCancelled(Exception):
    """Raised inside a running job when someone asked to cancel it."""


def job_dir(home: Path, job_id: str) -> Path:
    return home / JOBS_DIR / job_id


def read_progress(home: Path, job_id: str) -> dict[str, Any] | None:
    """The job's last progress, or ``None`` when it has not reported yet."""
    try:
        return json.loads((job_dir(home, job_id) / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def request_cancel(home: Path, job_id: str) -> None:
    path = job_dir(home, job_id)
    path.mkdir(parents=True, exist_ok=True)
    (path / CANCEL_FILE).write_text(str(time.time()), encoding="utf-8")


def cancel_requested(home: Path, job_id: str) -> bool:
    return (job_dir(home, job_id) / CANCEL_FILE).exists()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


@dataclass(frozen=True)
class Stage:
    """A stage of a job as the user reads it, the progress-bar descriptions that belong to it (prefixes) and
    its estimated share of the time."""

    key: str
    label: str
    prefixes: tuple[str, ...]
    seconds: float


class ProgressFile:
    """Turns the training code's progress bars (:class:`~visionqc.training.pipeline.Step`) into the job's progress
    file: the stage, its progress, the epoch and validation score, the share of the whole job done and the time
    left. Calling it also checks for a cancel request (raising :class:`JobCancelled`)."""

    def __init__(self, home: Path, job_id: str, stages: Sequence[Stage], extra: dict[str, Any] | None = None):
        self.home, self.job_id = home, job_id
        self.path = job_dir(home, job_id) / PROGRESS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stages = list(stages)
        self.total = sum(s.seconds for s in self.stages) or 1.0
        self.extra = dict(extra or {})
        self.started = time.time()
        self.current = 0
        self.last_write = 0.0
        self.state: dict[str, Any] = {}

    def stage(self, key: str, message: str | None = None) -> None:
        """Enter a stage that has no progress bar of its own (e.g. preparing the dataset, saving the model)."""
        self._move_to(next(i for i, s in enumerate(self.stages) if s.key == key))
        self._publish(0.0, None, {}, message, force=True)

    def __call__(self, steps: list[Step]) -> None:
        if cancel_requested(self.home, self.job_id):
            raise JobCancelled()
        if not steps:
            return
        outer = steps[0]
        for i, stage in enumerate(self.stages):
            if i >= self.current and any(outer.desc.startswith(p) for p in stage.prefixes):
                changed = i != self.current
                self._move_to(i)
                self._publish(nested_fraction(steps), outer, outer.info, None, force=changed)
                return
        # A bar that belongs to no stage ahead (work between stages): it must not move the current stage's share.

    def _move_to(self, index: int) -> None:
        self.current = max(self.current, index)

    def _publish(self, fraction: float, outer: Step | None, info: dict, message: str | None, force: bool) -> None:
        now = time.time()
        if not force and now - self.last_write < WRITE_EVERY_S:
            return
        stage = self.stages[self.current]
        done_before = sum(s.seconds for s in self.stages[: self.current])
        overall = min((done_before + stage.seconds * fraction) / self.total, 0.999)
        overall = max(overall, self.state.get("fraction", 0.0))  # the bar never moves back
        elapsed = now - self.started
        planned_left = self.total - done_before - stage.seconds * fraction
        # The plan's estimate, corrected by how fast this machine has been so far (once there is something to go by).
        pace = elapsed / max(done_before + stage.seconds * fraction, 1e-6) if overall > 0.05 else 1.0
        self.state = {
            **self.extra,
            "stage": stage.key,
            "stage_label": stage.label,
            "stage_number": self.current + 1,
            "stages": len(self.stages),
            "stage_fraction": round(fraction, 4),
            "fraction": round(overall, 4),
            "detail": _detail(outer),
            "info": info,
            "message": message,
            "elapsed_seconds": round(elapsed, 1),
            "eta_seconds": round(max(planned_left * pace, 0.0), 1),
            "updated_at": now,
        }
        _write_json(self.path, self.state)
        self.last_write = now

    def finish(self, status: str, message: str | None = None) -> None:
        final = {**self.state, "status": status, "message": message, "updated_at": time.time()}
        if status == "succeeded":
            final.update(fraction=1.0, stage_fraction=1.0, eta_seconds=0.0)
        _write_json(self.path, final)


def nested_fraction(steps: list[Step]) -> float:
    """How far the outermost bar is, counting the bars open inside it (a phase-1 run inside a repeated split)."""
    fraction = 0.0
    for step in reversed(steps):
        if not step.total:
            continue
        fraction = min((step.done + fraction * step.span) / step.total, 1.0)
    return fraction


def _detail(step: Step | None) -> str | None:
    """What the bar is doing: the part it names (see :func:`~visionqc.training.pipeline.part`), else "n of N"."""
    if step is None:
        return None
    if step.info.get("step"):
        return str(step.info["step"])
    return f"{step.done:,} of {step.total:,}" if step.total else None
