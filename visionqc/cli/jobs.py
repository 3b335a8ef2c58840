"""``python -m visionqc train --dataset NAME``: the Models page's training job, started and followed from a terminal."""

from __future__ import annotations

import argparse
import sys
import time

from visionqc import config
from visionqc.cli.common import EXIT_OK, EXIT_USER_ERROR

POLL_S = 1.0
EXIT_CANCELLED = 130


def _line(progress: dict | None) -> str:
    if not progress:
        return "waiting for the worker…"
    eta = progress.get("eta_seconds")
    info = progress.get("info") or {}
    score = info.get("val_balanced_accuracy")
    parts = [
        f"{100 * progress.get('fraction', 0):5.1f}%",
        f"stage {progress.get('stage_number')}/{progress.get('stages')}: {progress.get('stage_label')}",
        progress.get("detail") or "",
        f"validation balanced accuracy {score:.3f}" if isinstance(score, int | float) else "",
        f"about {eta / 60:.1f} min left" if isinstance(eta, int | float) else "",
    ]
    return "  ".join(p for p in parts if p)


def follow(store, job_id: str, quiet: bool = False) -> dict:
    """Print the job's progress (a line when it moves, at most every few seconds) until it ends; Ctrl-C cancels it."""
    from visionqc.jobs import queue
    from visionqc.jobs.progress import read_progress

    last, last_at = None, 0.0
    try:
        while True:
            job = store.job(job_id)
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            line = _line(read_progress(store.home, job_id))
            if not quiet and line != last and time.monotonic() - last_at > 3:
                print(f"[{job['status']}] {line}", file=sys.stderr, flush=True)
                last, last_at = line, time.monotonic()
            if job["status"] == "queued":
                queue.reconcile(store)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        print(f"\ncancelling job {job_id} …", file=sys.stderr)
        queue.cancel(store, job_id)
        while (job := store.job(job_id))["status"] in ("queued", "running"):
            time.sleep(POLL_S)
        return job


def train_job(args: argparse.Namespace) -> int:
    from visionqc.jobs import queue
    from visionqc.jobs.training_job import KIND, TrainingOptions, estimate_seconds
    from visionqc.registry import ModelRegistry
    from visionqc.registry.registry import check_name
    from visionqc.store import Store

    if args.data is not None or args.out is not None:
        print("error: --dataset trains on a stored dataset; leave out DATA and --out", file=sys.stderr)
        return EXIT_USER_ERROR
    store = Store(config.data_dir())
    dataset = store.dataset(args.dataset)
    if dataset is None:
        print(f"error: there is no dataset {args.dataset!r} (see: python -m visionqc dataset list)", file=sys.stderr)
        return EXIT_USER_ERROR
    name = check_name(args.name or dataset["name"])
    options = TrainingOptions(
        views=args.views,
        epochs=args.epochs,
        phase2=args.phase2,
        phase2_epochs=args.phase2_epochs,
        repeats=args.repeats,
        max_per_class=args.max_per_class,
        seed=args.seed,
        conv_head=args.conv_head,
        export=args.export,
    )
    registry = ModelRegistry(store.home)
    registry.ensure_initialised()
    params = {"name": name, "dataset": dataset["dataset_id"], "options": options.to_json()}
    job_id = queue.submit(store, KIND, params, by=args.by, dataset_id=dataset["dataset_id"], model_name=name)
    minutes = estimate_seconds(dataset["class_counts"], options, registry) / 60
    print(f"job {job_id}: training {name} on {dataset['dataset_id']} (about {minutes:.0f} min)", file=sys.stderr)
    if args.detach:
        print(job_id)
        return EXIT_OK
    job = follow(store, job_id, quiet=args.quiet)
    if job["status"] == "succeeded":
        model = job["result"]["model"]
        print(f"registered {model['name']} v{model['version']}; compare it: python -m visionqc model compare "
              f"{registry.active().name}/{registry.active().version} {model['name']}/{model['version']}")  # fmt: skip
        return EXIT_OK
    print(f"job {job_id} {job['status']}: {job['error']}", file=sys.stderr)
    return EXIT_CANCELLED if job["status"] == "cancelled" else EXIT_USER_ERROR
