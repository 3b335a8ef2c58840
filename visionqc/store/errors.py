"""The store's errors, each written for the person who has to act on it, and the one place that recognises a
database driver's or the operating system's error as one of them.

Every error a user can cause or fix (a busy, damaged, read-only or full data folder) is a :class:`StoreError`
whose ``str()`` says what failed, what it means and what to do. The command line prints it; the app shows it
at the page boundary (:mod:`visionqc.ui.errors`). Anything else is a bug and propagates unchanged.
"""

from __future__ import annotations

import errno
import getpass
import os
import re
import shutil
from pathlib import Path

RESTORE_HELP = (
    "restore your latest backup (`python -m visionqc restore BACKUP_FILE`; README, “Backup and restore”), "
    "or start a new data folder by setting VISIONQC_HOME to an empty folder"
)


class StoreError(RuntimeError):
    """A problem with the database the user can act on; ``str(err)`` says what to do.

    ``batch_id`` is set by :func:`visionqc.store.ingest.run_batch` when the error interrupted a batch, so the
    caller can tell the user how to continue it."""

    batch_id: str | None = None


class StoreBusyError(StoreError):
    """Another process kept the database locked for longer than the store is willing to wait."""


class StoreCorruptError(StoreError):
    """The database file is damaged or is not a database; nothing was written to it."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(
            f"The inspection database {path} is damaged: {problem}. VisionQC stopped before writing anything to "
            f"it, and leaves the file as it is. To go on, {RESTORE_HELP}."
        )


class StoreReadOnlyError(StoreError):
    """The data folder or the database cannot be written (a read-only mount, or no write permission)."""

    def __init__(self, home: Path, reason: str, doing: str = "saving", *, browsable: bool = True):
        self.home, self.reason = Path(home), reason
        super().__init__(
            f"The data folder {home} is read-only ({reason}), so {doing} is not possible; nothing was changed."
            f"{' Inspections can still be browsed.' if browsable else ''} Saving needs write permission for user "
            f"{_user()} on the folder and on every file in it: make it writable (remount it read-write, or give "
            "that user write permission), or set VISIONQC_HOME to a writable folder."
        )


class StoreSpaceError(StoreError):
    """The disk holding the data folder is full."""

    def __init__(self, home: Path, target: str | Path):
        self.home = Path(home)
        self.free_bytes = free_bytes(self.home)
        super().__init__(
            f"The disk is full: VisionQC could not write {target} ({format_bytes(self.free_bytes)} free on the "
            f"disk holding {home}). Nothing was lost: everything saved before the disk filled is in the database, "
            "which is consistent, and the write that failed left nothing behind."
        )


def format_bytes(count: int | None) -> str:
    if count is None:
        return "unknown space"
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def space_needed(photo_bytes: int, photos: int) -> int:
    """Bytes a batch needs on the data folder's disk, generously: a copy of each photo, about 32 KB per photo
    for its thumbnail and database rows (the embedding alone is 5 KB), and 8 MB for the database to grow (it
    grows in 256 KB blocks, and each chunk passes through the write-ahead log first). Measured: 40 photos of
    1.1 MB took 6.3 MB; this says 10.4 MB."""
    return photo_bytes + photos * 32 * 1024 + 8 * 1024 * 1024


def free_bytes(path: Path) -> int | None:
    """Free bytes on the disk holding ``path`` (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def read_only_reason(path: Path) -> str:
    """Why ``path`` cannot be written, in words: a read-only file system or missing permission."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "its file system is mounted read-only"
    except OSError:
        pass
    return f"user {_user()} has no write permission"


# --- recognising errors -----------------------------------------------------------------------------
_SPACE = ("No space left on device", "Disk quota exceeded")
_PERMISSION = ("Read-only file system", "Permission denied", "Operation not permitted")
_CORRUPT = ("Corrupt database file", "Could not read enough bytes", "not a valid DuckDB database file")
_LOCKED = ("Could not set lock", "Conflicting lock", "different configuration than existing connections")


def is_lock_error(exc: BaseException) -> bool:
    """Another process (or another mode in this one) holds the file: wait and try again."""
    return any(text in str(exc) for text in _LOCKED)


def corruption_problem(exc: BaseException, path: Path | None = None) -> str | None:
    """What looks wrong with the file ``path``, in words, when ``exc`` is a driver's report of a damaged file."""
    text = str(exc)
    if "not a valid DuckDB database file" in text:
        return "it does not start like a DuckDB database (it is empty, or something else was written over it)"
    match = re.search(r"Could not read enough bytes.*?from location (\d+)", text)
    if match:
        try:
            size = f"{path.stat().st_size:,} bytes" if path is not None else "fewer bytes"
        except OSError:
            size = "fewer bytes"
        return (
            f"it is cut off (its data goes on past byte {int(match.group(1)):,}, but the file has {size}), "
            "for example by an interrupted copy or a full disk"
        )
    match = re.search(r"Corrupt database file.*?location (\d+)", text)
    if match:
        return f"the block at byte {int(match.group(1)):,} does not match its checksum: the disk, or a copy, damaged it"
    if "Corrupt database file" in text:
        return "part of it does not match its checksum"
    return None


def translate(exc: BaseException, home: Path, db_path: Path, doing: str = "saving") -> StoreError | None:
    """The :class:`StoreError` that ``exc`` (a driver error or an :class:`OSError`) means, or ``None`` when
    it is none of them (a bug, to propagate as it is)."""
    if isinstance(exc, StoreError):
        return exc
    text = str(exc)
    code = exc.errno if isinstance(exc, OSError) else None
    if code in (errno.ENOSPC, errno.EDQUOT) or any(t in text for t in _SPACE):
        target = exc.filename if isinstance(exc, OSError) and exc.filename else _file_in(text, db_path)
        return StoreSpaceError(home, target)
    if code in (errno.EROFS, errno.EACCES, errno.EPERM) or any(t in text for t in _PERMISSION):
        return StoreReadOnlyError(home, read_only_reason(home), doing)
    problem = corruption_problem(exc, db_path)
    if problem is not None:
        return StoreCorruptError(db_path, problem)
    return None


def _file_in(text: str, db_path: Path) -> str:
    match = re.search(r'file "([^"]+)"', text)
    return match.group(1) if match else f"the database {db_path}"
