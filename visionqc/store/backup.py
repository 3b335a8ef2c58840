"""Backing up the inspection database while the app runs, and putting a backup back.

A backup is one DuckDB file. It is copied under a read-only connection: DuckDB's file lock then keeps every
other process from writing until the copy is done (they wait and retry, as for any other import), so the
copy is consistent. A write-ahead log beside the file is copied with it and folded into the copy, and the
copy is read back completely before it takes its name, so a backup that exists is one that opens.

Photos and thumbnails are not in the database: they live in the data folder's ``images/`` and ``thumbs/``
folders, named by content and never changed, so any file copy of those folders, at any time, is a backup
of them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from visionqc.store.database import Database
from visionqc.store.errors import StoreError, corruption_problem, translate
from visionqc.store.integrity import read_every_table
from visionqc.store.schema import DB_FILE


@dataclass(frozen=True)
class BackupReport:
    path: Path
    size: int  # bytes
    inspections: int
    batches: int


def _checked_copy_of(path: Path) -> BackupReport:
    """Open the file ``path`` (folding in a write-ahead log beside it), read every table; the counts."""
    con = duckdb.connect(str(path))
    try:
        counts = read_every_table(con)
    finally:
        con.close()
    if "schema_version" not in counts:
        raise StoreError(f"{path} is a DuckDB file but not a VisionQC database (it has no schema_version table)")
    return BackupReport(path, path.stat().st_size, counts.get("inspections", 0), counts.get("batches", 0))


def backup(database: Database, out: str | Path) -> BackupReport:
    """Copy the database to the new file ``out`` (never overwritten), consistently, while others may use it."""
    if database.url is not None:
        raise StoreError(
            f"the inspections are on the PostgreSQL server {database.location}, not in a file: back them up with "
            "the server's own tools (pg_dump), and the image folder with the plant's file backup"
        )
    out = Path(out).absolute()
    if out.exists():
        raise StoreError(f"{out} exists already; a backup never overwrites a file, so choose a new name")
    if not out.parent.is_dir():
        raise StoreError(f"the folder {out.parent} for the backup does not exist")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp_wal = Path(f"{tmp}.wal")
    try:
        with database.connect(read_only=True):  # holds the file lock: nothing writes while the copy is taken
            shutil.copyfile(database.db_path, tmp)
            wal = Path(f"{database.db_path}.wal")
            if wal.exists():
                shutil.copyfile(wal, tmp_wal)
        report = _checked_copy_of(tmp)
        os.replace(tmp, out)
    except (OSError, duckdb.Error) as exc:
        error = translate(exc, out.parent, out, doing="writing the backup")
        raise (error or StoreError(f"the backup to {out} failed: {exc}")) from exc
    finally:
        for leftover in (tmp, tmp_wal):
            leftover.unlink(missing_ok=True)
    return BackupReport(out, report.size, report.inspections, report.batches)


@dataclass(frozen=True)
class RestoreReport:
    restored: BackupReport
    database: Path
    previous: Path | None  # where the file that was replaced was kept


def restore(home: str | Path, backup_file: str | Path) -> RestoreReport:
    """Put ``backup_file`` in place as the database of the data folder ``home``, after checking it.

    The file it replaces (damaged or not) is kept beside it as ``visionqc.duckdb.replaced-<UTC time>``.
    Stop the app and every ``inspect`` run first: they must not write to the file being replaced."""
    home, backup_file = Path(home), Path(backup_file)
    if not backup_file.is_file():
        raise StoreError(f"there is no backup file {backup_file}")
    target = home / DB_FILE
    home.mkdir(parents=True, exist_ok=True)
    staged = home / f".restore.{os.getpid()}.tmp"
    try:
        shutil.copyfile(backup_file, staged)
        checked = _checked_copy_of(staged)  # a damaged backup is refused before anything is replaced
    except (OSError, duckdb.Error) as exc:
        staged.unlink(missing_ok=True)
        Path(f"{staged}.wal").unlink(missing_ok=True)
        problem = corruption_problem(exc)
        if problem is not None:
            raise StoreError(f"the backup {backup_file} is damaged too: {problem}; try an older backup") from exc
        raise (translate(exc, home, target, doing="restoring") or StoreError(f"cannot restore: {exc}")) from exc
    previous = None
    if target.exists():
        previous = home / f"{DB_FILE}.replaced-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        os.replace(target, previous)
        wal = Path(f"{target}.wal")
        if wal.exists():
            os.replace(wal, Path(f"{previous}.wal"))
    os.replace(staged, target)
    return RestoreReport(
        BackupReport(backup_file, checked.size, checked.inspections, checked.batches), target, previous
    )
