"""Command line: ``python -m visionqc predict|inspect|train|evaluate``.

Each subcommand is a small function that parses its arguments and calls into the library; the
argument parser is built last, in :func:`build_parser`, as in torchvision's reference scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from visionqc import config

EXIT_OK = 0
EXIT_NOTHING_READ = 2
EXIT_BAD_MODEL = 3


def _load_predictor(args: argparse.Namespace):
    from visionqc.checkpoint import ModelLoadError
    from visionqc.predict import ActionPolicy, Predictor

    policy = ActionPolicy.from_file(args.policy) if getattr(args, "policy", None) else None
    try:
        return Predictor(args.model, policy=policy)
    except ModelLoadError as exc:
        print(f"error: cannot load model {args.model}: {exc}", file=sys.stderr)
        return None


def cmd_predict(args: argparse.Namespace) -> int:
    from visionqc.uploads import UploadFailure, UploadFile, iter_paths

    predictor = _load_predictor(args)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m visionqc",
        description="VisionQC: offline visual quality control. Classify product photos by defect, severity, "
        "location and action; store inspections; train and evaluate models. Everything runs on the CPU, offline.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "predict",
        help="classify images and print one result per image",
        description="Classify images (files, folders searched recursively, or zip archives) and print one "
        "result per image. With --json each line is a JSON object with every task's label, confidence and "
        "class probabilities, needs_review with its reason, the action and the embedding. Files that cannot "
        "be read are reported with their reason; the exit code is non-zero only if no image could be read.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or .zip archives")
    p.add_argument("--model", type=Path, default=config.model_dir(), help="model directory (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image (JSON Lines)")
    p.add_argument(
        "--no-embedding",
        dest="embedding",
        action="store_false",
        help="leave the 1280-number embedding out of the JSON",
    )
    p.add_argument("--policy", type=Path, help="action policy JSON file (see README: Action policy)")
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:  # user-caused problems (bad policy file, bad dataset) -> message, not traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
