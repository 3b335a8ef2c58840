"""How long does the first UMAP map of a server process take? (Explore, 2,000 embeddings of 1,280 numbers.)

Each configuration runs in a fresh Python process (numba compiles per process), interleaved, ``--rounds`` times:

- ``library default``: umap-learn with its own neighbour search, as the Explore page ran it before;
- ``exact neighbours``: :func:`visionqc.explore.projection.umap_2d` (neighbours computed with numpy), called cold;
- ``after warm-up``: the same, asked for 25 s after :func:`~visionqc.explore.projection.warm_up_umap` started
  (what a lead gets who opens Explore and then picks UMAP);
- baseline: the PCA map of the same embeddings in the same processes.

Prints medians in seconds and the ratio of each to the library default.

    python benchmarks/umap_first_use.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time, warnings
import numpy as np
warnings.simplefilter("ignore")
from visionqc.explore import projection
mode = sys.argv[1]
x = np.random.default_rng(0).normal(size=(2000, 1280)).astype(np.float32)
start = time.perf_counter(); projection.pca_2d(x); pca = time.perf_counter() - start
if mode == "after warm-up":
    projection.warm_up_umap(); time.sleep(25)
start = time.perf_counter()
if mode == "library default":
    import umap
    umap.UMAP(n_components=2, n_neighbors=15, metric="cosine", init="pca", random_state=0).fit_transform(x)
else:
    projection.umap_2d(x)
print(json.dumps({"umap": time.perf_counter() - start, "pca": pca}))
"""

MODES = ("library default", "exact neighbours", "after warm-up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"load average before: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    pca: list[float] = []
    for _ in range(args.rounds):
        for mode in MODES:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, mode], cwd=ROOT, check=True, capture_output=True, text=True
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            times[mode].append(result["umap"])
            pca.append(result["pca"])
    default = statistics.median(times["library default"])
    print(f"PCA map (baseline, same processes): {statistics.median(pca):.2f} s")
    for mode in MODES:
        median = statistics.median(times[mode])
        print(f"  first UMAP map, {mode:<17} {median:6.1f} s   {median / default:5.2f}x the library default")
    print(f"load average after: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
