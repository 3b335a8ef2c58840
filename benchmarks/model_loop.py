"""The model loop end to end on real data, through the same library calls the Models page makes.

    python3 benchmarks/model_loop.py [--views 3] [--no-phase2] [--review wrong|all] [--out results.json]

Magnetic-tile is split once (stratified by defect class, seed 0, as the shipped model's card): the untouched test
split T (15 %, 202 images) is never inspected, reviewed or trained on; the rest is the training split, of which a
stratified third R1 is the labelled archive a QC lead starts with and the other two thirds R2 is production.

1. Import R1 as a dataset; train v1 on it (a training job, the Models page's options); promote v1.
2. Inspect R2 with v1 (one batch); a reviewer corrects every wrong defect label to the truth (``--review all``:
   and confirms the right ones), as in the review queue.
3. Create a dataset from the reviewed inspections plus R1; train v2 on it (a training job); compare v1 and v2 on T
   (imported as a dataset of its own) and on v2's own test split; promote v2; re-inspect the production batch with
   v2 and count what changed.

Prints every number and writes them as JSON (``--out``); docs/MODEL_RESULTS.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from visionqc import config  # noqa: E402
from visionqc.datasets.archive import import_dataset  # noqa: E402
from visionqc.datasets.building import create_from_reviews  # noqa: E402
from visionqc.filters import InspectionFilter  # noqa: E402
from visionqc.intake.uploads import UploadFile  # noqa: E402
from visionqc.jobs import compare, queue  # noqa: E402
from visionqc.jobs.progress import read_progress  # noqa: E402
from visionqc.jobs.reinspect import reinspect  # noqa: E402
from visionqc.jobs.training_job import KIND, TrainingOptions  # noqa: E402
from visionqc.model.predict import Predictor  # noqa: E402
from visionqc.registry import ModelRegistry  # noqa: E402
from visionqc.store import Store  # noqa: E402
from visionqc.store.ingest import run_batch  # noqa: E402
from visionqc.training.datasets import load_dataset, stratified_split  # noqa: E402

MAGNETIC_TILE = config.SHARED_DATA / "magnetic-tile"


def link_subset(dataset, indices, root: Path) -> Path:
    """``images/`` + ``masks/`` symlinks to a subset of magnetic-tile (no copies): the layout import reads."""
    for i in indices:
        sample = dataset.samples[i]
        for sub, source in (
            ("images", sample.path),
            ("masks", MAGNETIC_TILE / "masks" / sample.defect / f"{sample.path.stem}.png"),
        ):
            target = root / sub / sample.defect / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_file():
                target.symlink_to(source)
    return root


def train(store: Store, name: str, dataset: str, options: TrainingOptions) -> tuple[dict, dict]:
    """A training job, followed to its end; returns the job and the longest wait between progress moves."""
    params = {"name": name, "dataset": dataset, "options": options.to_json()}
    job_id = queue.submit(store, KIND, params, by="benchmark", dataset_id=dataset, model_name=name)
    start, last, last_move, gaps = time.perf_counter(), -1.0, time.perf_counter(), []
    while (job := store.job(job_id))["status"] in ("queued", "running"):
        fraction = (read_progress(store.home, job_id) or {}).get("fraction", -1)
        if job["status"] == "running" and fraction > last:
            if last >= 0:
                gaps.append(time.perf_counter() - last_move)
            last, last_move = fraction, time.perf_counter()
        time.sleep(0.5)
    if job["status"] != "succeeded":
        raise SystemExit(f"training {name} {job['status']}: {job['error']}")
    return job, {
        "minutes": round((time.perf_counter() - start) / 60, 1),
        "longest_progress_gap_s": round(max(gaps, default=0), 1),
    }


def summary(result: dict) -> dict:
    return {
        side: {
            k: result[side][k]
            for k in ("label", "accuracy", "balanced_accuracy", "macro_f1", "needs_review_share", "recall")
        }
        for side in ("baseline", "candidate")
    } | {"images": result["images"], "dataset": result["dataset"], "disagreements": len(result["disagreements"])}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--no-phase2", dest="phase2", action="store_false")
    parser.add_argument("--review", choices=["wrong", "all"], default="wrong")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    options = TrainingOptions(views=args.views, phase2=args.phase2)
    full = load_dataset(MAGNETIC_TILE)
    labels = full.labels("defect")
    train_idx, val_idx, test_idx = stratified_split(labels, 0.15, 0.15, 0)
    pool = np.sort(np.concatenate([train_idx, val_idx]))
    _, _, third = stratified_split(labels[pool], 0.0, 1 / 3, 1)
    r1 = pool[third]
    r2 = np.setdiff1d(pool, r1)
    out: dict = {
        "split": {"R1 (labelled archive)": len(r1), "R2 (production)": len(r2), "T (untouched test)": len(test_idx)},
        "options": options.to_json(),
        "review": args.review,
        "load_average_at_start": list(os.getloadavg()),
    }
    with tempfile.TemporaryDirectory(prefix="vq-loop-") as tmp:
        tmp = Path(tmp)
        home = tmp / "home"
        os.environ["VISIONQC_HOME"] = str(home)
        os.environ.pop("VISIONQC_MODEL", None)
        registry, store = ModelRegistry(home), Store(home)
        registry.ensure_initialised()
        import_dataset(store, "mt-third", link_subset(full, r1, tmp / "r1"), by="benchmark")
        import_dataset(store, "mt-test", link_subset(full, test_idx, tmp / "t"), by="benchmark")

        _, out["train_v1"] = train(store, "mt-loop", "mt-third@1", options)
        v1 = registry.get("mt-loop", "1")
        registry.activate(v1.name, v1.version, by="benchmark")
        production = [full.samples[i] for i in r2]
        start = time.perf_counter()
        batch = run_batch(
            store,
            Predictor(v1.path),
            [UploadFile(f"{s.defect}/{s.path.name}", s.path.read_bytes()) for s in production],
        )
        out["inspect_production_s"] = round(time.perf_counter() - start, 1)
        truth = {f"{s.defect}/{s.path.name}": s for s in production}
        rows = store.batch_rows(batch.batch_id)
        wrong = 0
        for row in rows.itertuples():
            sample = truth[row.file_name]
            wrong += row.pred_defect != sample.defect
            if row.pred_defect != sample.defect or args.review == "all":
                labels = {"defect": sample.defect, "severity": sample.severity, "location": sample.location}
                store.review([row.inspection_id], "benchmark", "correct", **labels)
        out["production"] = {"inspected": len(rows), "v1_wrong_and_corrected": wrong}
        dataset, _ = create_from_reviews(
            store,
            "mt-loop-2",
            InspectionFilter(batches=(batch.batch_id,), reviewed=True),
            by="benchmark",
            include=["mt-third"],
        )
        out["dataset_v2"] = {"images": int(dataset["images"]), "class_counts": dataset["class_counts"]}
        _, out["train_v2"] = train(store, "mt-loop", dataset["dataset_id"], options)
        v2 = registry.get("mt-loop", "2")
        on_test = compare.compare(store, v1, v2, dataset="mt-test")
        compare.save(home, on_test, v1, v2, "mt-test")
        out["compare_on_untouched_test"] = summary(on_test)
        out["compare_on_v2_test_split"] = summary(compare.compare(store, v1, v2))
        shipped = registry.get("magnetic-tile", "1")
        out["shipped_on_untouched_test"] = summary(compare.compare(store, shipped, v2, dataset="mt-test"))["baseline"]
        registry.activate(v2.name, v2.version, by="benchmark")
        again = reinspect(
            store, Predictor(v2.path), InspectionFilter(batches=(batch.batch_id,)), described="production"
        )
        out["reinspect_production"] = {"inspected": again.inspected, "actions_changed": again.actions_changed,
                                       "defects_changed": again.defects_changed}  # fmt: skip
        out["active_after"] = registry.active().label
    out["load_average_at_end"] = list(os.getloadavg())
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
