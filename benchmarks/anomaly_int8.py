"""Research for the anomaly model: its ONNX scoring graph with the backbone in int8, against fp32.

    python benchmarks/anomaly_int8.py [--calibration MinMax|Percentile|Entropy] [--split val]

Trains the shipped model on the 300 training tiles of ``tile_split`` (with its fp32 ONNX graph), then quantizes
the graph's backbone convolutions statically with ONNX Runtime (QDQ, per-channel int8 weights, uint8 activations,
calibrated on 64 of the training tiles; the map's blur, also a convolution, and everything after the taps stay
fp32) and scores the evaluation tiles with both graphs. Reported: image AUROC of each, the parity the model would
need to use int8 (every verdict the same on the held-out good tiles and every score within 1 % of the threshold,
as for the fp32 graph) and images per second of each graph alone (batch 8, no decoding), with the load average.
Appends to benchmarks/results/anomaly_int8.jsonl.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from anomaly import record, tile_split  # noqa: E402

from visionqc.model.anomaly import image_scores  # noqa: E402
from visionqc.model.anomaly_graph import GRAPH_FILE, MAX_SCORE_DIFF  # noqa: E402
from visionqc.model.runtime import INPUT_NAME  # noqa: E402
from visionqc.training.anomaly import fit_anomaly, read_photos  # noqa: E402


class Calibration(CalibrationDataReader):
    def __init__(self, arrays: list[np.ndarray]):
        self.batches = iter([{INPUT_NAME: np.stack(arrays[i : i + 8])} for i in range(0, len(arrays), 8)])

    def get_next(self):
        return next(self.batches, None)


def blur_convolutions(path: Path) -> list[str]:
    """The Conv nodes of the map's blur (single-channel kernels): not quantized."""
    graph = onnx.load(str(path)).graph
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "Conv" and shapes.get(n.input[1], [0])[:2] == [1, 1]]


def run(session, arrays: list[np.ndarray], share: float) -> tuple[np.ndarray, float]:
    session.run(None, {INPUT_NAME: np.stack(arrays[:8])})
    start, scores = time.perf_counter(), []
    for i in range(0, len(arrays), 8):
        maps, _ = session.run(None, {INPUT_NAME: np.stack(arrays[i : i + 8])})
        scores.append(image_scores(torch.from_numpy(maps), share).numpy())
    return np.concatenate(scores), len(arrays) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calibration", choices=["MinMax", "Percentile", "Entropy"], default="MinMax")
    ap.add_argument("--split", choices=["val", "test"], default="val")
    args = ap.parse_args()
    torch.set_num_threads(2)
    split = tile_split()
    good = read_photos(split["train"], 288)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp)
        card = fit_anomaly(good, model, name="int8", version="research")
        threshold, share = card["anomaly"]["decision"]["threshold"], card["anomaly"]["settings"]["top_share"]
        held = set(card["training"]["split"]["held_out_files"])
        prepared, quantized = model / "prepared.onnx", model / "int8.onnx"
        quant_pre_process(str(model / GRAPH_FILE), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            Calibration([a for n, a in zip(good.names, good.arrays, strict=True) if Path(n).name not in held][:64]),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, args.calibration),
            nodes_to_exclude=blur_convolutions(prepared),
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
        sessions = {
            name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for name, path in (("fp32", model / GRAPH_FILE), ("int8", quantized))
        }
        held_good = [a for n, a in zip(good.names, good.arrays, strict=True) if Path(n).name in held]
        good_eval = read_photos(split[f"{args.split}_good"], 288).arrays
        bad_eval = read_photos(split[f"{args.split}_bad"], 288).arrays
        truth = np.r_[np.zeros(len(good_eval)), np.ones(len(bad_eval))]
        out: dict = {"calibration": args.calibration, "split": args.split}
        held_scores = {}
        for name, session in sessions.items():
            scores, per_s = run(session, good_eval + bad_eval, share)
            held_scores[name] = run(session, held_good, share)[0]
            out[name] = {"image_auroc": round(float(roc_auc_score(truth, scores)), 4), "images_per_s": round(per_s, 2)}
        a, b = held_scores["fp32"], held_scores["int8"]
        diff = float(np.abs(a - b).max() / threshold)
        same = float(((a > threshold) == (b > threshold)).mean())
        out["parity_on_held_out_good"] = {
            "images": len(a),
            "max_score_diff_of_threshold": round(diff, 4),
            "same_verdicts": round(same, 4),
            "passed": bool(diff <= MAX_SCORE_DIFF and same == 1.0),
        }
    record(out, "anomaly_int8")


if __name__ == "__main__":
    main()
