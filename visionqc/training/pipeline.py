"""Plumbing shared by feature extraction and evaluation: progress bars on stderr and decoding that overlaps the
network (the next chunk is prepared in a worker thread, as in ``Predictor.predict_stream``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm


def progress_bar(iterable=None, **kwargs):
    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, leave=False, **kwargs)


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
