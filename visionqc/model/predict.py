"""Prediction: load a checkpoint once, classify batches of images, decide needs-review and the action.

Depends only on the checkpoint format (never on training code). Decoding runs in a worker thread
while the network works on the previous batch, so a stream of JPEGs keeps both cores busy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from visionqc.actions import ActionPolicy
from visionqc.intake.imaging import DecodedImage, ImageDecodeError, decode_image
from visionqc.model.card import PRIMARY_TASK, ModelCard
from visionqc.model.checkpoint import Checkpoint, load_checkpoint
from visionqc.model.network import fuse_batchnorm_for_inference

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
        if include_embedding:
            out["embedding"] = [round(float(v), 5) for v in self.embedding]
        return out


class Predictor:
    """Loads a model directory once; classifies images in batches."""

    def __init__(
        self,
        model_dir: str | Path,
        policy: ActionPolicy | None = None,
        batch_size: int = 8,
        checkpoint: Checkpoint | None = None,
    ):
        self.checkpoint = checkpoint or load_checkpoint(model_dir)
        self.card: ModelCard = self.checkpoint.card
        self.policy = policy or ActionPolicy()
        self.batch_size = batch_size
        # Inference copy: BatchNorm folded into the convolutions, channels-last for oneDNN.
        self.model = fuse_batchnorm_for_inference(self._fresh_model()).to(memory_format=torch.channels_last)
        self.model.eval()
        size = self.card.input_size
        self._size = (size, size)
        self._mean = np.asarray(self.card.mean, dtype=np.float32)
        self._inv_std = 1.0 / np.asarray(self.card.std, dtype=np.float32)
        bank = self.checkpoint.ood_bank
        self._bank = None if bank is None else torch.nn.functional.normalize(bank.float(), dim=1)

    def _fresh_model(self):
        import copy

        return copy.deepcopy(self.checkpoint.model)

    def training_bank(self) -> tuple[np.ndarray, list[str]] | None:
        """The training embeddings the OOD score compares with, and each one's defect class (``None`` if the
        model has none): Explore scores stored inspections against them without touching tensors."""
        bank, labels = self.checkpoint.ood_bank, self.checkpoint.ood_bank_labels
        if bank is None:
            return None
        classes = self.card.classes(PRIMARY_TASK)
        return bank.float().numpy(), [classes[int(i)] for i in labels]

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

    def _to_batch(self, arrays: list[np.ndarray]) -> torch.Tensor:
        # Stack HWC -> NHWC, then view as NCHW in channels-last memory: no copy.
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)

    # --- network -------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward_arrays(self, arrays: list[np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        logits, embedding = self.model(self._to_batch(arrays))
        probs = {task: torch.softmax(v, dim=1).numpy() for task, v in logits.items()}
        return probs, embedding.numpy()

    def ood_scores(self, embeddings: np.ndarray) -> np.ndarray | None:
        if self._bank is None:
            return None
        z = torch.nn.functional.normalize(torch.from_numpy(embeddings).float(), dim=1)
        sims = z @ self._bank.T
        k = min(self.card.ood_k, self._bank.shape[0])
        top = sims.topk(k, dim=1).values
        return (1.0 - top.mean(dim=1)).numpy()

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

        Decoding and resizing of the next batch run in a worker thread while the network runs on the
        current one (Pillow releases the GIL while decoding). A file that fails to decode yields its
        :class:`ImageDecodeError` and never stops the stream.
        """

        def prepare(chunk: list[tuple[K, bytes]]):
            prepared = []
            for key, data in chunk:
                try:
                    decoded = self.decode(data)
                    prepared.append((key, decoded, self.preprocess(decoded.image)))
                except ImageDecodeError as exc:
                    prepared.append((key, None, exc))
            return prepared

        def chunks() -> Iterator[list[tuple[K, bytes]]]:
            chunk: list[tuple[K, bytes]] = []
            for item in items:
                chunk.append(item)
                if len(chunk) == self.batch_size:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="visionqc-decode") as pool:
            pending = None
            for chunk in chunks():
                future = pool.submit(prepare, chunk)
                if pending is not None:
                    yield from self._run_prepared(pending.result())
                pending = future
            if pending is not None:
                yield from self._run_prepared(pending.result())

    def _run_prepared(self, prepared):
        good = [(i, arr) for i, (_, _, arr) in enumerate(prepared) if isinstance(arr, np.ndarray)]
        predictions: dict[int, Prediction] = {}
        if good:
            preds = self._interpret(*self.forward_arrays([arr for _, arr in good]))
            predictions = {i: p for (i, _), p in zip(good, preds, strict=True)}
        for i, (key, decoded, arr) in enumerate(prepared):
            yield key, decoded, predictions.get(i, arr)
