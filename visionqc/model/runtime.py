"""Inference runtimes: which one a model may use, and the ONNX graphs beside its weights, checked before use.

A model directory may hold, next to ``model.safetensors``, an ONNX graph of the inference network
(``model.onnx``, fp32) and an int8 version (``model.int8.onnx``), written by ``python -m visionqc export`` and
at the end of ``train``. The card's ``runtimes`` section records each graph's file, size and SHA-256, the
weights it was exported from, and its **parity** with the PyTorch network on the test split. The rule that
picks the default runtime is applied here, to those recorded numbers (a hand-edited ``default`` is ignored):

* int8 when its top-1 defect agreement with PyTorch is at least 99 % and its balanced accuracy is within
  0.5 points of the fp32 graph's;
* else the fp32 graph under the same rule against PyTorch;
* else PyTorch (also for a card without a ``runtimes`` section: a directory without graphs works as before).

Model files are hostile: a graph is read only up to :data:`MAX_GRAPH_BYTES`, its bytes must hash to the
card's SHA-256, the weights must be the ones it was exported from, and its input and output names, types and
shapes must be those the card implies. Anything else is a :class:`~visionqc.model.card.ModelLoadError` that
says what is wrong and how to fix it; a graph that fails a check is never used, and never silently replaced.

This module never imports torch: classifying with a graph needs only ONNX Runtime and numpy.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionqc.model.card import CARD_FILE, EMBEDDING_DIM, ModelCard, ModelLoadError
from visionqc.model.weights import WEIGHTS_FILE, file_sha256

RUNTIMES = ("torch", "onnx", "int8")
GRAPH_FILES = {"onnx": "model.onnx", "int8": "model.int8.onnx"}
RUNTIME_LABELS = {"torch": "PyTorch (eager)", "onnx": "ONNX Runtime, fp32", "int8": "ONNX Runtime, int8"}
SECTION = "runtimes"
MAX_GRAPH_BYTES = 256 * 1024 * 1024
INPUT_NAME = "image"  # float32 [batch, size, size, 3]: RGB, normalised as the card's input.normalization
EMBEDDING_OUTPUT = "embedding"  # float32 [batch, 1280]: the pooled embedding (Explore, OOD score)
# The parity rule (see the module docstring).
MIN_AGREEMENT = 0.99
MAX_BALANCED_ACCURACY_DROP = 0.005
# How the stream is run (docs/BENCHMARKS.md, `benchmarks/predict_throughput.py --sweep onnx`). With a graph, one
# batch per core is in flight at once, each decoded and run by its own thread with ONNX Runtime on one thread: on
# 2 cores, 200 magnetic-tile photos went 79 -> 131 images/s (classifier) and 36 -> 47 (anomaly model) against one
# graph thread beside two decoders, and still won with another process taking a core (74 -> 90, 21 -> 30). Two
# ONNX Runtime threads that must meet after every operator lose more to a busy or decoding core than they gain.
# PyTorch keeps its own two threads and one decoder one batch ahead, as before.
DEFAULT_THREADS = 1
DEFAULT_BATCH_SIZES = {"torch": 8, "onnx": 4, "int8": 4}
DEFAULT_DECODE_WORKERS = {"torch": 1, "onnx": 2, "int8": 2}  # the stream without parallel batches
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
PARALLEL_BATCHES = max(1, min(4, _CORES))  # the cores this process may use, up to 4
DEFAULT_PARALLEL_BATCHES = {"torch": 1, "onnx": PARALLEL_BATCHES, "int8": PARALLEL_BATCHES}


CALIBRATION_IMAGES = 128  # training images the int8 graph is calibrated on

# What exporting a model costs, in seconds on 2 idle cores (EfficientNet-Lite0, 224 px; measured 2026-12-01):
# the fp32 graph 5.5 s; preparing the calibration images 0.8 s per 128; the int8 quantization 14 s for 128
# images (ONNX Runtime's histogram calibration, linear in the images; 44.5 s before it was fed in chunks of 16,
# 2026-12-07); the parity check 9.8 s for 202 test images (PyTorch and both graphs). A training job's plan and its
# progress bar during the export both read these.
EXPORT_SECONDS = {
    "fp32": 5.5,
    "calibration_per_image": 0.8 / 128,
    "int8_per_image": 14.0 / 128,
    "parity_per_image": 9.8 / 202,
}


def expected_export_seconds(test_images: int, calibration_images: int = CALIBRATION_IMAGES) -> dict[str, float]:
    """The expected seconds of each part of an export (see :data:`EXPORT_SECONDS`)."""
    return {
        "fp32": EXPORT_SECONDS["fp32"],
        "calibration": EXPORT_SECONDS["calibration_per_image"] * calibration_images,
        "int8": EXPORT_SECONDS["int8_per_image"] * calibration_images,
        "parity": EXPORT_SECONDS["parity_per_image"] * test_images,
    }


def probability_output(task: str) -> str:
    """The graph output holding ``task``'s class probabilities, float32 [batch, classes]."""
    return f"probabilities_{task}"


def expected_outputs(card: ModelCard) -> dict[str, int]:
    """Output name -> its second dimension, for the card's tasks (the first is the batch)."""
    return {EMBEDDING_OUTPUT: EMBEDDING_DIM, **{probability_output(t.name): len(t.classes) for t in card.tasks}}


def parity_verdict(parity: dict[str, Any], reference: float) -> tuple[bool, str]:
    """Whether a graph's recorded parity passes the rule against the reference balanced accuracy, and why.

    Every answer the lead sees must agree with PyTorch on at least :data:`MIN_AGREEMENT` of the images: the defect
    (top-1), each other task, the needs-review flag and the action, as far as the card measured them (cards written
    before severity, location, needs-review and action agreement were measured are judged on the defect alone)."""
    agreement, balanced = parity.get("agreement"), parity.get("balanced_accuracy")
    if not isinstance(agreement, int | float) or not isinstance(balanced, int | float):
        return False, "no parity measured"
    drop = reference - balanced
    if agreement < MIN_AGREEMENT:
        return False, f"top-1 agreement with PyTorch {agreement:.1%} < {MIN_AGREEMENT:.0%}"
    by_task = parity.get("agreement_by_task") if isinstance(parity.get("agreement_by_task"), dict) else {}
    answers = {
        **{f"{task} agreement": value for task, value in by_task.items()},
        "needs-review agreement": parity.get("needs_review_agreement"),
        "action agreement": parity.get("action_agreement"),
    }
    for what, value in answers.items():
        if isinstance(value, int | float) and value < MIN_AGREEMENT:
            return False, f"{what} with PyTorch {value:.1%} < {MIN_AGREEMENT:.0%}"
    if drop > MAX_BALANCED_ACCURACY_DROP:
        return False, f"balanced accuracy {balanced:.4f} is {drop * 100:.2f} points below {reference:.4f}"
    return True, f"top-1 agreement {agreement:.1%}; balanced accuracy {balanced:.4f} vs {reference:.4f}"


def _section(card: ModelCard) -> dict[str, Any]:
    section = card.raw.get(SECTION)
    if section is None:
        return {}
    if not isinstance(section, dict) or not isinstance(section.get("graphs", {}), dict):
        raise ModelLoadError(f"{CARD_FILE}: '{SECTION}' must be an object with 'graphs'")
    return section


def allowed_runtimes(card: ModelCard) -> dict[str, str]:
    """Runtime -> why the parity rule allows it, fastest first; ``torch`` is always allowed."""
    section = _section(card)
    graphs = section.get("graphs", {})
    torch_ba = section.get("torch", {}).get("balanced_accuracy") if isinstance(section.get("torch"), dict) else None
    allowed: dict[str, str] = {}
    fp32 = graphs.get("onnx")
    if isinstance(fp32, dict) and isinstance(torch_ba, int | float):
        ok, why = parity_verdict(fp32.get("parity") or {}, torch_ba)
        if ok:
            allowed["onnx"] = why
            int8 = graphs.get("int8")
            if isinstance(int8, dict):
                ok8, why8 = parity_verdict(int8.get("parity") or {}, fp32["parity"]["balanced_accuracy"])
                if ok8:
                    allowed = {"int8": why8, **allowed}
    allowed["torch"] = "the network itself"
    return allowed


def default_runtime(card: ModelCard) -> str:
    """The fastest runtime the card's recorded parity allows."""
    return next(iter(allowed_runtimes(card)))


def choose_runtime(card: ModelCard, requested: str | None = None) -> str:
    """``requested`` (one of :data:`RUNTIMES`, or ``None``/``"auto"`` for :func:`default_runtime`).

    A graph the card does not record cannot be chosen; one that failed the parity rule can, explicitly (to
    measure it), and the caller says so (:func:`parity_warning`)."""
    if requested in (None, "", "auto"):
        return default_runtime(card)
    if requested not in RUNTIMES:
        raise ModelLoadError(f"unknown runtime {requested!r}; choose one of {', '.join(RUNTIMES)}")
    if requested != "torch" and requested not in _section(card).get("graphs", {}):
        raise ModelLoadError(
            f"{CARD_FILE} records no {requested} graph for this model; export one with "
            "`python -m visionqc export MODEL_DIR`, or use --runtime torch"
        )
    return requested


def parity_warning(card: ModelCard, runtime: str) -> str | None:
    """A sentence when ``runtime`` is one the parity rule does not allow for this card, else ``None``."""
    if runtime in allowed_runtimes(card):
        return None
    graph = _section(card).get("graphs", {}).get(runtime, {})
    reason = graph.get("refused") or "it failed the parity rule"
    return f"the {RUNTIME_LABELS[runtime]} graph is not the default for this model: {reason}"


# --- loading a graph ----------------------------------------------------------------------------------


def _read_graph(directory: Path, card: ModelCard, runtime: str) -> bytes:
    return read_graph_file(
        directory,
        _section(card).get("graphs", {}).get(runtime),
        GRAPH_FILES[runtime],
        key=f"{SECTION}.graphs.{runtime}",
        weights_sha256=_section(card).get("weights_sha256"),
        remedy=f"re-export (`python -m visionqc export {directory}`) or use --runtime torch",
    )


def read_graph_file(
    directory: Path, entry: Any, name: str, *, key: str, weights_sha256: str | None, remedy: str
) -> bytes:
    """The bytes of the graph file ``name`` that the card's entry ``key`` records (``{"file", "sha256"}``), read
    once and checked: the entry's shape, the size bound, the SHA-256, and (``weights_sha256`` not None) that the
    weights beside it are those it was exported from. Every mismatch is a :class:`ModelLoadError` ending in
    ``remedy``. Used for the classifier's graphs and the anomaly model's."""
    if not isinstance(entry, dict) or entry.get("file") != name or not isinstance(entry.get("sha256"), str):
        raise ModelLoadError(f"{CARD_FILE}: '{key}' must name {name} and its sha256")
    path = directory / name
    if not path.is_file():
        raise ModelLoadError(f"{directory} has no {name}, which {CARD_FILE} records; {remedy}")
    if path.stat().st_size > MAX_GRAPH_BYTES:
        raise ModelLoadError(f"{name} is larger than {MAX_GRAPH_BYTES // 1_000_000} MB; refusing to load it")
    data = path.read_bytes()  # hashed and parsed from the same bytes: no window to swap the file between
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ModelLoadError(
            f"{name} does not match the SHA-256 that {CARD_FILE} records for it: the file was changed or damaged "
            f"after export. Refusing to use it; {remedy}"
        )
    if weights_sha256 is not None and file_sha256(directory / WEIGHTS_FILE) != weights_sha256:
        raise ModelLoadError(
            f"{name} was exported from other weights than the {WEIGHTS_FILE} beside it (the weights changed "
            f"since). Refusing to use it; {remedy}"
        )
    return data


def _check_io(session, card: ModelCard, name: str) -> None:
    """The graph's input and outputs must be exactly those the card implies (names, types and shapes)."""
    size = card.input_size
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(float)":
        found = [(i.name, i.type) for i in inputs]
        raise ModelLoadError(f"{name} must take one float input {INPUT_NAME!r}, found {found}")
    shape = list(inputs[0].shape)
    if len(shape) != 4 or isinstance(shape[0], int) or shape[1:] != [size, size, 3]:
        raise ModelLoadError(f"{name} input must be [batch, {size}, {size}, 3] as {CARD_FILE} says, found {shape}")
    want = expected_outputs(card)
    outputs = {o.name: o for o in session.get_outputs()}
    if set(outputs) != set(want):
        raise ModelLoadError(
            f"{name} outputs {sorted(outputs)} do not match the tasks in {CARD_FILE} (expected {sorted(want)})"
        )
    for out_name, width in want.items():
        out = outputs[out_name]
        dims = list(out.shape)
        if out.type != "tensor(float)" or len(dims) != 2 or dims[1] != width:
            raise ModelLoadError(f"{name} output {out_name!r} must be float [batch, {width}], found {out.type} {dims}")


def session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads would otherwise spin between batches, taking the core the JPEG decoder needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


@dataclass
class GraphNetwork:
    """An ONNX graph of the inference network, checked against the card, run by ONNX Runtime."""

    runtime: str
    session: Any
    output_names: list[str]
    tasks: list[str]

    @classmethod
    def load(cls, directory: str | Path, card: ModelCard, runtime: str, threads: int | None = None) -> GraphNetwork:
        import onnxruntime as ort

        directory = Path(directory)
        data = _read_graph(directory, card, runtime)
        name = GRAPH_FILES[runtime]
        try:
            options = session_options(threads or DEFAULT_THREADS)
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own exception types for a malformed graph
            raise ModelLoadError(f"{name} is not a valid ONNX graph ONNX Runtime can run ({exc})") from None
        _check_io(session, card, name)
        tasks = card.task_names
        return cls(runtime, session, [EMBEDDING_OUTPUT, *(probability_output(t) for t in tasks)], tasks)

    def forward(self, batch: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """NHWC float32 batch -> (task -> probabilities [B, classes], embedding [B, 1280])."""
        embedding, *probs = self.session.run(self.output_names, {INPUT_NAME: batch})
        return dict(zip(self.tasks, probs, strict=True)), embedding
