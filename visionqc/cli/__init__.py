"""Command line: ``python -m visionqc predict|inspect|history|report|train|evaluate|dataset|model|jobs|users|...``.

Each subcommand is a small function that parses its arguments and calls into the library; each module
registers its subcommands on the parser, which is assembled last, in :func:`build_parser`, as in
torchvision's reference scripts.
"""

from __future__ import annotations

import argparse
import sys

from visionqc.cli import datasets, history, inspection, maintenance, models, training, users
from visionqc.cli.common import EXIT_STORE_ERROR, EXIT_USER_ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m visionqc",
        description="VisionQC: offline visual quality control. Classify product photos by defect, severity, "
        "location and action; store inspections; train and evaluate models. Everything runs on the CPU, offline.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspection.register(sub)
    history.register(sub)
    training.register(sub)
    maintenance.register(sub)
    datasets.register(sub)
    models.register(sub)
    users.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from visionqc.store import StoreError

    try:
        return args.func(args)
    except ValueError as exc:  # user-caused problems (bad policy file, bad dataset, unknown model) -> message
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except StoreError as exc:  # a busy, damaged, read-only or full data folder: what to do, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE_ERROR
