"""A lock file beside the DuckDB file that one process holds from opening the database until it has closed it.

DuckDB locks its own file, but with duckdb 2.0.1 that lock alone does not keep two processes' writes whole:
when two processes take turns opening, writing and closing one file, an occasional committed transaction of
one of them is gone afterwards (measured here: two processes each committing 1,500 five-row transactions lost
5 to 10 rows in 4 of 6 runs; none in 5 runs with duckdb 1.5.6, and none in 3 runs with this lock around
``connect`` .. ``close``). The handover is the gap: DuckDB lets the next process in before the closing one has
finished with the file and its write-ahead log. Holding an ``flock`` on ``visionqc.duckdb.lock`` from before
``duckdb.connect`` until after ``close`` returns closes that gap for every VisionQC process.

Inside one process every thread's connection shares one DuckDB instance, so the lock is counted: the first
connection takes it, the last close releases it. Read-only connections take it shared (several readers may
read at once, as DuckDB allows); writers take it exclusively. A folder where the lock file cannot be created
(read-only media) has no writer to fear: connections there go without it.

Waiting is fair: ``flock`` is not (a process that closes and reopens at once, as ``inspect`` does chunk after
chunk, can take the lock again before a waiting process's next try, for minutes). So a process that found the
lock taken holds a second lock, the turn (``visionqc.duckdb.lock.turn``), while it keeps trying; a process that
does not hold the turn may take the lock only while nobody holds the turn. The one waiting goes next; the turn is
given back once it has the lock, or when it stops waiting (:func:`give_up_turn`).

The kernel drops both locks when their process dies, so a killed ``inspect`` never leaves the database locked.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class _Held:
    __slots__ = ("fd", "users")

    def __init__(self, fd: int | None) -> None:
        self.fd, self.users = fd, 0


_HELD: dict[str, _Held] = {}


def _key(db_path: Path) -> str:
    """One key per file however it is spelled (relative, through a symlink): a second descriptor of the lock file
    in this process would be locked out by the first (flock locks belong to the open file, not the process)."""
    return str(db_path.resolve())


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


_TURNS: dict[str, int] = {}  # key -> descriptor of the turn file this process holds while it waits


def turn_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock.turn")


def _flock(fd: int, mode: int) -> bool | None:
    """Lock ``fd`` without waiting: True, False when another holds it, None where the file system has no flock."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _my_turn(key: str, db_path: Path) -> bool:
    """Whether this process may try the lock now: it holds the turn, or takes it (nobody else is waiting)."""
    if key in _TURNS:
        return True
    try:
        fd = os.open(turn_path(db_path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError:
        return True  # no turn file (read-only folder): nothing to be fair about
    taken = _flock(fd, fcntl.LOCK_EX)
    if taken is False:
        os.close(fd)
        return False
    _TURNS[key] = fd  # held until this process has the lock (or no flock here: then it locks nothing)
    return True


def has_turn(db_path: Path) -> bool:
    """Whether this process is the one waiting for the lock (it goes next: it may poll often)."""
    return _key(db_path) in _TURNS


def give_up_turn(db_path: Path) -> None:
    """Stop waiting for the lock on ``db_path``: let the next process have its turn."""
    fd = _TURNS.pop(_key(db_path), None)
    if fd is not None:
        os.close(fd)


def try_acquire(db_path: Path, *, shared: bool) -> bool:
    """Take this process's share of the lock on ``db_path`` without waiting; False when another process holds
    it, or another process waits for it and goes first (keep trying: this process now waits its turn). Call under
    the caller's instance lock (not thread-safe on its own)."""
    key = _key(db_path)
    held = _HELD.get(key)
    if held is None:
        try:
            fd = os.open(lock_path(db_path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError:
            fd = None  # a read-only folder: nothing can write there, and nothing to lock
        if fd is not None:
            if not _my_turn(key, db_path):
                os.close(fd)
                return False
            taken = _flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            if taken is False:
                os.close(fd)  # the turn stays ours: the holder's next open waits for us
                return False
            if taken is None:  # a file system without flock: DuckDB's own lock is all there is
                os.close(fd)
                fd = None
            give_up_turn(db_path)
        held = _HELD[key] = _Held(fd)
    held.users += 1
    return True


def release(db_path: Path) -> None:
    """Give back one share taken by :func:`try_acquire`; the last one unlocks the file. Call after closing the
    connection, under the caller's instance lock."""
    key = _key(db_path)
    held = _HELD.get(key)
    if held is None:
        return
    held.users -= 1
    if held.users <= 0:
        del _HELD[key]
        if held.fd is not None:
            os.close(held.fd)  # closing the descriptor releases the flock
