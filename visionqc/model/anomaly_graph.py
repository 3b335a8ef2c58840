"""The anomaly model's ONNX graph: the whole scoring pass (backbone taps, patch vectors, nearest bank patch, blur)
as one graph run by ONNX Runtime, as the classifier's graph is (:mod:`visionqc.model.runtime`).

Training exports it last (``anomaly.onnx`` beside ``model.safetensors``) and measures its **parity** with PyTorch
on the held-out photos that set the threshold: the largest score difference, as a share of the threshold, and
whether every verdict is the same. The card's ``anomaly.graph`` records the file, its SHA-256, the SHA-256 of the
weights it came from and the parity; prediction uses the graph only when the parity passed
(:data:`MAX_SCORE_DIFF`, identical verdicts) and both hashes match, else PyTorch (a model without a graph, such as
the first Lite0 models, works as before). A graph is hostile input like every model file: read up to
:data:`~visionqc.model.runtime.MAX_GRAPH_BYTES`, hashed before parsing, its input and outputs checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visionqc.model.anomaly_settings import AnomalySettings
from visionqc.model.card import CARD_FILE, EMBEDDING_DIM, ModelLoadError
from visionqc.model.runtime import DEFAULT_THREADS, INPUT_NAME, read_graph_file, session_options
from visionqc.model.weights import WEIGHTS_FILE, file_sha256

GRAPH_FILE = "anomaly.onnx"
MAP_OUTPUT = "anomaly_map"  # float32 [batch, h, w]: the blurred patch distances
EMBEDDING_OUTPUT = "embedding"  # float32 [batch, 1280]
MAX_SCORE_DIFF = 0.01  # the largest score difference allowed, as a share of the threshold
ONNX_OPSET = 18


class ScoringGraph(nn.Module):
    """What is exported: normalised NHWC images -> (blurred anomaly maps, embeddings)."""

    def __init__(self, scorer):
        super().__init__()
        self.net, self.settings = scorer.net, scorer.settings
        self.register_buffer("scales", scorer.scales.clone())
        self.register_buffer("bank_t", scorer.bank.T.contiguous().clone())
        self.register_buffer("bank_sq", scorer.bank_sq.clone())
        density = scorer.density
        self.register_buffer("density", None if density is None else density.clone())
        projection = scorer.projection
        self.register_buffer("projection", None if projection is None else projection.clone())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from visionqc.model.anomaly import blur, full_grid, network_taps, patch_vectors, searched_cells

        tapped, embedding = network_taps(self.net, images.permute(0, 3, 1, 2), self.settings.taps)
        vectors = patch_vectors(tapped, self.settings.pool, self.scales, self.projection)
        searched = searched_cells(vectors, self.settings.search_stride)
        b, h, w, d = searched.shape
        q = searched.reshape(b * h * w, d)
        # |q|^2 is added after the minimum: it is the same for every bank row (saves a pass over [cells, bank])
        nearest, idx = torch.addmm(self.bank_sq, q, self.bank_t, alpha=-2.0).min(dim=1)
        dist = (nearest + q.pow(2).sum(1)).clamp_min(0.0).sqrt()
        if self.density is not None:
            dist = dist / self.density[idx]
        dist = full_grid(dist.reshape(b, h, w), vectors.shape[1:3])
        return blur(dist, self.settings.sigma), embedding


def export_graph(scorer, path: Path) -> None:
    """Write the scoring graph of ``scorer`` (its network fused for inference) to ``path``."""
    size = scorer.settings.size
    graph = ScoringGraph(scorer).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():  # the exporter reports each pass on stdout
        torch.onnx.export(
            graph,
            (torch.zeros(2, size, size, 3),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[MAP_OUTPUT, EMBEDDING_OUTPUT],
            opset_version=ONNX_OPSET,
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
        )


def export_and_check(
    scorer,
    directory: Path,
    arrays: list[np.ndarray],
    torch_scores: np.ndarray,
    threshold: float,
    leave_out: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Export the graph into ``directory`` (whose weights file is already written), score ``arrays`` with it (and
    the scorer's image distance, ``leave_out`` as in :meth:`PatchScorer.image_distances`) and return the card's
    ``anomaly.graph`` entry (with the parity against ``torch_scores``)."""
    path = directory / GRAPH_FILE
    export_graph(scorer, path)
    data = path.read_bytes()
    entry: dict[str, Any] = {
        "file": GRAPH_FILE,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "weights_sha256": file_sha256(directory / WEIGHTS_FILE),
        "opset": ONNX_OPSET,
    }
    graph = AnomalyGraph.from_bytes(data, scorer.settings, GRAPH_FILE)
    maps, embeddings = zip(*(graph.maps(np.stack(arrays[i : i + 8])) for i in range(0, len(arrays), 8)), strict=True)
    scores = scorer.scores(
        torch.from_numpy(np.concatenate(maps)), torch.from_numpy(np.concatenate(embeddings)), leave_out
    ).numpy()
    diff = float(np.abs(scores - torch_scores).max()) if len(scores) else 0.0
    same = float(((scores > threshold) == (torch_scores > threshold)).mean()) if len(scores) else 1.0
    passed = len(scores) > 0 and diff <= MAX_SCORE_DIFF * threshold and same == 1.0
    entry["parity"] = {
        "images": len(scores),
        "max_score_diff": round(diff, 6),
        "max_score_diff_of_threshold": round(diff / max(threshold, 1e-9), 6),
        "same_verdicts": round(same, 4),
        "passed": bool(passed),
        "rule": f"every verdict the same and every score within {MAX_SCORE_DIFF:.0%} of the threshold of PyTorch's",
    }
    return entry


@dataclass
class AnomalyGraph:
    """The scoring graph in ONNX Runtime, checked against the card."""

    session: Any
    settings: AnomalySettings

    @classmethod
    def from_bytes(cls, data: bytes, settings: AnomalySettings, name: str, threads: int | None = None) -> AnomalyGraph:
        import onnxruntime as ort

        try:
            options = session_options(threads or DEFAULT_THREADS)
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own exception types for a malformed graph
            raise ModelLoadError(f"{name} is not a valid ONNX graph ONNX Runtime can run ({exc})") from None
        size = settings.size
        inputs = [(i.name, i.type, list(i.shape)) for i in session.get_inputs()]
        if len(inputs) != 1 or inputs[0][:2] != (INPUT_NAME, "tensor(float)") or inputs[0][2][1:] != [size, size, 3]:
            raise ModelLoadError(f"{name} must take one float input {INPUT_NAME!r} [batch, {size}, {size}, 3]")
        outputs = {o.name: (o.type, list(o.shape)) for o in session.get_outputs()}
        ok = set(outputs) == {MAP_OUTPUT, EMBEDDING_OUTPUT} and all(t == "tensor(float)" for t, _ in outputs.values())
        if not ok or len(outputs[MAP_OUTPUT][1]) != 3 or outputs[EMBEDDING_OUTPUT][1][1:] != [EMBEDDING_DIM]:
            raise ModelLoadError(
                f"{name} must give {MAP_OUTPUT!r} [batch, h, w] and {EMBEDDING_OUTPUT!r} [batch, 1280]"
            )
        return cls(session, settings)

    @classmethod
    def load(cls, directory: Path, entry: Any, settings: AnomalySettings, threads: int | None = None) -> AnomalyGraph:
        """The graph the card's ``anomaly.graph`` entry records; every mismatch is a :class:`ModelLoadError`."""
        weights = entry.get("weights_sha256") if isinstance(entry, dict) else None
        if isinstance(entry, dict) and not isinstance(weights, str):
            raise ModelLoadError(f"{CARD_FILE}: 'anomaly.graph' must record the sha256 of the weights it came from")
        data = read_graph_file(
            directory,
            entry,
            GRAPH_FILE,
            key="anomaly.graph",
            weights_sha256=weights,  # None only when the entry is no dict: read_graph_file refuses it first
            remedy="use --runtime torch or retrain",
        )
        return cls.from_bytes(data, settings, GRAPH_FILE, threads)

    def maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """NHWC float32 batch -> (blurred anomaly maps [B, h, w], embeddings [B, 1280])."""
        maps, embedding = self.session.run([MAP_OUTPUT, EMBEDDING_OUTPUT], {INPUT_NAME: np.ascontiguousarray(batch)})
        return maps, embedding
