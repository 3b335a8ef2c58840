"""``backup`` and ``restore``: a consistent copy of the inspection database, and putting one back."""

from __future__ import annotations

import argparse
from pathlib import Path

from visionqc import config
from visionqc.cli.common import EXIT_OK


def cmd_backup(args: argparse.Namespace) -> int:
    from visionqc.store import Store
    from visionqc.store.backup import backup
    from visionqc.store.errors import format_bytes

    store = Store(config.data_dir())  # checked on open: a damaged database is not backed up
    report = backup(store, args.out)
    print(
        f"backup of {store.db_path} written to {report.path} ({format_bytes(report.size)}: "
        f"{report.inspections} inspection(s) in {report.batches} batch(es)); every table was read back"
    )
    print(f"photos and thumbnails are not in it: copy {store.home / 'images'} and {store.home / 'thumbs'} too")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    from visionqc.store import Store
    from visionqc.store.backup import restore

    report = restore(config.data_dir(), args.backup)
    Store(report.database.parent)  # checks it once more, and migrates a backup made by an older VisionQC
    print(
        f"restored {report.restored.path} ({report.restored.inspections} inspection(s) in "
        f"{report.restored.batches} batch(es)) as {report.database}"
    )
    if report.previous is not None:
        print(f"the file it replaced is kept as {report.previous}; delete it once you no longer need it")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backup",
        help="copy the inspection database (VISIONQC_HOME) to a file, safely while the app runs",
        description="Copy the inspection database under VISIONQC_HOME to a new file, consistently, while the "
        "app and inspect runs go on (they wait a moment for the copy). The database is checked before the copy "
        "and the copy is read back completely before it takes its name. Photos and thumbnails live in the data "
        "folder's images/ and thumbs/ folders and are never changed: copy those folders with any tool.",
    )
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the backup file to write (must not exist)")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser(
        "restore",
        help="put a backup in place as the inspection database (stop the app first)",
        description="Check a backup made by `backup`, then make it the inspection database under VISIONQC_HOME. "
        "The file it replaces is kept beside it as visionqc.duckdb.replaced-<time>. Stop the app and every "
        "inspect run first.",
    )
    p.add_argument("backup", type=Path, metavar="FILE", help="a backup file written by `python -m visionqc backup`")
    p.set_defaults(func=cmd_restore)
