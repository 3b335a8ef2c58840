"""``predict`` (classify and print), ``inspect`` (classify into the database) and ``report`` (a batch's printable
lot report as PDF)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from visionqc import config
from visionqc.cli.common import (
    EXIT_BAD_MODEL,
    EXIT_NOTHING_READ,
    EXIT_OK,
    EXIT_STORE_ERROR,
    EXIT_USER_ERROR,
    add_runtime_option,
    load_predictor,
)


def cmd_predict(args: argparse.Namespace) -> int:
    from visionqc.intake.uploads import UploadFailure, UploadFile, iter_paths

    predictor = load_predictor(args)
    if predictor is None:
        return EXIT_BAD_MODEL
    failures: list[UploadFailure] = []

    def readable():
        for item in iter_paths(args.paths):
            if isinstance(item, UploadFile):
                yield item.name, item.data
            else:
                failures.append(item)

    ok = 0
    for name, decoded, result in predictor.predict_stream(readable()):
        if isinstance(result, Exception):
            failures.append(UploadFailure(name, str(result)))
            continue
        ok += 1
        record = {"file": name, "width": decoded.width, "height": decoded.height}
        record.update(result.to_json(include_embedding=args.embedding))
        record["model"] = {"name": predictor.model_name, "version": predictor.model_version}
        if args.json:
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            parts = [f"{name}: {result.action}", f"defect={result.defect.label} ({result.defect.confidence:.2f})"]
            for task, res in result.tasks.items():
                if task != "defect" and res.label is not None:
                    parts.append(f"{task}={res.label} ({res.confidence:.2f})")
            if result.needs_review:
                parts.append(f"needs review: {result.review_reason}")
            print("  ".join(parts), flush=True)
    for failure in failures:
        if args.json:
            print(json.dumps({"file": failure.name, "error": failure.reason}, ensure_ascii=False), flush=True)
        print(f"could not read {failure.name}: {failure.reason}", file=sys.stderr)
    print(f"{ok} image(s) classified, {len(failures)} failed", file=sys.stderr)
    return EXIT_OK if ok else EXIT_NOTHING_READ


def cmd_inspect(args: argparse.Namespace) -> int:
    from visionqc.intake.uploads import iter_paths
    from visionqc.store import Store, StoreError
    from visionqc.store.ingest import run_batch

    try:  # first: a damaged or read-only database is reported before the model loads, and never written
        store = Store(config.data_dir())
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE_ERROR
    predictor = load_predictor(args)
    if predictor is None:
        return EXIT_BAD_MODEL

    def progress(done: int, total: int | None) -> None:
        if not args.quiet and done % 50 == 0:
            print(f"... {done} file(s) processed", file=sys.stderr, flush=True)

    try:
        result = run_batch(
            store,
            predictor,
            iter_paths(args.paths),
            station=args.station,
            operator=args.operator,
            note=args.note,
            part_number=args.part_number,
            lot=args.lot,
            source="cli",
            progress=progress,
            batch_id=args.resume,
        )
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.batch_id is not None:
            _how_to_resume(args, store, exc)
        return EXIT_STORE_ERROR
    summary = result.summary
    print(f"batch {result.batch_id} in {store.location}")
    skipped = f" (skipped {result.skipped} already in the batch)" if result.skipped else ""
    print(f"  new inspections: {result.inspected}{skipped}")
    for action, n in summary["by_action"].items():
        print(f"  {action}: {n}")
    print(f"  needs review: {summary['needs_review']}")
    print(f"  duplicates (seen before, not counted again): {len(result.duplicates)}")
    for dup in result.duplicates:
        print(f"    {dup.file_name} = inspection {dup.inspection_id}")
    print(f"  failed: {len(result.failures)}")
    for failure in result.failures:
        print(f"could not read {failure.file_name}: {failure.reason}", file=sys.stderr)
    return EXIT_OK if result.inspected or result.duplicates or result.skipped else EXIT_NOTHING_READ


def _how_to_resume(args: argparse.Namespace, store, exc) -> None:
    """After an interrupted batch: how much space to free (disk full), what was saved, the command to go on."""
    from visionqc.store import StoreCorruptError, StoreError, StoreSpaceError
    from visionqc.store.errors import format_bytes, space_needed

    if isinstance(exc, StoreCorruptError):
        return  # nothing to resume until the database is restored
    if isinstance(exc, StoreSpaceError):
        sizes = [p.stat().st_size for p in _input_files(args.paths)]
        print(
            f"This run's {len(sizes)} file(s) take {format_bytes(sum(sizes))}: free at least "
            f"{format_bytes(space_needed(sum(sizes), len(sizes)))} on that disk (the photos are stored as copies, "
            "with thumbnails and database rows beside them).",
            file=sys.stderr,
        )
    try:
        saved = len(store.recorded_names(exc.batch_id))
    except StoreError:
        saved = None
    kept = f"{saved} file(s) of batch {exc.batch_id} are saved" if saved is not None else f"batch {exc.batch_id}"
    command = ["python", "-m", "visionqc", *_without_resume(args.argv), "--resume", exc.batch_id]
    print(f"{kept}; continue it, skipping what it holds, with:\n  {shlex.join(command)}", file=sys.stderr)


def _without_resume(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            kept.append(arg)
    return kept


def _input_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        files.extend(sorted(path.rglob("*")) if path.is_dir() else [path])
    return [p for p in files if p.is_file()]


def cmd_report(args: argparse.Namespace) -> int:
    from visionqc.filters import is_timezone
    from visionqc.reporting.lot_report import batch_report_data, lot_report_pdf
    from visionqc.store import Store, StoreError
    from visionqc.store.analytics import configured_timezone

    timezone = args.timezone or configured_timezone()
    if not is_timezone(timezone):
        print(f"error: unknown time zone {timezone!r}; use an IANA name such as Europe/Berlin", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        report = batch_report_data(Store(config.data_dir()), args.batch_id, timezone=timezone)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE_ERROR
    out = args.out or Path(f"visionqc-lot-report-{args.batch_id}.pdf")
    out.write_bytes(lot_report_pdf(report))
    summary = report.summary
    print(
        f"lot report for batch {args.batch_id}: {summary['inspected']} inspected, "
        f"{len(report.listed)} rejects and holds listed, {summary['unusable']} unusable photos -> {out}"
    )
    return EXIT_OK


MODEL_HELP = "model directory (default: the active model of the registry in VISIONQC_HOME, or VISIONQC_MODEL)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify images and print one result per image",
        description="Classify images (files, folders searched recursively, or zip archives) and print one "
        "result per image. With --json each line is a JSON object with every task's label, confidence and "
        "class probabilities, needs_review with its reason, the action and the embedding. Files that cannot "
        "be read are reported with their reason; the exit code is non-zero only if no image could be read.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or .zip archives")
    p.add_argument("--model", type=Path, help=MODEL_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object per image (JSON Lines)")
    p.add_argument(
        "--no-embedding",
        dest="embedding",
        action="store_false",
        help="leave the 1280-number embedding out of the JSON",
    )
    p.add_argument("--policy", type=Path, help="action policy JSON file (see README: Action policy)")
    add_runtime_option(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "inspect",
        help="classify images into the inspection database (VISIONQC_HOME)",
        description="Classify images (files, folders searched recursively, or zip archives) as one batch and "
        "store every inspection in the database under VISIONQC_HOME (default ./visionqc-data), the one the app "
        "reads; both may run at the same time. Prints counts by action, needs review, duplicates (images "
        "inspected before, by SHA-256, which are not classified or counted again) and each file that could "
        "not be read, with its reason. --resume continues a batch that was interrupted.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or .zip archives")
    p.add_argument("--station", help="inspection station, e.g. 'Line 2'")
    p.add_argument("--operator", help="who ran the batch")
    p.add_argument("--note", help="free-text note stored with the batch")
    p.add_argument("--part-number", help="part number of what is inspected (printed on the lot report)")
    p.add_argument("--lot", help="lot or production order (printed on the lot report)")
    p.add_argument("--model", type=Path, help=MODEL_HELP)
    p.add_argument("--policy", type=Path, help="action policy JSON file (see README: Action policy)")
    p.add_argument("--resume", metavar="BATCH_ID", help="add to this open batch, skipping files it already holds")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_runtime_option(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "report",
        help="write a batch's printable lot report (PDF)",
        description="Write the lot report of one batch as a PDF: batch, station, operator, part number, lot, "
        "model and version, times with their zone, counts by action (unusable photos apart), every Reject and "
        "Hold with its thumbnail, labels, confidences and reviewer, and a sign-off line. The same report as the "
        "app's 'Download lot report (PDF)'. Reads the database under VISIONQC_HOME.",
    )
    p.add_argument("batch_id", metavar="BATCH_ID", help="the batch, as printed by inspect (or shown in the app)")
    p.add_argument("--out", type=Path, help="the PDF file to write (default: visionqc-lot-report-BATCH_ID.pdf)")
    p.add_argument(
        "--timezone",
        help="IANA time zone for the times printed (default: VISIONQC_TIMEZONE, else this computer's zone)",
    )
    p.set_defaults(func=cmd_report)
