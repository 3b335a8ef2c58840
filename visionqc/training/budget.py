"""The time budget (``train --time-budget``): what a training run can afford on this machine, decided before it starts.

The trainer times the network on a small batch at the run's input size (the same fused, channels-last copy that
extracts the features, so the load of the machine right now is in the number) and estimates each step of the
recipe from it (:func:`estimate`). When the estimate exceeds the budget it leaves out, in this order, what costs
most for the least accuracy: the card's repeated splits (they change nothing in the model), then phase 2 (ten
epochs cost about as much as five more cached views, and it rarely beats phase 1: see docs/MODEL_RESULTS.md),
then cached views (halved until the run fits, down to one), then the conv-head candidate (it costs about half a
minute and is where elpv's accuracy comes from). The smallest run is made even when it does not fit.
The plan, the measured speed and what was left out are written to the card (``training.budget``). A run so small
that it fits the budget even at a pessimistic pace (:data:`SLOW_PASS`) is not timed (:func:`plan_timed`).

The coefficients are rough and meant to over- rather than under-estimate: they come from the elpv and
magnetic-tile runs recorded in docs/MODEL_RESULTS.md (feature extraction is about 1.2 network passes per view,
decoding included; a phase-2 epoch about 0.5 network passes per training image; the ONNX export half a minute
plus its parity passes). The pass is timed on a batch of 32 random images, the median of three: a batch of 8
zeros, timed by the best of two (before 2026-12-06), measured 0.010-0.021 s on the same quiet machine depending on
how warm the process was, while extraction ran at 0.020-0.034 s a view, so the plan overran the budget (elpv
seeds 1 and 2: 8 views and phase 2 planned for 432 s, 700 s taken); a batch of 32 measured 0.023-0.027 s against
0.027-0.031 s of extraction in the same process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from visionqc.training.conv_head import EPOCHS as CONV_HEAD_EPOCHS

FEATURE_PASS = 1.3  # seconds per view = FEATURE_PASS x one network pass (decode and augmentation included)
PHASE2_PASS = 0.5  # a phase-2 epoch: this many network passes per training image (the tail only, fwd + bwd)
PHASE1_SECONDS = 30.0
REPEAT_SECONDS = 8.0
# The export: writing both graphs and the int8 calibration (magnetic tile 14 s, elpv with 2 views averaged 23 s since
# the calibration is fed in chunks; 44-67 s before), plus the parity run on the test images: PyTorch is one pass,
# the fp32 and int8 graphs about 0.35 and 0.15 of one (2026-12-07: 42 / 116 / 274 and 19 / 59 / 127 images/s), and
# the decoding; a whole export took 29 s on magnetic tile (202 test images) and 83 s on elpv (654, 2 views).
EXPORT_SECONDS = 30.0
EXPORT_PASSES = 2.0
# The conv-head candidate: this many network passes per training image and epoch (elpv: 40 epochs on 1,576 cells
# took 27.8 s, 0.017 of a 0.025 s pass), which also covers running block 14 once on the cache when phase 2
# cached the activations entering it.
CONV_HEAD_PASS = 0.025
# Slower than any pass measured on the 2-core machines here (0.023-0.034 s) by a factor of 7: a run that fits its
# budget even at this pace is planned without timing the network (:func:`plan_timed`). Timing takes about 5 s,
# as long as the whole rest of a training run on a few dozen images.
SLOW_PASS = 0.25


@dataclass
class Plan:
    """What the run will do and what it is expected to cost."""

    views: int
    phase2: bool
    repeats: int
    seconds_per_pass: float | None  # one image through the network, measured at the start (None: not timed)
    estimated_seconds: float
    budget_seconds: float | None
    left_out: list[str] = field(default_factory=list)
    conv_head: bool = False

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds_per_pass"] = None if self.seconds_per_pass is None else round(self.seconds_per_pass, 4)
        out["estimated_seconds"] = round(self.estimated_seconds, 1)
        return out


@torch.inference_mode()
def seconds_per_pass(network: torch.nn.Module, input_size: int, batch: int = 32) -> float:
    """Seconds for one image through ``network`` (eval mode): the median of three timed passes of a batch of
    random images, after a warm-up pass (about 2-3 s at 224 px on 2 cores)."""
    x = torch.randn(batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    x = x.to(memory_format=torch.channels_last)
    network.feature_map(x)  # warm-up: the first pass of a shape sets up its kernels
    times = []
    for _ in range(3):
        start = time.perf_counter()
        network.feature_map(x)
        times.append(time.perf_counter() - start)
    return sorted(times)[1] / batch


def estimate(
    spp: float,
    *,
    images: int,
    views: int,
    phase2: bool,
    phase2_epochs: int,
    repeats: int,
    export: bool,
    train_share: float,
    test_share: float,
    tta: int,
    conv_head: bool = False,
) -> float:
    """Expected seconds of a whole run (features, phases, evaluation, export) from the measured pass time."""
    seconds = images * views * spp * FEATURE_PASS + PHASE1_SECONDS + repeats * REPEAT_SECONDS
    if phase2:
        seconds += phase2_epochs * images * train_share * spp * PHASE2_PASS
    if conv_head:
        seconds += CONV_HEAD_EPOCHS * images * train_share * spp * CONV_HEAD_PASS
    test_passes = images * test_share * tta * spp
    seconds += test_passes * FEATURE_PASS
    if export:
        seconds += EXPORT_SECONDS + test_passes * EXPORT_PASSES
    return seconds


def plan_run(
    spp: float,
    budget: float | None,
    *,
    views: int,
    phase2: bool,
    repeats: int,
    tta: int,
    conv_head: bool = False,
    **fixed: Any,
) -> Plan:
    """The richest run that fits ``budget`` seconds (None: everything asked for); see the module docstring.

    ``tta``: the most symmetries test-time augmentation may average (capped by the cached views); ``conv_head``:
    whether the conv-head candidate is asked for; ``fixed``: the rest of :func:`estimate`'s arguments (images,
    phase2_epochs, export, train_share, test_share).
    """

    def cost(v: int, p2: bool, r: int, c: bool) -> float:  # test-time augmentation can use at most the cached views
        return estimate(spp, views=v, phase2=p2, repeats=r, tta=min(tta, v), conv_head=c, **fixed)

    def over() -> bool:
        return budget is not None and cost(views, phase2, repeats, conv_head) > budget

    left_out: list[str] = []
    if over() and repeats:
        left_out.append(f"the card's {repeats} repeated splits")
        repeats = 0
    if over() and phase2:
        left_out.append("phase 2")
        phase2 = False
    asked = views
    while over() and views > 1:
        views = max(1, views // 2)
    if views < asked:
        left_out.append(f"cached views {asked} -> {views}")
    if over() and conv_head:
        left_out.append("the conv-head candidate")
        conv_head = False
    return Plan(views, phase2, repeats, spp, cost(views, phase2, repeats, conv_head), budget, left_out, conv_head)


def plan_timed(time_pass: Callable[[], float], budget: float | None, **asked: Any) -> Plan:
    """:func:`plan_run` with the network timed (``time_pass()``, seconds a pass) only when the plan depends on it.
    Without a budget, or when everything asked for fits the budget even at :data:`SLOW_PASS` seconds a pass (a few
    dozen images), nothing can be left out: the plan is made at that pace without timing, its
    ``seconds_per_pass`` is ``None`` and its estimate an upper bound."""
    unhurried = plan_run(SLOW_PASS, budget, **asked)
    if not unhurried.left_out:
        unhurried.seconds_per_pass = None
        return unhurried
    return plan_run(time_pass(), budget, **asked)
