"""Real faults for the fault tests: damaged database files, a full disk, a read-only folder.

The tests run as root in CI, and root ignores file permissions, so a chmod'ed folder is not read-only for
them. A read-only *mount* is read-only for root too: :func:`read_only_mount` bind-mounts a folder read-only,
and :func:`small_disk` mounts a small tmpfs that really fills up. Both need ``mount`` (root, or the
CAP_SYS_ADMIN capability); where it is refused, the test skips with the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from visionqc.config import PROJECT_ROOT
from visionqc.store.schema import DB_FILE

HEADER_BYTES = 3 * 4096  # DuckDB: the main header and two database headers come before the first block
BLOCK_BYTES = 262144  # DuckDB's default block size


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def truncate(home: Path) -> None:
    """Cut the database file off in the middle of a block, as an interrupted copy does."""
    path = home / DB_FILE
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2 + 1234)


def damage_a_block(home: Path, table: str = "inspections") -> int:
    """Overwrite 64 bytes inside a block holding ``table``'s rows, as a failing disk does; returns its offset."""
    path = home / DB_FILE
    con = duckdb.connect(str(path), read_only=True)
    try:
        (block,) = con.execute(
            f"SELECT min(block_id) FROM pragma_storage_info('{table}') WHERE block_id >= 0"
        ).fetchone()
    finally:
        con.close()
    offset = HEADER_BYTES + int(block) * BLOCK_BYTES + 2000
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(bytes(range(64)))
    return offset


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def read_only_mount(source: Path, mount_point: Path) -> Iterator[Path]:
    """``source`` seen read-only at ``mount_point`` (a read-only bind mount: read-only for root too)."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mount_point.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(source), str(mount_point))
    try:
        _mount("-o", "remount,bind,ro", str(mount_point))
        yield mount_point
    finally:
        _unmount(mount_point)


@contextlib.contextmanager
def small_disk(mount_point: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` at ``mount_point``; ``grow(mount_point, n)`` makes it bigger."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mount_point.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mount_point))
    try:
        yield mount_point
    finally:
        _unmount(mount_point)


def grow(mount_point: Path, size_bytes: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size_bytes}", str(mount_point)], check=True)


def visionqc(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m visionqc ARGS`` with ``VISIONQC_HOME=home``, as a user runs it; waits for it."""
    env = {**os.environ, "VISIONQC_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "visionqc", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def inspect_in_background(home: Path, model_dir: Path, folder: Path) -> subprocess.Popen:
    """``python -m visionqc inspect FOLDER --quiet`` into ``home``, started and not waited for."""
    env = {**os.environ, "VISIONQC_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "visionqc", "inspect", "--model", str(model_dir), str(folder), "--quiet"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
