"""Export a model's network to ONNX (fp32 and int8) and measure each graph's parity with PyTorch.

``python -m visionqc export MODEL_DIR`` runs it for an existing model, and ``train`` runs it last. Step by step:

1. **fp32 graph** (``model.onnx``): the network as the Predictor runs it (BatchNorm folded), taking the
   normalised NHWC images the Predictor prepares and giving the pooled embedding and every task's class
   probabilities; exported by ``torch.onnx.export`` (the dynamo exporter, opset 18, one self-contained file).
2. **int8 graph** (``model.int8.onnx``): ONNX Runtime's static quantization (QDQ, per-channel int8 weights,
   uint8 activations) of the backbone, calibrated (percentile ranges) on training images; the pooling, the
   heads and the softmax stay fp32, so the embedding that Explore and the OOD score use is pooled in fp32.
3. **Parity** on the test split: the PyTorch network, each graph and the Predictor's own needs-review logic
   on the same preprocessed images: top-1 agreement with PyTorch, balanced accuracy, the largest probability
   and OOD-score differences. The rule in :mod:`visionqc.model.runtime` turns these numbers into the default.
4. **The card** gets a ``runtimes`` section: files, sizes, SHA-256 of each graph and of the weights they came
   from, input and output names and shapes, parity, and why a graph was refused.

Runs on any machine with the ``onnx``, ``onnxscript`` and ``onnxruntime`` packages; prediction needs only
``onnxruntime``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visionqc.model.card import PRIMARY_TASK, ModelCard, parse_card, read_card, update_card
from visionqc.model.predict import Predictor
from visionqc.model.runtime import (
    CALIBRATION_IMAGES,
    EMBEDDING_OUTPUT,
    GRAPH_FILES,
    INPUT_NAME,
    MAX_BALANCED_ACCURACY_DROP,
    MIN_AGREEMENT,
    SECTION,
    GraphNetwork,
    allowed_runtimes,
    expected_export_seconds,
    expected_outputs,
    parity_verdict,
    probability_output,
)
from visionqc.model.weights import WEIGHTS_FILE, file_sha256
from visionqc.training.datasets import Dataset
from visionqc.training.metrics import balanced_accuracy
from visionqc.training.pipeline import elapsed_bar, log, part, prefetched, progress_bar

ONNX_OPSET = 18  # the dynamo exporter's own; opset 17 cannot express its Pad
PARITY_BATCH = 32
# Nodes kept in fp32 in the int8 graph: pooling, heads and softmax (tiny, and the errors they would add
# land directly on the probabilities and the embedding).
FP32_OPS = ("ReduceMean", "GlobalAveragePool", "Gemm", "MatMul", "Softmax")


class InferenceGraph(nn.Module):
    """What is exported: normalised NHWC images -> (embedding, probabilities of each task)."""

    def __init__(self, model: nn.Module, tasks: list[str]):
        super().__init__()
        self.model = model
        self.tasks = tasks

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, embedding = self.model(images.permute(0, 3, 1, 2))
        return (embedding, *(torch.softmax(logits[task], dim=1) for task in self.tasks))


def export_fp32(predictor: Predictor, path: Path) -> None:
    """Write the fp32 graph of ``predictor``'s PyTorch network to ``path``."""
    card = predictor.card
    graph = InferenceGraph(predictor.model, card.task_names).eval()
    size = card.input_size
    example = (torch.zeros(2, size, size, 3),)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter reports each pass on stdout
        torch.onnx.export(
            graph,
            example,
            str(path),
            input_names=[INPUT_NAME],
            output_names=[EMBEDDING_OUTPUT, *(probability_output(t) for t in card.task_names)],
            opset_version=ONNX_OPSET,
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
        )


CALIBRATION_STRIDE = 16  # images whose activations the quantizer holds at once (see _Calibration)


class _Calibration:
    """Feeds calibration images to ONNX Runtime's quantizer (its ``CalibrationDataReader`` protocol), one per
    batch: its histogram calibrators need every batch the same size.

    The quantizer runs a copy of the graph that outputs every intermediate tensor, and its histogram calibrators
    keep all of them for every image they are given before they count them: for elpv's graph (two views averaged
    and the conv head) 128 images took 16.7 GB. With ``CalibStridedMinMax`` it is given :meth:`set_range` chunks
    of :func:`stride` images in turn and merges their histograms, so it holds one chunk's (about 2 GB)."""

    def __init__(self, arrays: np.ndarray, batch: int = 1):
        self.arrays, self.batch, self.start, self.end = arrays, batch, 0, len(arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, min(end_index, len(self.arrays))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.start >= self.end:
            return None
        chunk = self.arrays[self.start : min(self.start + self.batch, self.end)]
        self.start += self.batch
        return {INPUT_NAME: chunk}

    def rewind(self) -> None:
        self.start, self.end = 0, len(self.arrays)


def stride(images: int, most: int = CALIBRATION_STRIDE) -> int:
    """The largest chunk of at most ``most`` images that divides ``images`` (ONNX Runtime asks for that)."""
    return max(d for d in range(1, min(most, images) + 1) if images % d == 0)


def export_int8(fp32_path: Path, path: Path, calibration: np.ndarray) -> dict[str, Any]:
    """Quantize the fp32 graph statically, calibrated on ``calibration`` (preprocessed training images)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = path.with_name(path.name + ".prep")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            kept = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type in FP32_OPS]
            quantize_static(
                str(prepared),
                str(path),
                _Calibration(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.Percentile,
                nodes_to_exclude=kept,
                extra_options={"CalibStridedMinMax": stride(len(calibration))},
            )
    finally:
        prepared.unlink(missing_ok=True)
    return {
        "method": "ONNX Runtime static quantization, QDQ; int8 weights per channel, uint8 activations",
        "calibration": f"percentile ranges (99.999 %) on {len(calibration)} training images",
        "kept_fp32": f"{len(kept)} nodes: pooling, heads and softmax",
    }


def _graph_entry(directory: Path, runtime: str) -> dict[str, Any]:
    name = GRAPH_FILES[runtime]
    data = (directory / name).read_bytes()
    return {"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "opset": ONNX_OPSET}


class _Parity:
    """Accumulates one runtime's outputs beside PyTorch's over the test batches."""

    def __init__(self):
        self.pred: dict[str, list[np.ndarray]] = {}
        self.max_prob_diff = 0.0
        self.min_cosine = 1.0
        self.max_ood_diff = 0.0
        self.review: list[np.ndarray] = []
        self.action: list[np.ndarray] = []

    def add(self, ref_probs, ref_emb, ref_preds, probs, emb, out) -> None:
        for task, p in probs.items():
            self.pred.setdefault(task, []).append(p.argmax(1) == ref_probs[task].argmax(1))
            self.max_prob_diff = max(self.max_prob_diff, float(np.abs(p - ref_probs[task]).max()))
        cos = (emb * ref_emb).sum(1) / np.maximum(np.linalg.norm(emb, axis=1) * np.linalg.norm(ref_emb, axis=1), 1e-12)
        self.min_cosine = min(self.min_cosine, float(cos.min()))
        ood = [(a.ood_score, b.ood_score) for a, b in zip(ref_preds, out, strict=True) if a.ood_score is not None]
        if ood:
            self.max_ood_diff = max(self.max_ood_diff, max(abs(a - b) for a, b in ood))
        self.review.append(np.array([a.needs_review == b.needs_review for a, b in zip(ref_preds, out, strict=True)]))
        self.action.append(np.array([a.action == b.action for a, b in zip(ref_preds, out, strict=True)]))


def measure_parity(
    model_dir: Path, card: ModelCard, dataset: Dataset, test_indices: list[int], progress: bool
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Balanced accuracy of PyTorch and parity of each graph on the test images (one decode per image)."""
    reference = Predictor(model_dir, runtime="torch")
    graphs = {r: GraphNetwork.load(model_dir, card, r) for r in GRAPH_FILES}
    classes = card.classes(PRIMARY_TASK)
    truth = np.array([classes.index(dataset.samples[i].defect) for i in test_indices])
    top1: dict[str, list[np.ndarray]] = {"torch": [], **{r: [] for r in graphs}}
    parity = {r: _Parity() for r in graphs}

    def prepare(chunk: list[int]) -> np.ndarray:
        return _preprocessed(reference, dataset, chunk)

    seconds = dict.fromkeys(top1, 0.0)  # each runtime's network alone, on the same batches

    def timed(runtime: str, network, batch: np.ndarray):
        start = time.perf_counter()
        out = network.forward(batch)
        seconds[runtime] += time.perf_counter() - start
        return out

    with progress_bar(total=len(test_indices), desc="parity", unit="img", disable=not progress) as bar:
        for chunk, batch in prefetched(test_indices, prepare, PARITY_BATCH):
            ref_probs, ref_emb = timed("torch", reference._network, batch)
            ref_preds = reference._interpret(ref_probs, ref_emb)
            top1["torch"].append(ref_probs[PRIMARY_TASK].argmax(1))
            for runtime, network in graphs.items():
                probs, emb = timed(runtime, network, batch)
                top1[runtime].append(probs[PRIMARY_TASK].argmax(1))
                preds = reference._interpret(probs, emb)
                parity[runtime].add(ref_probs, ref_emb, ref_preds, probs, emb, preds)
            bar.update(len(chunk))
    n_classes = len(classes)

    def speed(runtime: str) -> float | None:
        return round(len(test_indices) / seconds[runtime], 1) if seconds[runtime] > 0 else None

    torch_entry = {
        "balanced_accuracy": round(balanced_accuracy(truth, np.concatenate(top1["torch"]), n_classes), 4),
        "images_per_second": speed("torch"),
    }
    results = {}
    for runtime, acc in parity.items():
        pred = np.concatenate(top1[runtime])
        agreement = {task: float(np.concatenate(v).mean()) for task, v in acc.pred.items()}
        results[runtime] = {
            "agreement": round(agreement[PRIMARY_TASK], 4),
            "agreement_by_task": {t: round(v, 4) for t, v in agreement.items()},
            "balanced_accuracy": round(balanced_accuracy(truth, pred, n_classes), 4),
            "max_probability_difference": round(acc.max_prob_diff, 5),
            "embedding_cosine_min": round(acc.min_cosine, 5),
            "ood_score_max_difference": round(acc.max_ood_diff, 5),
            "needs_review_agreement": round(float(np.concatenate(acc.review).mean()), 4),
            "action_agreement": round(float(np.concatenate(acc.action).mean()), 4),
            "images_per_second": speed(runtime),
        }
    return torch_entry, results


def _calibration_arrays(predictor: Predictor, dataset: Dataset, indices: list[int], count: int, seed: int):
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(indices, size=min(count, len(indices)), replace=False).tolist())
    return _preprocessed(predictor, dataset, chosen)


def _preprocessed(predictor: Predictor, dataset: Dataset, indices: list[int]) -> np.ndarray:
    """The images as the Predictor feeds them to the network, [N, size, size, 3]."""
    samples = dataset.samples
    return np.stack([predictor.preprocess(predictor.decode(samples[i].path.read_bytes()).image) for i in indices])


def export_model(
    model_dir: str | Path,
    dataset: Dataset,
    calibration_indices: list[int],
    test_indices: list[int],
    *,
    calibration_images: int = CALIBRATION_IMAGES,
    command: str | None = None,
    note: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write both graphs beside the weights, measure their parity and record everything in the card.

    While it runs the card has no ``runtimes`` section, so a crash half-way leaves a model that runs in
    PyTorch, never one whose card vouches for graphs it did not check. Returns the new section."""
    started = time.perf_counter()
    directory = Path(model_dir)
    if not test_indices:
        raise ValueError("exporting needs test images to measure parity on; the card records none in this data")
    if not calibration_indices:
        raise ValueError("exporting needs training images to calibrate the int8 graph on")
    update_card(directory, {SECTION: None})
    for name in GRAPH_FILES.values():
        (directory / name).unlink(missing_ok=True)
    card = read_card(directory)
    predictor = Predictor(directory, runtime="torch")
    n_calibration = min(calibration_images, len(calibration_indices))
    expected = expected_export_seconds(len(test_indices), n_calibration)
    # One bar over the four parts, each weighted by its expected seconds (a training job shows it as its own stage).
    units = {key: max(1, round(seconds)) for key, seconds in expected.items()}
    with progress_bar(total=sum(units.values()), desc="exporting", unit="s", disable=not progress) as bar:
        with part(bar, units["fp32"], "writing the ONNX graph"):
            log(progress, f"export: fp32 graph -> {directory / GRAPH_FILES['onnx']}")
            with elapsed_bar("fp32 graph", expected["fp32"]):
                export_fp32(predictor, directory / GRAPH_FILES["onnx"])
        with part(bar, units["calibration"], f"reading {n_calibration} calibration images"):
            seed = int(card.raw.get("training", {}).get("config", {}).get("seed", 0) or 0)
            calibration = _calibration_arrays(predictor, dataset, calibration_indices, calibration_images, seed)
        with part(bar, units["int8"], f"quantizing to int8, calibrated on {n_calibration} images"):
            log(progress, f"export: int8 graph, calibrated on {n_calibration} images")
            with elapsed_bar("int8 graph", expected["int8"]):
                quantization = export_int8(
                    directory / GRAPH_FILES["onnx"], directory / GRAPH_FILES["int8"], calibration
                )
        section: dict[str, Any] = {
            "weights_sha256": file_sha256(directory / WEIGHTS_FILE),
            "input": {"name": INPUT_NAME, "shape": ["batch", card.input_size, card.input_size, 3], "dtype": "float32"},
            "outputs": {name: ["batch", width] for name, width in expected_outputs(card).items()},
            "graphs": {runtime: _graph_entry(directory, runtime) for runtime in GRAPH_FILES},
        }
        section["graphs"]["int8"]["quantization"] = quantization
        provisional = parse_card({**card.raw, SECTION: section})
        with part(bar, units["parity"], f"checking both graphs against PyTorch on {len(test_indices)} test images"):
            torch_entry, parity = measure_parity(directory, provisional, dataset, list(test_indices), progress)
    section["torch"] = torch_entry
    section["parity_split"] = {"split": "test", "images": len(test_indices), **({"note": note} if note else {})}
    for runtime, numbers in parity.items():
        section["graphs"][runtime]["parity"] = numbers
    fp32_ok, fp32_why = parity_verdict(parity["onnx"], torch_entry["balanced_accuracy"])
    int8_ok, int8_why = parity_verdict(parity["int8"], parity["onnx"]["balanced_accuracy"])
    section["graphs"]["onnx"]["verdict" if fp32_ok else "refused"] = fp32_why
    if not fp32_ok:
        section["graphs"]["int8"]["refused"] = "the fp32 graph it is measured against was refused"
    else:
        section["graphs"]["int8"]["verdict" if int8_ok else "refused"] = int8_why
    section["rule"] = (
        f"int8 when it gives PyTorch's answer on >= {MIN_AGREEMENT:.0%} of the test images for every answer (defect, "
        f"severity, location, needs review, action) and its balanced accuracy is within "
        f"{MAX_BALANCED_ACCURACY_DROP * 100:.1f} points of fp32's; else fp32 ONNX under the same rule against "
        "PyTorch; else PyTorch"
    )
    section["speed"] = (
        f"images_per_second: the network alone (no decoding), batches of {PARITY_BATCH}, "
        f"{torch.get_num_threads()} threads, on this machine during the parity run"
    )
    section["default"] = next(iter(allowed_runtimes(parse_card({**card.raw, SECTION: section}))))
    section["exported"] = _provenance(command, time.perf_counter() - started)
    update_card(directory, {SECTION: section})
    return section


def _provenance(command: str | None, seconds: float) -> dict[str, Any]:
    import onnx
    import onnxruntime

    return {
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "seconds": round(seconds, 1),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def recorded_split(card: ModelCard, dataset: Dataset) -> tuple[list[int], list[int], str | None]:
    """(training indices, test indices, note) of ``dataset`` for a saved model, from its card.

    The test images are the card's ``training.split.test_files``. The training split is re-derived as ``train``
    made it (same seed, fractions, per-class limit, unreadable images left out) and used when its test part is
    exactly the recorded one; otherwise calibration uses every image outside the test split, and the note says so.
    """
    from visionqc.training.datasets import stratified_split
    from visionqc.training.trainer import limit_per_class

    training = card.raw.get("training") or {}
    recorded = set((training.get("split") or {}).get("test_files") or [])
    if not recorded:
        raise ValueError("the model card records no test split (training.split.test_files) to measure parity on")
    keys = [dataset.key(s) for s in dataset.samples]
    test = [i for i, k in enumerate(keys) if k in recorded]
    if not test:
        raise ValueError("none of the card's test files are in this dataset: is it the data the model was trained on?")
    cfg = training.get("config") or {}
    seed = int(cfg.get("seed", 0) or 0)
    subset = dataset
    if cfg.get("max_per_class"):
        subset = limit_per_class(dataset, int(cfg["max_per_class"]), seed)
    unreadable = set((card.raw.get("training_data") or {}).get("unreadable_images") or [])
    subset = subset.subset([i for i, s in enumerate(subset.samples) if subset.key(s) not in unreadable])
    train, _, test_again = stratified_split(
        subset.strata(), float(cfg.get("val_fraction", 0.15)), float(cfg.get("test_fraction", 0.15)), seed
    )
    index = {k: i for i, k in enumerate(keys)}
    if {subset.key(subset.samples[i]) for i in test_again} == recorded:
        return [index[subset.key(subset.samples[i])] for i in train], test, None
    others = [i for i, k in enumerate(keys) if k not in recorded]
    return others, test, "training split not re-derivable from the card; calibrated on images outside the test split"
