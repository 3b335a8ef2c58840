"""``history``: the History page's CSV export from the command line, with the same filters and columns (for a
nightly job that feeds another system)."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from visionqc import config
from visionqc.cli.common import EXIT_OK, EXIT_STORE_ERROR, EXIT_USER_ERROR
from visionqc.labels import stored_all

YES_NO = {"yes": True, "no": False}


def history_filter(args: argparse.Namespace):
    """The command's options as the History page's filter (the one filter model)."""
    from visionqc.filters import InspectionFilter
    from visionqc.store.analytics import configured_timezone

    return InspectionFilter(
        date_from=args.date_from,
        date_to=args.date_to,
        timezone=args.timezone or configured_timezone(),
        defects=tuple(args.defect),
        severities=stored_all(args.severity),
        locations=stored_all(args.location),
        actions=tuple(args.action),
        confidence_min=args.confidence_min,
        confidence_max=args.confidence_max,
        needs_review=YES_NO.get(args.needs_review),
        reviewed=YES_NO.get(args.reviewed),
        unusable=YES_NO.get(args.unusable),
        batches=tuple(args.batch),
        file_name=args.file_name or "",
        tags_all=tuple(args.tag),
        tags_any=tuple(args.any_tag),
        tags_none=tuple(args.not_tag),
        model_names=tuple(args.model),
        stations=tuple(args.station),
        operators=tuple(args.operator),
        deleted="only" if args.deleted else "hide",
    )


def cmd_history(args: argparse.Namespace) -> int:
    from visionqc.store import Store, StoreError

    flt = history_filter(args)  # a bad time zone or day is a message (ValueError), before the database opens
    try:
        store = Store(config.data_dir())
        if args.out == "-":
            sys.stdout.buffer.write(store.export_csv(flt, sort=args.sort, descending=not args.ascending))
            return EXIT_OK
        store.export_csv(flt, Path(args.out), sort=args.sort, descending=not args.ascending)
        total = store.count(flt)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE_ERROR
    except OSError as exc:
        print(f"error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"{total:,} inspection(s) written to {args.out} (times in {flt.timezone})", file=sys.stderr)
    return EXIT_OK


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day: {text!r}; write it as YYYY-MM-DD") from None


def _share(text: str) -> float:
    value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("a confidence is between 0 and 1 (or 0% and 100%)")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "history",
        help="export inspections as CSV with History's filters (for a nightly job)",
        description="Write every inspection that matches the filters as CSV: the same rows and columns as the "
        "History page's 'Download all matching inspections as CSV' (UTF-8 with BOM, confidences to 4 places, "
        "times in ISO 8601 with their zone, no cell a spreadsheet would run as a formula). Filters combine with "
        "AND; a repeated option means any of its values (OR); labels are the effective ones (the latest review, "
        "else the prediction). Reads the database under VISIONQC_HOME.",
    )
    p.add_argument("--out", required=True, metavar="FILE.csv", help="the CSV file to write, or - for stdout")
    p.add_argument("--from", dest="date_from", type=_day, metavar="DAY", help="first day (YYYY-MM-DD), inclusive")
    p.add_argument("--to", dest="date_to", type=_day, metavar="DAY", help="last day (YYYY-MM-DD), inclusive")
    p.add_argument(
        "--timezone", help="IANA zone of the days and of the times written (default: VISIONQC_TIMEZONE, else local)"
    )
    for option, help_text in (
        ("--station", "inspection station"),
        ("--operator", "operator of the batch"),
        ("--action", "action (Pass, Hold, Rework, Reject, Review)"),
        ("--defect", "defect type"),
        ("--severity", "severity (— for none)"),
        ("--location", "location (— for none)"),
        ("--batch", "batch id"),
        ("--model", "model name"),
        ("--tag", "tag the inspection must carry (all of them)"),
        ("--any-tag", "tags of which the inspection carries at least one"),
        ("--not-tag", "tag the inspection must not carry"),
    ):
        p.add_argument(option, action="append", default=[], metavar="VALUE", help=f"{help_text}; repeatable")
    for option, help_text in (
        ("--needs-review", "flagged by the model for review"),
        ("--reviewed", "reviewed by a person"),
        ("--unusable", "marked 'not a part / unusable image'"),
    ):
        p.add_argument(option, choices=list(YES_NO), help=f"{help_text}: yes or no (default: both)")
    p.add_argument("--file-name", help="part of the file name (case-insensitive)")
    p.add_argument("--confidence-min", type=_share, help="lowest defect confidence, 0-1 or a percentage")
    p.add_argument("--confidence-max", type=_share, help="highest defect confidence, 0-1 or a percentage")
    p.add_argument("--deleted", action="store_true", help="export only soft-deleted inspections")
    p.add_argument(
        "--sort",
        default="created_at",
        help="column to sort by, e.g. created_at, file_name, confidence, defect, action (default: %(default)s)",
    )
    p.add_argument("--ascending", action="store_true", help="oldest / smallest first (default: newest first)")
    p.set_defaults(func=cmd_history)
