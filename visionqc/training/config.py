"""The training settings, with the defaults :func:`visionqc.training.trainer.train` and the CLI use."""

from __future__ import annotations

from dataclasses import dataclass, field

# (x - 127) / 128 on 0-255 RGB: the convention of the EfficientNet-Lite ImageNet weights.
NORMALISATION_MEAN = [127.0, 127.0, 127.0]
NORMALISATION_STD = [128.0, 128.0, 128.0]
DEFAULT_LOSS_WEIGHTS = {"defect": 1.0, "severity": 0.7, "location": 0.7}


@dataclass
class TrainConfig:
    name: str = "visionqc-model"
    version: str = "1"
    seed: int = 0  # split seed; the same seed also drives initialisation, sampling and augmentation
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    input_size: int = 224
    views: int = 3  # cached views per image with "crops": the original plus views - 1 augmented ones
    # "crops" (random crops + brightness/contrast; no flips: on inspection photos they cost accuracy),
    # "dihedral" (the image's 8 symmetries: flips and quarter turns; for parts that look the same turned, such
    # as solar cells; also makes test-time augmentation a choice on validation), or "auto": dihedral when the
    # dataset says its parts are symmetric (Dataset.symmetric), else crops.
    augmentation: str = "auto"
    dihedral_views: int = 8  # cached views with "dihedral" (the first n symmetries of network.DIHEDRAL)
    # Wall-clock seconds the whole run should fit in: the trainer measures the network's speed on this machine
    # first and leaves out what would not fit (see visionqc.training.budget). None = no limit.
    time_budget: float | None = 600.0
    epochs: int = 150  # phase 1 (heads only); one epoch = as many balanced draws as training images
    lr: float = 1e-3
    weight_decay: float = 1e-3
    patience: int = 30
    phase2: bool = True
    phase2_epochs: int = 10
    phase2_lr: float = 2e-4
    phase2_patience: int = 4
    # Phase 2's refinements (defaults = the plain recipe: one learning rate, no warm-up, no smoothing; tried on
    # elpv by benchmarks/elpv_phase2.py, none beat phase 1 there): each unfrozen block's learning rate is
    # phase2_lr times phase2_lr_decay per block below the last (the head convolution gets phase2_lr, the heads
    # phase2_lr x phase2_head_lr_scale); the rate rises linearly over the first phase2_warmup epochs, then
    # follows the cosine; label smoothing on every task's cross-entropy; AdamW's decay (None = weight_decay).
    phase2_lr_decay: float = 1.0
    phase2_head_lr_scale: float = 1.0  # the heads' learning rate = phase2_lr x this (0 = the heads stay as phase 1)
    phase2_warmup: float = 0.0
    phase2_label_smoothing: float = 0.0
    phase2_weight_decay: float | None = None
    phase2_select_on: str | None = None  # None = select_on; "accuracy" keeps the epoch of best validation accuracy
    # Which epoch to keep: lowest validation loss. Validation balanced accuracy moves in steps of 1/5 for a
    # class with 5 validation images; selecting on it stopped too early (6 repeated splits on Magnetic-tile:
    # test balanced accuracy 0.921 +- 0.052 selecting on it, 0.941 +- 0.033 selecting on the loss).
    select_on: str = "loss"  # or "balanced_accuracy" (ties broken by loss)
    selection_loss: str = "multitask"  # "multitask" (weighted sum over tasks) or "defect" (the defect task only)
    unfreeze_blocks: int = 2  # last MBConv blocks trained in phase 2 (plus the 1x1 head convolution)
    batch_size: int = 64
    balance_power: float = 1.0  # class-balanced sampling strength (see balanced_draws)
    dropout: float = 0.2  # on the embedding, before the heads (phase 1)
    # Phase 1: L2 penalty on the heads' weights (on standardised embeddings), added to the loss; 0 = none. For a
    # dataset whose parts are symmetric the trainer chooses it (and the sampling) on validation: SYMMETRIC_PHASE1.
    head_l2: float = 0.0
    # The conv-head candidate (visionqc.training.conv_head): a small convolutional head on the frozen backbone's
    # activations entering block 15, kept only if it beats the linear heads on validation. "auto": tried for every
    # dataset unless the time budget leaves it out (it wins on elpv and magnetic tile: docs/MODEL_RESULTS.md);
    # "off": never.
    conv_head: str = "auto"
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSS_WEIGHTS))
    repeats: int = 5  # repeated random splits for the mean/std of phase 1 (0 = skip)
    max_per_class: int | None = None  # use at most this many images per defect class (quick runs, tests)
    review_target_accuracy: float = 0.95
    max_review_share: float = 0.25
    ood_quantile: float = 0.99
    # Miss-averse review: validation defects caught or flagged, and the budget of second looks at good parts.
    miss_target_recall: float = 0.98
    miss_max_free_flagged: float = 0.10
    ood_k: int = 5
    export: bool = True  # ONNX graphs (fp32, int8) and their parity, after training (visionqc.training.export)
    progress: bool = True
