"""``dataset create|import|merge|export|list``: the datasets training reads, kept in the store."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from visionqc import config
from visionqc.cli.common import EXIT_OK, EXIT_USER_ERROR

NOT_A_PART = {"leave-out": "leave out", "reject-class": "reject class"}


def _store():
    from visionqc.store import Store

    return Store(config.data_dir())


def _report(row: dict, warnings: list[str]) -> None:
    counts = ", ".join(f"{c} {n}" for c, n in row["class_counts"].items())
    print(f"dataset {row['dataset_id']}: {row['images']} images ({counts})")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def cmd_create(args: argparse.Namespace) -> int:
    from visionqc.datasets.building import create_from_reviews
    from visionqc.filters import InspectionFilter

    if not args.from_reviews:
        print("error: say where the images come from: --from-reviews (or use `dataset import`)", file=sys.stderr)
        return EXIT_USER_ERROR
    selection = InspectionFilter(
        batches=tuple(args.batch or ()),
        stations=tuple(args.station or ()),
        tags_all=tuple(args.tag or ()),
        model_names=tuple(args.model_name or ()),
        reviewed=None if args.include_unreviewed else True,
    )
    row, warnings = create_from_reviews(
        _store(), args.name, selection, by=args.by, not_a_part=NOT_A_PART[args.not_a_part], include=args.include or []
    )
    _report(row, warnings)
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    from visionqc.datasets.archive import import_dataset

    def progress(done: int, total: int) -> None:
        if not args.quiet and (done % 250 == 0 or done == total):
            print(f"  checked {done}/{total} images", file=sys.stderr, flush=True)

    row, warnings = import_dataset(
        _store(), args.name, args.path, by=args.by, skip_unreadable=args.skip_unreadable, progress=progress
    )
    _report(row, warnings)
    return EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    from visionqc.datasets.building import merge_datasets

    row, warnings = merge_datasets(_store(), args.name, args.datasets, by=args.by)
    _report(row, warnings)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from visionqc.datasets.export import export_dataset, export_zip

    store = _store()
    if args.out.suffix.lower() == ".zip":
        if args.out.exists():
            print(f"error: {args.out} already exists", file=sys.stderr)
            return EXIT_USER_ERROR
        args.out.write_bytes(export_zip(store, args.name))
    else:
        export_dataset(store, args.name, args.out)
    print(f"dataset {args.name} written to {args.out}; train on it with: python -m visionqc train {args.out} --out DIR")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from visionqc.datasets.checks import check_classes

    rows = _store().datasets()
    if rows.empty:
        print("no datasets yet: `python -m visionqc dataset import NAME PATH` or `dataset create NAME --from-reviews`")
        return EXIT_OK
    for row in rows.itertuples(index=False):
        counts = ", ".join(f"{c} {n}" for c, n in row.class_counts.items())
        made = f"{row.created_at:%Y-%m-%d %H:%M} UTC by {row.created_by or '—'}"
        print(f"{row.dataset_id:<28} {row.images:>6} images  {row.source:<8} {made}  [{counts}]")
        for warning in check_classes(row.class_counts, row.no_defect_class).warnings:
            print(f"{'':<28}   warning: {warning}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "dataset",
        help="datasets for training: create from reviews, import, merge, export, list",
        description="A dataset is a named, versioned, immutable list of labelled images kept in the store "
        "(VISIONQC_HOME). Creating one under an existing name makes its next version (NAME@2); NAME alone means "
        "the newest version.",
    )
    actions = parser.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    by = {"default": getpass.getuser(), "help": "your name, recorded with the dataset (default: %(default)s)"}

    p = actions.add_parser("create", help="a dataset from reviewed inspections (with History's filters)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--from-reviews", action="store_true", help="take the images and labels from reviewed inspections")
    p.add_argument("--batch", action="append", metavar="BATCH_ID", help="only these batches (repeatable)")
    p.add_argument("--station", action="append", help="only batches from these stations (repeatable)")
    p.add_argument("--tag", action="append", help="only inspections carrying every one of these tags (repeatable)")
    p.add_argument("--model-name", action="append", help="only inspections by these models (repeatable)")
    p.add_argument(
        "--include-unreviewed", action="store_true", help="also take inspections nobody reviewed (their prediction)"
    )
    p.add_argument(
        "--not-a-part",
        choices=list(NOT_A_PART),
        default="leave-out",
        help="photos reviewed as 'not a part': leave them out, or keep them as the reject class not_a_part "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--include",
        action="append",
        metavar="DATASET",
        help="merge in a stored dataset, e.g. the original training set",
    )
    p.add_argument("--by", **by)
    p.set_defaults(func=cmd_create)

    p = actions.add_parser(
        "import",
        help="import a labelled folder, zip, CSV manifest or COCO JSON",
        description="Import labelled images in any layout `train` reads (class folders with an optional labels.csv, "
        "a CSV manifest, COCO JSON, images/ with masks/ or boxes/), from a folder, a file or a zip. Refused, with "
        "the reason and nothing stored: an empty archive, a class folder without images, a single class, a class "
        "with one image, unreadable images (listed; --skip-unreadable imports the rest).",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--skip-unreadable", action="store_true", help="leave unreadable images out instead of refusing")
    p.add_argument("--by", **by)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_import)

    p = actions.add_parser("merge", help="a new dataset from several stored ones (later ones win on shared images)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("datasets", nargs="+", metavar="DATASET")
    p.add_argument("--by", **by)
    p.set_defaults(func=cmd_merge)

    p = actions.add_parser("export", help="write a dataset as a folder (or .zip) that `train` reads")
    p.add_argument("name", metavar="NAME", help="NAME (newest version) or NAME@VERSION")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new folder, or a path ending in .zip")
    p.set_defaults(func=cmd_export)

    p = actions.add_parser("list", help="every dataset with its class counts and warnings")
    p.set_defaults(func=cmd_list)
