"""Plumbing shared by feature extraction and evaluation: progress bars on stderr, progress reported to a listener
(a training job's live progress), and decoding that overlaps the network (the next chunk is prepared in a worker
thread, as in ``Predictor.predict_stream``)."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm


@dataclass
class Step:
    """One progress bar of the training recipe: ``desc`` (e.g. "phase 1 (heads)"), ``done`` of ``total`` and
    what the loop last reported (``info``, e.g. the validation balanced accuracy of the last epoch)."""

    desc: str
    done: int
    total: int | None
    info: dict[str, Any] = field(default_factory=dict)
    span: int = 1  # how many units of this bar the bar open inside it stands for (see :func:`part`)


Listener = Callable[[list[Step]], None]


class _Reporter:
    """The bars open right now (outermost first) and whom to tell when one moves."""

    def __init__(self, listener: Listener):
        self.listener = listener
        self.stack: list[Step] = []
        self.lock = threading.Lock()  # an elapsed_bar's thread emits too

    def emit(self) -> None:
        with self.lock:
            self.listener([Step(s.desc, s.done, s.total, dict(s.info), s.span) for s in self.stack])


_REPORTER: ContextVar[_Reporter | None] = ContextVar("visionqc_training_progress", default=None)


@contextmanager
def reporting_to(listener: Listener):
    """Within the block, every progress bar of the training code also calls ``listener(open bars, outermost
    first)`` whenever one moves. The listener may raise (e.g. to cancel a job): the exception ends the run."""
    token = _REPORTER.set(_Reporter(listener))
    try:
        yield
    finally:
        _REPORTER.reset(token)


class _ReportedBar:
    """A tqdm bar that also reports every move to the active listener (see :func:`reporting_to`)."""

    def __init__(self, bar: tqdm, reporter: _Reporter, desc: str, total: int | None):
        self.bar, self.reporter = bar, reporter
        self.step = Step(desc, 0, total)

    def __iter__(self):
        self.reporter.stack.append(self.step)
        self.reporter.emit()
        try:
            for item in self.bar:
                yield item
                self.step.done += 1
                self.reporter.emit()
        finally:
            self.reporter.stack.remove(self.step)

    def __enter__(self):
        self.bar.__enter__()
        self.reporter.stack.append(self.step)
        self.reporter.emit()
        return self

    def __exit__(self, *exc):
        if self.step in self.reporter.stack:
            self.reporter.stack.remove(self.step)
        return self.bar.__exit__(*exc)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.step.done += n
        self.reporter.emit()

    def set_postfix(self, **info: Any) -> None:
        self.bar.set_postfix(**info)
        self.step.info.update(info)
        self.reporter.emit()


def progress_bar(iterable=None, *, desc: str = "", total: int | None = None, **kwargs):
    """A tqdm bar on stderr (``disable=True`` hides it); it also reports to a listener when one is set."""
    bar = tqdm(iterable, file=sys.stderr, dynamic_ncols=True, leave=False, desc=desc, total=total, **kwargs)
    reporter = _REPORTER.get()
    if reporter is None:
        return bar
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    return _ReportedBar(bar, reporter, desc, total)


def log(enabled: bool, message: str) -> None:
    if enabled:
        tqdm.write(message, file=sys.stderr)


def prefetched(items: list, prepare: Callable, batch_size: int) -> Iterator[tuple[list, list]]:
    """Yield ``(chunk, prepare(chunk))`` with the next chunk prepared in a worker thread."""
    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="visionqc-train-decode") as pool:
        pending = pool.submit(prepare, chunks[0]) if chunks else None
        for n, chunk in enumerate(chunks):
            result = pending.result()
            pending = pool.submit(prepare, chunks[n + 1]) if n + 1 < len(chunks) else None
            yield chunk, result


@contextmanager
def part(bar, units: int, label: str):
    """One part of ``bar`` worth ``units`` of it, named ``label`` (shown as the bar's ``step``): a bar opened inside
    the block fills those units as it moves, and ``bar`` advances by ``units`` when the block ends. Lets a bar
    weigh its parts by their expected time rather than count them."""
    step = getattr(bar, "step", None)
    bar.set_postfix(step=label)
    if step is not None:
        step.span = units
    try:
        yield
    finally:
        if step is not None:
            step.span = 1
    bar.update(units)


ELAPSED_TICKS = 1000


@contextmanager
def elapsed_bar(desc: str, expected_seconds: float, every: float = 2.0):
    """A bar for one long call that reports no progress of its own (an ONNX export, a quantization): it moves
    with the time spent, against ``expected_seconds``. It approaches its end without reaching it
    (``1 - exp(-t / expected)``), so on a slower machine it slows down rather than stops or overshoots.

    Reports every ``every`` seconds from a thread; what the listener raises there (a cancel request) is raised
    when the block ends. Without a listener (the command line) it shows nothing."""
    reporter = _REPORTER.get()
    if reporter is None:
        yield
        return
    step = Step(desc, 0, ELAPSED_TICKS)
    stop = threading.Event()
    raised: list[BaseException] = []
    started = time.monotonic()

    def tick() -> None:
        while not stop.wait(every):
            step.done = min(
                ELAPSED_TICKS - 1, int(ELAPSED_TICKS * (1 - math.exp(-(time.monotonic() - started) / expected_seconds)))
            )
            try:
                reporter.emit()
            except BaseException as exc:  # handed to the block's thread, below
                raised.append(exc)
                return

    with reporter.lock:
        reporter.stack.append(step)
    reporter.emit()
    thread = threading.Thread(target=tick, name="visionqc-elapsed-bar", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with reporter.lock:
            reporter.stack.remove(step)
    if raised:
        raise raised[0]
