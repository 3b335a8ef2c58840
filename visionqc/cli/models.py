"""``model list|register|activate|rollback|history|compare``, ``jobs list|cancel`` and ``reinspect``: the registry
of model versions, the training queue and re-running inspections with another version."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from visionqc import config
from visionqc.cli.common import EXIT_OK, EXIT_USER_ERROR


def _registry():
    from visionqc.registry import ModelRegistry

    registry = ModelRegistry(config.data_dir())
    registry.ensure_initialised()
    return registry


def _percent(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def cmd_list(args: argparse.Namespace) -> int:
    registry = _registry()
    active = registry.active()
    for v in registry.versions():
        mark = "*" if active and (v.name, v.version) == (active.name, active.version) else " "
        data = v.dataset["id"] if v.dataset else "—"
        print(
            f"{mark} {v.name + '/' + v.version:<28} {v.kind:<10} {v.source:<8} {v.registered_at:<21} "
            f"by {v.registered_by or '—':<12} dataset {data:<20} "
            f"test balanced accuracy {_percent(v.metrics.get('balanced_accuracy'))}"
        )
    for station in registry.stations():
        chosen = registry.active(station)
        print(f"  station {station!r} uses {chosen.label if chosen else '—'}")
    if config.pinned_model_dir():
        print(f"note: VISIONQC_MODEL pins this process to {config.pinned_model_dir()}", file=sys.stderr)
    return EXIT_OK


def cmd_register(args: argparse.Namespace) -> int:
    version = _registry().register(args.directory, by=args.by, source="imported")
    print(f"registered {version.label} at {version.path}")
    if args.activate:
        _registry().activate(version.name, version.version, by=args.by, action="promote")
        print(f"{version.label} is now the active model")
    return EXIT_OK


def cmd_activate(args: argparse.Namespace) -> int:
    registry = _registry()
    version = registry.find(args.model)
    entry = registry.activate(version.name, version.version, by=args.by, station=args.station, action=args.action)
    scope = f"station {entry['station']!r}" if entry["station"] else "this data folder"
    print(f"{version.label} is now the active model for {scope}")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    registry = _registry()
    if args.to:
        target = registry.find(args.to)
    else:
        choices = registry.rollback_choices(args.station)
        if not choices:
            print("error: no earlier active version to roll back to", file=sys.stderr)
            return EXIT_USER_ERROR
        target = choices[0]
    registry.activate(target.name, target.version, by=args.by, station=args.station, action="rollback")
    print(f"rolled back: {target.label} is the active model again")
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    for e in _registry().activations():
        before = f"{e['previous']['name']}/{e['previous']['version']}" if e.get("previous") else "—"
        where = f" station {e['station']!r}" if e.get("station") else ""
        print(f"{e['at']}  {e['action']:<11} {before} -> {e['name']}/{e['version']}{where}  by {e['by']}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from visionqc.jobs import compare
    from visionqc.store import Store

    registry = _registry()
    baseline, candidate = registry.find(args.baseline), registry.find(args.candidate)
    store = Store(config.data_dir())
    result = compare.compare(store, baseline, candidate, dataset=args.dataset)
    compare.save(store.home, result, baseline, candidate, args.dataset)
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    print(f"{result['images']} images of {result['dataset']}")
    for side in ("baseline", "candidate"):
        s = result[side]
        print(
            f"{s['label']:<24} accuracy {_percent(s['accuracy'])}  balanced accuracy {_percent(s['balanced_accuracy'])}"
            f"  needs review {_percent(s['needs_review_share'])}  {s['images_per_second']} images/s"
        )
        print("    recall: " + ", ".join(f"{c} {_percent(r)}" for c, r in s["recall"].items()))
    print(f"{len(result['disagreements'])} image(s) where they disagree; {result['actions_changed']} action(s) differ")
    return EXIT_OK


def cmd_reinspect(args: argparse.Namespace) -> int:
    from visionqc.filters import InspectionFilter
    from visionqc.jobs.reinspect import reinspect
    from visionqc.model.predict import open_predictor
    from visionqc.store import Store

    version = _registry().find(args.model)
    result = reinspect(
        Store(config.data_dir()),
        open_predictor(version.path),
        InspectionFilter(batches=tuple(args.batch)),
        described=f"batch {', '.join(args.batch)}",
        operator=args.by,
    )
    print(f"batch {result.batch_id}: {result.inspected} re-inspected with {version.label}, {result.failed} failed")
    print(f"  actions changed: {result.actions_changed}; defect labels changed: {result.defects_changed}")
    for row in result.changes.query("action_changed").itertuples(index=False):
        change = f"{row.original_action} -> {row.new_action} ({row.original_defect} -> {row.new_defect})"
        print(f"    {row.file_name}: {change}")
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    from visionqc.jobs import queue
    from visionqc.store import Store

    store = Store(config.data_dir())
    if args.cancel:
        print(f"job {args.cancel}: {queue.cancel(store, args.cancel)}")
        return EXIT_OK
    queue.reconcile(store)
    jobs = queue.jobs_with_progress(store)
    if jobs.empty:
        print("no jobs yet")
    for job in jobs.itertuples(index=False):
        progress = job.progress or {}
        state = job.status
        if job.status == "running" and progress:
            state += f" {100 * progress.get('fraction', 0):.0f}% {progress.get('stage_label', '')}"
        model = f"{job.model_name}/{job.model_version}" if isinstance(job.model_version, str) else job.model_name
        print(f"{job.job_id}  {job.kind:<6} {model or '—':<20} {state}" + (f"  ({job.error})" if job.error else ""))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    by = {"default": getpass.getuser(), "help": "your name, recorded in the audit trail (default: %(default)s)"}
    parser = sub.add_parser(
        "model",
        help="the model registry: list, register, activate, roll back, audit trail, compare",
        description="Models live under VISIONQC_HOME/models as immutable versions; the app and the command line "
        "use the active one (VISIONQC_MODEL, when set, pins a process to a model directory instead). Every switch "
        "is recorded in the audit trail.",
    )
    actions = parser.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    p = actions.add_parser("list", help="every registered version (* = active)")
    p.set_defaults(func=cmd_list)
    p = actions.add_parser("register", help="add a model directory (model.json + model.safetensors) as a version")
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("--activate", action="store_true", help="make it the active model")
    p.add_argument("--by", **by)
    p.set_defaults(func=cmd_register)
    p = actions.add_parser("activate", help="make a version the active model (promote)")
    p.add_argument("model", metavar="NAME[/VERSION]", help="a version; NAME alone means its newest version")
    p.add_argument("--station", help="only for this inspection station")
    p.add_argument("--by", **by)
    p.set_defaults(func=cmd_activate, action="promote")
    p = actions.add_parser("rollback", help="go back to the previously active version (or --to any earlier one)")
    p.add_argument("--to", metavar="NAME/VERSION")
    p.add_argument("--station", help="only for this inspection station")
    p.add_argument("--by", **by)
    p.set_defaults(func=cmd_rollback)
    p = actions.add_parser("history", help="the audit trail of switches, newest first")
    p.set_defaults(func=cmd_history)
    p = actions.add_parser("compare", help="two versions on one labelled dataset, side by side")
    p.add_argument("baseline", metavar="BASELINE", help="NAME/VERSION, e.g. the active model")
    p.add_argument("candidate", metavar="CANDIDATE", help="NAME/VERSION")
    p.add_argument("--dataset", help="NAME or NAME@VERSION (default: the candidate's own test split)")
    p.add_argument("--json", action="store_true", help="print the whole comparison as JSON")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("reinspect", help="classify stored batches again with another model version, into a new batch")
    p.add_argument(
        "--batch", action="append", required=True, metavar="BATCH_ID", help="batch to re-inspect (repeatable)"
    )
    p.add_argument("--model", required=True, metavar="NAME[/VERSION]", help="the registered version to use")
    p.add_argument("--by", **by)
    p.set_defaults(func=cmd_reinspect)

    p = sub.add_parser("jobs", help="training jobs of this data folder: list them, or --cancel one")
    p.add_argument("--cancel", metavar="JOB_ID", help="cancel a queued job, or stop a running one at its next step")
    p.set_defaults(func=cmd_jobs)
