"""elpv, full fine-tuning under a wall-clock budget: is training every layer of ImageNet Lite0 better than the
trainer's frozen features (phase 1) and its partial fine-tuning (phase 2), within the issue's 10 minutes?

The same splits as ``benchmarks/elpv.py`` (75 / 25 % train+validation / test, stratified by level and type, 15 %
validation). Every layer of ImageNet EfficientNet-Lite0 trains on the training part (the cells read once in
grayscale, squashed to ``--size``, normalised by the mean and spread of ImageNet's channel means, copied to three
channels): AdamW (the backbone at 0.3 x the heads' rate, weight decay 1e-4), 5 % linear warm-up then a cosine
decay over the wall-clock budget, batches of 32, each cell in one of the 8 symmetric views
(``visionqc.model.network.DIHEDRAL``) at random with a random gain and offset of 10 %, cross-entropy with label
smoothing 0.1 weighted by the square root of the inverse class frequency. One-view validation accuracy after
every epoch is printed; at the end, validation and test accuracy with the mean of the 8 views' probabilities (and
test with one view). No choice is made on the test split. One JSON line per run is appended to
``benchmarks/results/elpv_finetune.jsonl``.

    python benchmarks/elpv_finetune.py ../shared/data/elpv --size 160 --budget 480 --seed 0

Training time is the budget (the cells' reading and the final evaluation come on top); the machine's load is
printed with the result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from elpv import VAL_FRACTION, append_results  # noqa: E402

from visionqc.model.network import DefectNet, dihedral, load_imagenet_backbone  # noqa: E402
from visionqc.training.datasets import load_dataset, stratified_split  # noqa: E402
from visionqc.training.probability_labels import default_test_fraction  # noqa: E402

RESULTS = HERE / "results" / "elpv_finetune.jsonl"
BATCH = 32
MEAN, STD = 0.449 * 255, 0.226 * 255  # the mean of ImageNet's three channel means and spreads (grayscale cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--budget", type=float, default=480.0, help="training seconds (wall clock)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3, help="the heads' peak rate (the backbone's: 0.3 x)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(2)

    dataset = load_dataset(args.data)
    train_idx, val_idx, test_idx = stratified_split(
        dataset.strata(), VAL_FRACTION, default_test_fraction(dataset), args.seed
    )
    classes = dataset.defect_classes
    labels = np.array([classes.index(s.defect) for s in dataset.samples])
    side = (args.size, args.size)
    cells = np.stack(
        [np.asarray(Image.open(s.path).convert("L").resize(side, Image.Resampling.BILINEAR)) for s in dataset.samples]
    )

    def batch(idx: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(cells[idx]).float().sub_(MEAN).div_(STD)[:, None].expand(-1, 3, -1, -1)
        return x.contiguous(memory_format=torch.channels_last)

    net = DefectNet({"defect": len(classes)})
    load_imagenet_backbone(net)
    net = net.to(memory_format=torch.channels_last)
    heads = [p for n, p in net.named_parameters() if n.startswith("heads")]
    body = [p for n, p in net.named_parameters() if not n.startswith("heads")]
    peaks = (0.3 * args.lr, args.lr)
    opt = torch.optim.AdamW([{"params": body, "lr": peaks[0]}, {"params": heads, "lr": peaks[1]}], weight_decay=1e-4)
    counts = np.bincount(labels[train_idx], minlength=len(classes))
    weight = torch.tensor((counts.sum() / counts) ** 0.5, dtype=torch.float32)
    weight /= weight.mean()

    @torch.no_grad()
    def accuracy(idx: np.ndarray, views: int) -> tuple[float, float]:
        """(four-class accuracy, functional-vs-defective accuracy) with the mean of ``views`` views' probabilities."""
        net.eval()
        probs = []
        for i in range(0, len(idx), 64):
            x = batch(idx[i : i + 64])
            probs.append(sum(F.softmax(net(dihedral(x, k))[0]["defect"], 1) for k in range(views)))
        pred, truth = torch.cat(probs).argmax(1).numpy(), labels[idx]
        return round(float((pred == truth).mean()), 4), round(float(((pred > 0) == (truth > 0)).mean()), 4)

    start, epochs, steps, history = time.perf_counter(), 0, 0, []
    while time.perf_counter() - start < args.budget:
        net.train()
        order = rng.permutation(train_idx)
        for i in range(0, len(order) - BATCH + 1, BATCH):
            share = (time.perf_counter() - start) / args.budget
            if share >= 1:
                break
            for group, peak in zip(opt.param_groups, peaks, strict=True):
                group["lr"] = peak * min(1.0, share / 0.05) * 0.5 * (1 + math.cos(math.pi * share))
            idx = order[i : i + BATCH]
            x = torch.stack(
                [dihedral(xi[None], int(k))[0] for xi, k in zip(batch(idx), rng.integers(0, 8, len(idx)), strict=True)]
            )
            x = x * (1 + 0.1 * torch.randn(len(idx), 1, 1, 1)) + 0.1 * torch.randn(len(idx), 1, 1, 1)
            loss = F.cross_entropy(
                net(x.contiguous(memory_format=torch.channels_last))[0]["defect"],
                torch.from_numpy(labels[idx]),
                weight=weight,
                label_smoothing=0.1,
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        epochs += 1
        val = accuracy(val_idx, views=1)
        history.append(val[0])
        print(f"epoch {epochs}: {time.perf_counter() - start:.0f} s, {steps} steps, validation (one view) {val[0]}")
    train_s = time.perf_counter() - start
    result = {
        "seed": args.seed,
        "size": args.size,
        "budget_seconds": args.budget,
        "lr": args.lr,
        "epochs": epochs,
        "steps": steps,
        "train_seconds": round(train_s, 1),
        "validation_one_view_by_epoch": history,
        "validation_8_views": accuracy(val_idx, views=8),
        "test_8_views": accuracy(test_idx, views=8),
        "test_one_view": accuracy(test_idx, views=1),
        "images": {"train": len(train_idx), "validation": len(val_idx), "test": len(test_idx)},
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "command": "python benchmarks/elpv_finetune.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(result))
    append_results(RESULTS, {}, [result])


if __name__ == "__main__":
    main()
