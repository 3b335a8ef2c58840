"""Magnetic tile: ``train`` with ``--conv-head off`` against ``--conv-head auto`` (the default) on the same split
seeds, no time budget, no export, no repeated splits; both runs of a seed share one feature extraction (the same
crops: the same seed). Prints one JSON line per run (test accuracy and balanced accuracy of the defect task,
severity and location accuracy, whether the conv head was kept, its validation score against the linear heads',
seconds without the extraction after the first run of a seed).

    python benchmarks/magnetic_tile_convhead.py ../shared/data/magnetic-tile 0,1,2,3,4

Any dataset ``train`` reads, e.g. NEU's spread over other splits with the default only (its boxes need the
severity thresholds of docs/MODEL_RESULTS.md):

    python benchmarks/magnetic_tile_convhead.py ../shared/data/neu-det 1,2 --modes auto --severity-thresholds 0.2,0.45
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from elpv import SharedFeatures  # noqa: E402

from visionqc.training import trainer  # noqa: E402
from visionqc.training.config import TrainConfig  # noqa: E402
from visionqc.training.datasets import load_dataset  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("data", type=Path)
parser.add_argument("seeds", help="split seeds, e.g. 0,1,2,3,4")
parser.add_argument("--modes", default="off,auto", help="--conv-head modes to run (default: %(default)s)")
parser.add_argument("--severity-thresholds", help="as train's option, e.g. 0.2,0.45 for NEU")
args = parser.parse_args()
thresholds = tuple(float(v) for v in args.severity_thresholds.split(",")) if args.severity_thresholds else None
ds = load_dataset(args.data, **({"severity_thresholds": thresholds} if thresholds else {}))
# Both runs of a seed ask for the same extraction (its random crops follow the seed): the second gets the first's.
shared = SharedFeatures()
trainer.extract_features = shared
for seed in [int(s) for s in args.seeds.split(",")]:
    shared.caches.clear()  # a new seed draws other crops
    for mode in args.modes.split(","):
        cfg = TrainConfig(seed=seed, repeats=0, export=False, progress=False, conv_head=mode, time_budget=None)
        with tempfile.TemporaryDirectory() as out:
            t0 = time.time()
            card = trainer.train(ds, out, cfg)
        t = card["metrics"]["test"]["tasks"]
        conv = card["training"]["choices"].get("conv_head") or {}
        print(
            json.dumps(
                {
                    "seed": seed,
                    "mode": mode,
                    "defect_acc": round(t["defect"]["accuracy"], 4),
                    "defect_bal": round(t["defect"]["balanced_accuracy"], 4),
                    "sev_acc": round(t["severity"]["accuracy"], 4),
                    "loc_acc": round(t["location"]["accuracy"], 4),
                    "kept": conv.get("kept"),
                    "val": conv.get("validation_score_by_views"),
                    "lin_val": conv.get("linear_heads_validation_score"),
                    "phase": card["training"]["phase_chosen"],
                    "s": round(time.time() - t0),
                }
            ),
            flush=True,
        )
