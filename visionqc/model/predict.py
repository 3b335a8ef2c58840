"""Prediction: load a model once, classify batches of images, decide needs-review and the action.

Depends only on the model directory's format (never on training code). The network runs in the fastest
runtime the card's parity allows (:mod:`~visionqc.model.runtime`): an ONNX graph in ONNX Runtime, without
importing torch, or the PyTorch network itself. The PyTorch network is built only when a heatmap (which
needs gradients) or the ``torch`` runtime first asks for it. Decoding runs in a worker thread while the
network works on the previous batch, so a stream of JPEGs keeps both cores busy.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from PIL import Image

from visionqc.actions import ActionPolicy
from visionqc.intake.imaging import DecodedImage, ImageDecodeError, decode_image
from visionqc.model.card import PRIMARY_TASK, ModelCard, read_card
from visionqc.model.runtime import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_DECODE_WORKERS,
    DEFAULT_PARALLEL_BATCHES,
    GraphNetwork,
    choose_runtime,
    parity_warning,
)
from visionqc.model.weights import read_ood_bank

if TYPE_CHECKING:
    from visionqc.model.checkpoint import Checkpoint
    from visionqc.model.network import DefectNet

K = TypeVar("K")


@dataclass
class TaskResult:
    label: str | None
    confidence: float | None
    probabilities: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": self.confidence, "probabilities": self.probabilities}


@dataclass
class Prediction:
    tasks: dict[str, TaskResult]  # "defect" first, then the card's other tasks
    is_defect: bool
    embedding: np.ndarray  # float32 [1280], not normalised
    ood_score: float | None  # mean cosine distance to the k nearest training embeddings
    needs_review: bool
    review_reason: str | None
    action: str
    # An anomaly model's score (how unlike the good photos it learned from; above the card's threshold = defect).
    anomaly_score: float | None = None

    @property
    def defect(self) -> TaskResult:
        return self.tasks[PRIMARY_TASK]

    def to_json(self, include_embedding: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {task: result.to_json() for task, result in self.tasks.items()}
        out.update(
            {
                "is_defect": self.is_defect,
                "needs_review": self.needs_review,
                "review_reason": self.review_reason,
                "action": self.action,
                "ood_score": self.ood_score,
            }
        )
        if self.anomaly_score is not None:
            out["anomaly_score"] = self.anomaly_score
        if include_embedding:
            out["embedding"] = [round(float(v), 5) for v in self.embedding]
        return out


class Predictor:
    """Loads a model directory once; classifies images in batches.

    ``runtime`` is ``"torch"``, ``"onnx"``, ``"int8"`` or ``None`` for the fastest the card allows;
    ``checkpoint`` (a network in memory, as training has) always runs in PyTorch.
    """

    def __init__(
        self,
        model_dir: str | Path | None,
        policy: ActionPolicy | None = None,
        batch_size: int | None = None,
        checkpoint: Checkpoint | None = None,
        runtime: str | None = None,
        threads: int | None = None,
        decode_workers: int | None = None,
        parallel_batches: int | None = None,
    ):
        self._checkpoint = checkpoint
        self._eager = None
        self._torch_lock = threading.Lock()  # app sessions share one Predictor: build the network once
        if checkpoint is not None:
            if runtime not in (None, "auto", "torch"):
                raise ValueError("a network in memory runs in PyTorch only")
            self.directory, self.card, self.runtime = Path(checkpoint.directory), checkpoint.card, "torch"
        else:
            self.directory = Path(model_dir)
            self.card: ModelCard = read_card(self.directory)
            self.runtime = choose_runtime(self.card, runtime)
        # Set when the runtime was asked for although the card's parity rule does not allow it.
        self.runtime_warning = parity_warning(self.card, self.runtime)
        self.policy = policy or ActionPolicy()
        self._stream_settings(batch_size, decode_workers, parallel_batches)
        size = self.card.input_size
        self._size = (size, size)
        self._mean = np.asarray(self.card.mean, dtype=np.float32)
        self._inv_std = 1.0 / np.asarray(self.card.std, dtype=np.float32)
        if self.runtime == "torch":
            self._network = self._eager_network()
            bank = self.checkpoint.ood_bank
            labels = self.checkpoint.ood_bank_labels
            bank, labels = (None, None) if bank is None else (bank.float().numpy(), labels.numpy())
        else:
            self._network = GraphNetwork.load(self.directory, self.card, self.runtime, threads)
            bank, labels = read_ood_bank(self.directory, self.card)
        self._bank_raw, self._bank_labels = bank, labels
        self._bank = None if bank is None else _normalise(bank)

    def _stream_settings(
        self, batch_size: int | None, decode_workers: int | None, parallel_batches: int | None
    ) -> None:
        """The batch size, the decoders beside the network and the batches in flight at once: the caller's, else
        the defaults of :attr:`runtime` (:mod:`visionqc.model.runtime`)."""
        self.batch_size = batch_size or DEFAULT_BATCH_SIZES[self.runtime]
        self.decode_workers = decode_workers or DEFAULT_DECODE_WORKERS[self.runtime]
        self.parallel_batches = parallel_batches or DEFAULT_PARALLEL_BATCHES[self.runtime]

    # --- the PyTorch network, built on first use -----------------------------------------------
    @property
    def checkpoint(self) -> Checkpoint:
        """The weights and card as PyTorch loads them (read on first use)."""
        with self._torch_lock:
            if self._checkpoint is None:
                from visionqc.model.checkpoint import load_checkpoint

                self._checkpoint = load_checkpoint(self.directory)
            return self._checkpoint

    def _eager_network(self):
        checkpoint = self.checkpoint
        with self._torch_lock:
            if self._eager is None:
                from visionqc.model.eager import EagerNetwork

                self._eager = EagerNetwork(checkpoint)
            return self._eager

    @property
    def heatmap_ready(self) -> bool:
        """Whether the PyTorch network that heatmaps take gradients through is built already."""
        return self._eager is not None

    @property
    def model(self) -> DefectNet:
        """The PyTorch network for inference (BatchNorm fused, channels-last): heatmaps take gradients through
        it. Built on first use, so classifying with an ONNX graph never imports torch."""
        return self._eager_network().model

    def training_bank(self) -> tuple[np.ndarray, list[str]] | None:
        """The training embeddings the OOD score compares with, and each one's defect class (``None`` if the
        model has none): Explore scores stored inspections against them without touching tensors."""
        if self._bank_raw is None:
            return None
        classes = self.card.classes(PRIMARY_TASK)
        return self._bank_raw, [classes[int(i)] for i in self._bank_labels]

    @property
    def model_name(self) -> str:
        return self.card.name

    @property
    def model_version(self) -> str:
        return self.card.version

    # --- input ---------------------------------------------------------------------------------
    def decode(self, data: bytes) -> DecodedImage:
        return decode_image(data, draft_size=self._size)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """RGB image -> normalised float32 HWC array at the card's input size (whole image, squashed)."""
        resized = image.resize(self._size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        arr = np.asarray(resized, dtype=np.float32)
        return (arr - self._mean) * self._inv_std

    # --- network -------------------------------------------------------------------------------
    def forward_arrays(self, arrays: list[np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Preprocessed images -> (task -> class probabilities [B, classes], embeddings [B, 1280])."""
        return self._network.forward(np.stack(arrays))

    def ood_scores(self, embeddings: np.ndarray) -> np.ndarray | None:
        """Mean cosine distance of each embedding to its ``ood_k`` nearest training embeddings."""
        if self._bank is None:
            return None
        sims = _normalise(np.asarray(embeddings, dtype=np.float32)) @ self._bank.T
        k = min(self.card.ood_k, self._bank.shape[0])
        top = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:]
        return (1.0 - top.mean(axis=1)).astype(np.float32)

    def _interpret(self, probs: dict[str, np.ndarray], embeddings: np.ndarray) -> list[Prediction]:
        card = self.card
        ood = self.ood_scores(embeddings)
        results = []
        for i in range(embeddings.shape[0]):
            tasks: dict[str, TaskResult] = {}
            defect_p = probs[PRIMARY_TASK][i]
            defect_classes = card.classes(PRIMARY_TASK)
            d = int(defect_p.argmax())
            defect_label = defect_classes[d]
            is_defect = defect_label != card.no_defect_class
            reasons = []
            for task in card.task_names:
                p = probs[task][i]
                classes = card.classes(task)
                if task != PRIMARY_TASK and not is_defect:
                    tasks[task] = TaskResult(None, None, {})
                    continue
                j = int(p.argmax())
                conf = float(p[j])
                tasks[task] = TaskResult(classes[j], conf, {c: float(v) for c, v in zip(classes, p, strict=True)})
                threshold = card.confidence_thresholds.get(task)
                if threshold is not None and conf < threshold:
                    reasons.append(f"unsure of the {task} ({conf:.0%}; sure from {threshold:.0%})")
            # Keep "defect" first whatever order the card lists tasks in.
            tasks = {
                PRIMARY_TASK: tasks[PRIMARY_TASK],
                **{t: r for t, r in tasks.items() if t != PRIMARY_TASK},
            }
            score = None if ood is None else float(ood[i])
            if score is not None and card.ood_threshold is not None and score > card.ood_threshold:
                reasons.append(
                    f"unlike the photos it learned from (score {score:.2f}, usual up to {card.ood_threshold:.2f})"
                )
            defect_probability = 1.0 - float(defect_p[defect_classes.index(card.no_defect_class)])
            if not is_defect and card.miss_threshold is not None and defect_probability > card.miss_threshold:
                reasons.append(
                    f"may hide a defect ({defect_probability:.0%} defect probability; "
                    f"a second look from {card.miss_threshold:.0%})"
                )
            needs_review = bool(reasons)
            severity = tasks.get("severity")
            action = self.policy.decide(defect_label, severity.label if severity else None, needs_review, is_defect)
            results.append(
                Prediction(
                    tasks=tasks,
                    is_defect=is_defect,
                    embedding=embeddings[i].astype(np.float32),
                    ood_score=score,
                    needs_review=needs_review,
                    review_reason="; ".join(reasons) or None,
                    action=action,
                )
            )
        return results

    # --- public API ----------------------------------------------------------------------------
    def predict_images(self, images: list[Image.Image]) -> list[Prediction]:
        """Classify already-decoded RGB images."""
        out: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            arrays = [self.preprocess(im) for im in images[start : start + self.batch_size]]
            out.extend(self._interpret(*self.forward_arrays(arrays)))
        return out

    def predict_stream(
        self, items: Iterable[tuple[K, bytes]]
    ) -> Iterator[tuple[K, DecodedImage | None, Prediction | ImageDecodeError]]:
        """Classify ``(key, image bytes)`` pairs, yielding ``(key, decoded, prediction or error)`` in order.

        With an ONNX graph, :attr:`parallel_batches` batches are in flight at once, each decoded, resized and run
        through the graph by its own thread (ONNX Runtime on one thread per run; Pillow and ONNX Runtime release
        the GIL), so every core works on a batch of its own and none waits for another inside an operator. In
        PyTorch, decoding runs in :attr:`decode_workers` threads one batch ahead of the network. A file that fails
        to decode yields its :class:`ImageDecodeError` and never stops the stream.
        """
        one_blas_thread()
        if self.parallel_batches > 1:
            yield from self._stream_batches_in_parallel(items)
            return
        with ThreadPoolExecutor(max_workers=self.decode_workers, thread_name_prefix="visionqc-decode") as pool:
            pending: deque[list[Future]] = deque()
            for chunk in self._chunks(items):
                pending.append([pool.submit(self._prepare, key, data) for key, data in chunk])
                if len(pending) > 1:  # the decoders work on this batch while the network runs the one before
                    yield from self._run_prepared([f.result() for f in pending.popleft()])
            while pending:
                yield from self._run_prepared([f.result() for f in pending.popleft()])

    def _stream_batches_in_parallel(
        self, items: Iterable[tuple[K, bytes]]
    ) -> Iterator[tuple[K, DecodedImage | None, Prediction | ImageDecodeError]]:
        def whole_batch(chunk: list[tuple[K, bytes]]) -> list:
            return list(self._run_prepared([self._prepare(key, data) for key, data in chunk]))

        workers = self.parallel_batches
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visionqc-predict") as pool:
            pending: deque[Future] = deque()
            for chunk in self._chunks(items):
                pending.append(pool.submit(whole_batch, chunk))
                if len(pending) > workers:  # one batch waits its turn: no worker idles between batches
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()

    def _prepare(self, key: K, data: bytes) -> tuple[K, DecodedImage | None, np.ndarray | ImageDecodeError]:
        try:
            decoded = self.decode(data)
            return key, decoded, self.preprocess(decoded.image)
        except ImageDecodeError as exc:
            return key, None, exc

    def _chunks(self, items: Iterable[tuple[K, bytes]]) -> Iterator[list[tuple[K, bytes]]]:
        chunk: list[tuple[K, bytes]] = []
        for item in items:
            chunk.append(item)
            if len(chunk) == self.batch_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _run_prepared(self, prepared):
        good = [(i, arr) for i, (_, _, arr) in enumerate(prepared) if isinstance(arr, np.ndarray)]
        predictions: dict[int, Prediction] = {}
        if good:
            preds = self._interpret(*self.forward_arrays([arr for _, arr in good]))
            predictions = {i: p for (i, _), p in zip(good, preds, strict=True)}
        for i, (key, decoded, arr) in enumerate(prepared):
            yield key, decoded, predictions.get(i, arr)


_blas_limited = False


def one_blas_thread() -> None:
    """Limit NumPy's BLAS to one thread, once per process. OpenBLAS keeps a pool of its own threads that spin after
    every matrix product (the OOD score's); beside the decoders and ONNX Runtime they took the cores those need:
    the classifier streamed 93 images/s with two batches in parallel, 132 with this (magnetic tile photos, 2 cores,
    docs/BENCHMARKS.md). Prediction's products are small, and the cores are already shared between batches."""
    global _blas_limited
    if not _blas_limited:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
        _blas_limited = True


def open_predictor(model_dir: str | Path, **options) -> Predictor:
    """The predictor of any model directory: a classifier's :class:`Predictor`, or for a model of kind "anomaly"
    (trained on good photos only) its :class:`~visionqc.model.anomaly.AnomalyPredictor`, which needs torch."""
    if read_card(model_dir).raw.get("kind") == "anomaly":
        from visionqc.model.anomaly import AnomalyPredictor

        return AnomalyPredictor(model_dir, **options)
    return Predictor(model_dir, **options)


def _normalise(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (as torch.nn.functional.normalize: a zero row stays zero)."""
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
