"""The PyTorch network as an inference runtime: BatchNorm folded into the convolutions, channels-last for oneDNN.

The ``torch`` runtime classifies with it, and heatmaps (which need gradients) always use it: the
:class:`~visionqc.model.predict.Predictor` builds it only when one of them first asks.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from visionqc.model.checkpoint import Checkpoint
from visionqc.model.network import DefectNet, fuse_batchnorm_for_inference


def inference_copy(checkpoint: Checkpoint) -> DefectNet:
    """A fused, channels-last copy of the checkpoint's network (the checkpoint's own stays trainable)."""
    model = fuse_batchnorm_for_inference(copy.deepcopy(checkpoint.model)).to(memory_format=torch.channels_last)
    return model.eval()


def to_batch(arrays: np.ndarray) -> torch.Tensor:
    """NHWC float32 -> NCHW viewed in channels-last memory: no copy."""
    return torch.from_numpy(arrays).permute(0, 3, 1, 2)


class EagerNetwork:
    runtime = "torch"

    def __init__(self, checkpoint: Checkpoint):
        self.model = inference_copy(checkpoint)

    @torch.inference_mode()
    def forward(self, batch: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """NHWC float32 batch -> (task -> probabilities [B, classes], embedding [B, 1280])."""
        logits, embedding = self.model(to_batch(batch))
        return {task: torch.softmax(v, dim=1).numpy() for task, v in logits.items()}, embedding.numpy()
