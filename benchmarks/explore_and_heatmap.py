"""Speed of the Explore page with 50,000 stored inspections and of one heatmap, with ratios against baselines
measured in the same run.

    python benchmarks/explore_and_heatmap.py [--rows 50000] [--threads 2]

- Explore: the page script run through Streamlit's AppTest (everything the server does for one render:
  sample query, 2,000 embeddings, projection, thumbnails, chart spec), cold (first render: projection
  computed) and warm (cached projection), against the same page over 1,000 inspections. Target: < 3 s.
- Heatmap: one heatmap for a real magnetic-tile image (shipped model), against the plain forward pass for
  the same image (classification). Target: < 300 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _seed_module():
    spec = importlib.util.spec_from_file_location("vq_seed", ROOT / "benchmarks" / "seed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_with_embeddings(home: Path, rows: int) -> None:
    """Synthetic inspections (benchmarks/seed.py) plus clustered 1280-d embeddings, and thumbnails for the
    rows the map shows (a real tile photo, so tooltips carry real JPEG bytes)."""
    import pyarrow as pa
    from PIL import Image

    from visionqc.explore.projection import DEFAULT_MAP_POINTS
    from visionqc.filters import InspectionFilter
    from visionqc.intake.imaging import thumbnail_jpeg

    store = _seed_module().seed_inspections(home, rows, days=90)
    rng = np.random.default_rng(0)
    with store.connect() as con:
        meta = con.execute("SELECT inspection_id, pred_defect FROM inspections ORDER BY inspection_id").df()
    centres = {d: rng.normal(size=1280).astype(np.float32) for d in meta["pred_defect"].unique()}
    for start in range(0, len(meta), 10_000):
        chunk = meta.iloc[start : start + 10_000]
        vectors = np.stack([centres[d] for d in chunk["pred_defect"]]) + rng.normal(
            scale=0.6, size=(len(chunk), 1280)
        ).astype(np.float32)
        table = pa.table(
            {
                "inspection_id": pa.array(chunk["inspection_id"].to_numpy(), pa.int64()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), 1280).cast(
                    pa.list_(pa.float32())
                ),
            }
        )
        with store.connect() as con:
            con.register("bench_embeddings", table)
            con.execute("INSERT INTO embeddings SELECT * FROM bench_embeddings")
    # Thumbnails for the sample the map draws (the sample is deterministic).
    shown, _, _ = store.map_points(InspectionFilter(), max_points=DEFAULT_MAP_POINTS, seed=0)
    photo = next((ROOT.parent / "shared" / "data" / "magnetic-tile" / "images" / "blowhole").glob("*.jpg"), None)
    image = Image.open(photo).convert("RGB") if photo else Image.new("RGB", (200, 300), (90, 90, 90))
    thumb = thumbnail_jpeg(image)
    with store.connect() as con:
        shas = con.execute(
            "SELECT inspection_id, sha256 FROM inspections WHERE inspection_id IN (SELECT unnest(?::BIGINT[]))",
            [shown["inspection_id"].astype(int).tolist()],
        ).fetchall()
        for _, sha in shas:
            rel = f"thumbs/{sha[:2]}/{sha}.jpg"
            (home / rel).parent.mkdir(parents=True, exist_ok=True)
            (home / rel).write_bytes(thumb)
        con.executemany(
            "INSERT INTO images VALUES (?, 200, 300, 'JPEG', 1000, ?, ?, now()::TIMESTAMP) ON CONFLICT DO NOTHING",
            [(sha, f"images/{sha[:2]}/{sha}.jpg", f"thumbs/{sha[:2]}/{sha}.jpg") for _, sha in shas],
        )


def time_page(page: str, runs: int) -> list[float]:
    """Seconds per AppTest run of ``page``: the first is cold (a fresh AppTest; the model is cached per process)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300)
    at.run()
    times = []
    for i in range(runs):
        start = time.perf_counter()
        if i == 0:
            at.switch_page(page).run()
        else:
            at.run()
        times.append(time.perf_counter() - start)
        if at.exception:
            raise RuntimeError(f"{page} failed: {at.exception}")
    return times


def _explore_times(rows: int, tmp: str) -> tuple[float, float]:
    home = Path(tmp) / f"visionqc-data-{rows}"
    start = time.perf_counter()
    seed_with_embeddings(home, rows)
    print(f"seeded {rows:,} inspections with embeddings in {time.perf_counter() - start:.1f} s")
    os.environ["VISIONQC_HOME"] = str(home)
    times = time_page("pages/4_Explore.py", 4)
    return times[0], statistics.median(times[1:])


def bench_explore(rows: int, baseline_rows: int = 1_000) -> None:
    """Explore on ``rows`` stored inspections against the same page on ``baseline_rows``: the ratio shows
    that sampling keeps the page's cost independent of the store's size."""
    with tempfile.TemporaryDirectory(prefix="vq-bench-explore-") as tmp:
        base_cold, base_warm = _explore_times(baseline_rows, tmp)
        cold, warm = _explore_times(rows, tmp)
    print(
        f"Explore, {baseline_rows:,} inspections (baseline): first render {base_cold * 1000:6.0f} ms, "
        f"rerun {base_warm * 1000:6.0f} ms"
    )
    print(
        f"Explore, {rows:,} inspections:            first render {cold * 1000:6.0f} ms "
        f"({cold / base_cold:.2f}x), rerun {warm * 1000:6.0f} ms ({warm / base_warm:.2f}x)"
    )
    print(f"target < 3 s: {'met' if cold < 3.0 else 'NOT met'} (first render {cold:.2f} s)")


def bench_heatmap(repeat: int) -> None:
    import torch
    from PIL import Image

    from visionqc import config
    from visionqc.model.heatmaps import HeatmapCache, heatmap_for_image
    from visionqc.model.predict import Predictor

    predictor = Predictor(config.model_dir())
    photo = sorted((config.SHARED_DATA / "magnetic-tile" / "images" / "break").glob("*.jpg"))[0]
    image = Image.open(photo).convert("RGB")

    def timed(fn) -> float:
        fn()  # warm-up
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    forward = timed(lambda: predictor.predict_images([image]))
    heat = timed(lambda: heatmap_for_image(predictor, image))
    with tempfile.TemporaryDirectory() as tmp:
        cache = HeatmapCache(tmp)
        cache.get_or_compute(predictor, image, "ab" * 32)
        cached = timed(lambda: cache.get_or_compute(predictor, image, "ab" * 32))
    print(f"torch threads: {torch.get_num_threads()}; image {image.size[0]}x{image.size[1]}")
    print(f"classification forward pass (baseline): {forward * 1000:6.1f} ms")
    print(f"heatmap:                                {heat * 1000:6.1f} ms  ({heat / forward:.1f}x the forward pass)")
    print(f"heatmap from the cache:                 {cached * 1000:6.1f} ms  ({cached / forward:.2f}x)")
    print(f"target < 300 ms: {'met' if heat < 0.3 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--only", choices=["explore", "heatmap"])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.only != "explore":
        bench_heatmap(args.repeat)
    if args.only != "heatmap":
        bench_explore(args.rows)


if __name__ == "__main__":
    main()
