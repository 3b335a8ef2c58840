"""``train GOOD --out DIR --anomaly``: an anomaly model from good photos only (no labelled defects needed)."""

from __future__ import annotations

import argparse
import shlex
import sys

from visionqc import config
from visionqc.cli.common import EXIT_OK, EXIT_USER_ERROR
from visionqc.model.anomaly_settings import DEFAULT_PERCENTILE, GOOD_FLAGGED_CHOICES, AnomalySettings


def add_anomaly_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("anomaly model (good photos only)")
    group.add_argument(
        "--anomaly",
        action="store_true",
        help="DATA is a folder or zip of good (defect-free) photos, at least 10: learn what good looks like and "
        "flag what is not (no labelled defects needed)",
    )
    group.add_argument(
        "--defects",
        metavar="PATH",
        help="with --anomaly: a folder or zip of a few defective photos, used only to set the threshold "
        "(default: a percentile of held-out good photos' scores)",
    )
    group.add_argument(
        "--good-percentile",
        type=float,
        default=DEFAULT_PERCENTILE,
        choices=sorted(GOOD_FLAGGED_CHOICES, reverse=True),
        metavar="{" + ",".join(f"{p:g}" for p in sorted(GOOD_FLAGGED_CHOICES, reverse=True)) + "}",
        help="with --anomaly and no --defects: how many good parts may be flagged by mistake; the threshold is "
        "this percentile of the held-out good photos' scores: "
        + ", ".join(f"{p:g} = {share}" for p, share in sorted(GOOD_FLAGGED_CHOICES.items(), reverse=True))
        + " (default: %(default)g)",
    )
    group.add_argument(
        "--input-size",
        type=int,
        default=AnomalySettings.size,
        help="with --anomaly: input side in pixels (default: %(default)s)",
    )
    group.add_argument(
        "--bank-size",
        type=int,
        default=AnomalySettings.bank_size,
        help="with --anomaly: memory-bank patches (default: %(default)s)",
    )


def train_anomaly(args: argparse.Namespace) -> int:
    from visionqc.training.anomaly import AnomalyDataError, fit_anomaly, read_photos

    if args.data is None or args.out is None:
        print("error: give the good photos (a folder or zip) and --out DIR", file=sys.stderr)
        return EXIT_USER_ERROR
    registry = None
    name = args.name or args.out.name
    if args.register:
        from visionqc.registry import ModelRegistry
        from visionqc.registry.registry import RegistryError, check_name

        registry = ModelRegistry(config.data_dir())
        registry.ensure_initialised()
        try:
            name = check_name(name)
        except RegistryError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
    settings = AnomalySettings(size=args.input_size, bank_size=args.bank_size, seed=args.seed)
    good = read_photos([args.data], settings.size)
    defects = read_photos([args.defects], settings.size) if args.defects else None
    for label, photos in (("good", good), ("defect", defects)):
        for file, reason in photos.failures if photos else []:
            print(f"skipped {label} file {file}: {reason}", file=sys.stderr)
    command = "python -m visionqc " + " ".join(shlex.quote(a) for a in (args.argv or []))
    try:
        card = fit_anomaly(
            good,
            args.out,
            name=name,
            version=args.version or (registry.next_version(name) if registry else "1"),
            defects=defects,
            settings=settings,
            no_defect_label=args.no_defect_class or "good",
            percentile=args.good_percentile,
            command=command,
        )
    except AnomalyDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    section, validation = card["anomaly"], card["metrics"]["validation"]
    print(f"anomaly threshold {section['decision']['threshold']:.3f}: {section['threshold_rule']}")
    line = f"held-out good photos flagged: {validation['good_flagged_share']:.1%}"
    if "image_auroc" in validation:
        line += f"; labelled defects caught: {validation['defects_caught_share']:.1%}"
        line += f" (image AUROC {validation['image_auroc']:.3f})"
    print(line)
    print(f"trained in {card['training']['timings_seconds']['total']:.0f} s; model written to {args.out}")
    if registry is not None:
        version = registry.register(args.out, by=args.by, source="trained", kind="anomaly")
        print(f"registered as {version.label}; make it active with: python -m visionqc model activate {version.name}")
    return EXIT_OK
