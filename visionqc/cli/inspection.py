"""``predict`` (classify and print) and ``inspect`` (classify into the database)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from visionqc import config
from visionqc.cli.common import EXIT_BAD_MODEL, EXIT_NOTHING_READ, EXIT_OK, EXIT_STORE_ERROR, load_predictor


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

    predictor = load_predictor(args)
    if predictor is None:
        return EXIT_BAD_MODEL

    def progress(done: int, total: int | None) -> None:
        if not args.quiet and done % 50 == 0:
            print(f"... {done} file(s) processed", file=sys.stderr, flush=True)

    try:
        store = Store(config.data_dir())
        result = run_batch(
            store,
            predictor,
            iter_paths(args.paths),
            station=args.station,
            operator=args.operator,
            note=args.note,
            source="cli",
            progress=progress,
            batch_id=args.resume,
        )
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE_ERROR
    summary = result.summary
    print(f"batch {result.batch_id} in {store.db_path}")
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
    p.add_argument("--model", type=Path, help=MODEL_HELP)
    p.add_argument("--policy", type=Path, help="action policy JSON file (see README: Action policy)")
    p.add_argument("--resume", metavar="BATCH_ID", help="add to this open batch, skipping files it already holds")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_inspect)
