"""Prediction throughput on 1080p JPEGs for each runtime, against eager PyTorch's network alone, in one process.

    python3 benchmarks/predict_throughput.py [--images 192] [--model models/magnetic-tile]
    python3 benchmarks/predict_throughput.py --sweep onnx      # choose threads, batch size, decode workers

Baseline: eager PyTorch's network alone (BatchNorm fused, channels-last, its default batch) on the photos
already decoded and normalised. Then, per runtime (torch, onnx, int8 where the card has the graph): the network
alone, and the whole predictor end to end (JPEG decode in draft mode + resize + normalise + network + heads + OOD
+ policy; with a graph, one batch per core in flight, each decoded and run by its own thread), each as images/s
and as a ratio to the baseline. Targets on
2 cores: end to end >= 1.6x the baseline with fp32 ONNX, >= 2.5x with int8 (where its parity allows it).
``--sweep`` measures the end-to-end predictor over batches in parallel, thread counts, batch sizes and decode workers.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from visionqc import config
from visionqc.model.predict import Predictor
from visionqc.model.runtime import RUNTIMES, allowed_runtimes


def make_1080p_jpegs(count: int) -> list[bytes]:
    """Real defect photos scaled to 1920x1080 when ../shared/data is present, else textured synthetic ones."""
    sources = sorted((config.SHARED_DATA / "magnetic-tile" / "images").glob("*/*.jpg"))[:16]
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        if sources:
            im = Image.open(sources[i % len(sources)]).convert("RGB").resize((1920, 1080), Image.Resampling.BILINEAR)
        else:
            im = Image.fromarray(rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8), "RGB")
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def time_network(predictor: Predictor, arrays: list[np.ndarray]) -> float:
    """Images/s of the network alone, on photos already decoded and normalised."""
    batches = [arrays[i : i + predictor.batch_size] for i in range(0, len(arrays), predictor.batch_size)]
    for batch in batches[:2]:  # warm-up: oneDNN and ONNX Runtime prepare their kernels on the first calls
        predictor.forward_arrays(batch)
    start = time.perf_counter()
    for batch in batches:
        predictor.forward_arrays(batch)
    return len(arrays) / (time.perf_counter() - start)


def time_end_to_end(predictor: Predictor, jpegs: list[bytes]) -> float:
    list(predictor.predict_stream(enumerate(jpegs[: 2 * predictor.batch_size])))  # warm-up
    start = time.perf_counter()
    results = list(predictor.predict_stream(enumerate(jpegs)))
    elapsed = time.perf_counter() - start
    assert all(not isinstance(r, Exception) for _, _, r in results)
    return len(jpegs) / elapsed


def best_of(runs: int, measure) -> float:
    # A noisy neighbour slows a run, it never speeds one up: keep the best.
    return max(measure() for _ in range(runs))


def sweep(model: Path, runtime: str, jpegs: list[bytes], baseline: float, runs: int) -> None:
    print(f"\nsweep for {runtime} (end to end, ratio to the baseline):")
    settings = [
        {"parallel_batches": 1, "threads": threads, "batch_size": batch, "decode_workers": workers}
        for threads, batch, workers in itertools.product((1, 2), (8, 16), (1, 2))
    ] + [{"parallel_batches": n, "threads": 1, "batch_size": batch} for n in (2, 3) for batch in (2, 4, 8)]
    for setting in settings:
        predictor = Predictor(model, runtime=runtime, **setting)
        rate = best_of(runs, lambda p=predictor: time_end_to_end(p, jpegs))
        label = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in setting.items())
        print(f"  {label}: {rate:6.1f} images/s  {rate / baseline:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--model", type=Path, default=config.model_dir())
    parser.add_argument("--runs", type=int, default=2, help="measure each this many times, keep the best")
    parser.add_argument("--sweep", choices=[r for r in RUNTIMES if r != "torch"])
    args = parser.parse_args()

    import torch

    reference = Predictor(args.model, runtime="torch")
    print(f"model {args.model}; torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"runtimes the card allows: {', '.join(allowed_runtimes(reference.card))}")
    jpegs = make_1080p_jpegs(args.images)
    print(f"{len(jpegs)} JPEGs of 1920x1080, mean {np.mean([len(j) for j in jpegs]) / 1e3:.0f} kB")
    arrays = [reference.preprocess(reference.decode(data).image) for data in jpegs]
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    baseline = best_of(args.runs, lambda: time_network(reference, arrays))
    print(f"\nbaseline: eager PyTorch, network alone, batch {reference.batch_size}: {baseline:6.1f} images/s")
    if args.sweep:
        sweep(args.model, args.sweep, jpegs, baseline, args.runs)
        return
    graphs = reference.card.raw.get("runtimes", {}).get("graphs", {})
    predictors = {"torch": reference}
    for runtime in RUNTIMES[1:]:
        if runtime in graphs:
            predictors[runtime] = Predictor(args.model, runtime=runtime)
        else:
            print(f"{runtime}: the card records no {runtime} graph")
    # Rounds interleave the baseline and every runtime, so a burst of load elsewhere hits them alike.
    network = {r: 0.0 for r in predictors}
    end_to_end = {r: 0.0 for r in predictors}
    for _ in range(args.runs):
        baseline = max(baseline, time_network(reference, arrays))
        for runtime, predictor in predictors.items():
            network[runtime] = max(network[runtime], time_network(predictor, arrays))
            end_to_end[runtime] = max(end_to_end[runtime], time_end_to_end(predictor, jpegs))
    print(f"baseline after {args.runs + 1} rounds: {baseline:6.1f} images/s")
    print(f"{'runtime':8} {'network alone':>22} {'end to end':>22}")
    for runtime in predictors:
        print(
            f"{runtime:8} {network[runtime]:8.1f} images/s {network[runtime] / baseline:5.2f}x "
            f"{end_to_end[runtime]:8.1f} images/s {end_to_end[runtime] / baseline:5.2f}x"
        )
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("targets: end to end >= 1.6x the baseline with onnx, >= 2.5x with int8 (when its parity allows it)")


if __name__ == "__main__":
    main()
