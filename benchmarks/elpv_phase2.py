"""elpv, phase 2 on validation: does fine-tuning the last backbone blocks beat phase 1 (the heads alone)?

The same splits as ``benchmarks/elpv.py`` (75 / 25 % train+validation / test, stratified by level and type, 15 %
validation, seeds 0, 1, 2). Per seed, phase 1 is what ``train`` does on a symmetric set (the recipe of
``trainer.SYMMETRIC_PHASE1`` chosen on validation accuracy, test-time augmentation chosen on validation), on the
embeddings of the 8 symmetric views; then each phase-2 variant of :data:`VARIANTS` starts from a copy of those
heads and trains the last blocks on the cached activations entering them (all 8 views, a random view per sample
so every batch mixes views), validation with the chosen test-time augmentation. What is compared is
**validation** accuracy (the elpv paper's metric); the test accuracy of each variant is printed too, to report
what is kept, not to choose. One JSON line per run (with the per-epoch validation history and the load
average) is appended to ``benchmarks/results/elpv_phase2.jsonl``.

The 8 views' activations entering block 8 (and the embeddings) are extracted once by the trainer's own
``extract_features`` (fused inference network, as ``train``) and saved in fp16 to ``--cache`` (0.77 GB; 18
minutes at load 3); the activations entering blocks 11 and 14 are computed from them with the trainable network
and cached beside it.
Timings are this machine's under its load at the time (printed with every line).

    python benchmarks/elpv_phase2.py ../shared/data/elpv --seeds 0      # the b14 variants, seed 0
    python benchmarks/elpv_phase2.py ../shared/data/elpv --variants b11-h0 --seeds 0
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from visionqc.model.card import PRIMARY_TASK  # noqa: E402
from visionqc.model.network import DefectNet, load_imagenet_backbone  # noqa: E402
from visionqc.training.budget import seconds_per_pass  # noqa: E402
from visionqc.training.config import TrainConfig  # noqa: E402
from visionqc.training.datasets import load_dataset, stratified_split  # noqa: E402
from visionqc.training.features import FeatureCache, extract_features  # noqa: E402
from visionqc.training.phases import finetune_last_blocks, set_heads, tail_embeddings  # noqa: E402
from visionqc.training.probability_labels import default_test_fraction  # noqa: E402
from visionqc.training.trainer import (  # noqa: E402
    base_card,
    choose_phase1_recipe,
    choose_tta,
    defect_predictions,
    in_memory_predictor,
    task_labels,
)

RESULTS = Path(__file__).resolve().parent / "results" / "elpv_phase2.jsonl"
VAL_FRACTION = 0.15
VIEWS = 8
# The refined recipe: discriminative learning rates, a warm-up of half an epoch, label smoothing, more weight
# decay, more epochs, the epoch kept on validation accuracy.
REFINED = {
    "phase2_lr": 5e-4,
    "phase2_lr_decay": 0.7,
    "phase2_warmup": 0.5,
    "phase2_label_smoothing": 0.1,
    "phase2_weight_decay": 0.05,
    "phase2_epochs": 8,
    "phase2_patience": 8,
    "phase2_select_on": "accuracy",
}
# name -> (block the trained part starts at, TrainConfig overrides)
VARIANTS = {
    "b14-plain": (14, {}),  # today's phase 2: the last 2 blocks, one learning rate, selection on the loss
    "b14": (14, REFINED),
    "b11": (11, REFINED),
    "b8": (8, REFINED),
    # The heads (fitted in phase 1 with an L2 penalty) barely moving: Adam moves every weight of a 1280-d head by
    # about the learning rate per step, which shifts the logits by whole units within an epoch.
    "b14-h0": (14, {**REFINED, "phase2_lr": 2e-4, "phase2_head_lr_scale": 0.0}),
    "b14-h01": (14, {**REFINED, "phase2_lr": 2e-4, "phase2_head_lr_scale": 0.01}),
    "b11-h0": (11, {**REFINED, "phase2_lr": 2e-4, "phase2_head_lr_scale": 0.0}),
    "b14-h0-lr2e-5": (14, {**REFINED, "phase2_lr": 2e-5, "phase2_head_lr_scale": 0.0}),
}


def load_cache(dataset, path: Path) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(embeddings [8, N, 1280], fp16 activations entering block 8 [8, N, 80, 14, 14], extraction seconds)."""
    if not path.exists():
        cfg = TrainConfig(progress=False)
        model = DefectNet({t: len(c) for t, c in dataset.tasks.items()})
        load_imagenet_backbone(model)
        model.eval()
        paths = [s.path for s in dataset.samples]
        predictor = in_memory_predictor(base_card(dataset, cfg), model)
        cache = extract_features(predictor, paths, VIEWS, 0, 8, progress=True, augmentation="dihedral")
        if cache.failed:
            raise SystemExit(f"unreadable images: {cache.failed}")
        torch.save({"emb": cache.embeddings, "acts": cache.activations.half(), "seconds": cache.seconds}, path)
    saved = torch.load(path, weights_only=True)
    return saved["emb"], saved["acts"], float(saved["seconds"])


@torch.no_grad()
def entering(model: DefectNet, acts8: torch.Tensor, split: int, path: Path) -> torch.Tensor:
    """Activations entering block ``split`` from those entering block 8 (fp16, cached at ``path``)."""
    if split == 8:
        return acts8
    if path.exists():
        return torch.load(path, weights_only=True)
    model.eval()
    views, n = acts8.shape[:2]
    out = None
    for v in range(views):
        for s in range(0, n, 256):
            x = model.blocks(acts8[v, s : s + 256].float(), 8, split)
            if out is None:
                out = torch.zeros(views, n, *x.shape[1:], dtype=torch.float16)
            out[v, s : s + 256] = x.half()
    torch.save(out, path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument(
        "--variants", default="b14-plain,b14,b14-h0,b14-h01", help=f"comma-separated: {', '.join(VARIANTS)}"
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--views", type=int, default=VIEWS, help="use the first n symmetric views (default: 8)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/elpv8_split8.pt"), help="activation cache file")
    args = parser.parse_args(argv)
    command = "python benchmarks/elpv_phase2.py " + " ".join(sys.argv[1:] if argv is None else argv)
    dataset = load_dataset(args.data)
    test_fraction = default_test_fraction(dataset)
    emb, acts8, extraction_seconds = load_cache(dataset, args.cache)
    emb = emb[: args.views]
    labels = task_labels(dataset)
    task_sizes = {t: len(c) for t, c in dataset.tasks.items()}
    y = labels[PRIMARY_TASK]
    model = DefectNet(task_sizes)
    load_imagenet_backbone(model)
    model.eval()
    timing_network = in_memory_predictor(base_card(dataset, TrainConfig()), copy.deepcopy(model)).model
    activations = {}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for seed in [int(s) for s in args.seeds.split(",")]:
        tr, va, te = stratified_split(dataset.strata(), VAL_FRACTION, test_fraction, seed)
        cfg = TrainConfig(seed=seed, test_fraction=test_fraction, progress=False)
        t0 = time.perf_counter()
        cfg, heads, _, recipe = choose_phase1_recipe(emb, labels, task_sizes, tr, va, cfg, args.views)
        tta, _ = choose_tta(heads, emb, y, va, args.views)
        phase1_seconds = time.perf_counter() - t0
        phase1 = {
            "validation_accuracy": float((defect_predictions(heads, emb, va, tta) == y[va]).mean()),
            "test_accuracy": float((defect_predictions(heads, emb, te, tta) == y[te]).mean()),
        }
        set_heads(model, heads)
        model.tta_views = tta
        for name in args.variants.split(","):
            split, overrides = VARIANTS[name]
            if split not in activations:
                activations[split] = entering(model, acts8, split, args.cache.with_suffix(f".split{split}.pt"))
            variant_cfg = dataclasses.replace(cfg, **overrides)
            candidate = copy.deepcopy(model)
            acts = activations[split][: args.views]
            cache = FeatureCache(emb, acts, split, {}, extraction_seconds)
            load = [round(v, 2) for v in os.getloadavg()]
            spp = seconds_per_pass(timing_network, cfg.input_size)
            result = finetune_last_blocks(candidate, cache, labels, tr, va, variant_cfg, True, val_views=tta)
            test_emb = tail_embeddings(candidate, acts, torch.from_numpy(te), split, tta)
            with torch.no_grad():
                test_pred = candidate.head_logits(test_emb)[PRIMARY_TASK].argmax(1).numpy()
            row = {
                "when": datetime.now(UTC).replace(microsecond=0).isoformat(),
                "command": command,
                "variant": name,
                "unfrozen_from_block": split,
                "overrides": overrides,
                "seed": seed,
                "views": args.views,
                "phase1_recipe": recipe["chosen"],
                "tta_views": tta,
                "phase1_validation_accuracy": round(phase1["validation_accuracy"], 4),
                "phase1_test_accuracy": round(phase1["test_accuracy"], 4),
                "phase1_seconds": round(phase1_seconds, 1),
                "phase2_validation_accuracy": round(result.val_accuracy, 4),
                "phase2_validation_balanced_accuracy": round(result.val_balanced_accuracy, 4),
                "phase2_best_epoch": result.best_epoch,
                "phase2_epochs_run": result.epochs_run,
                "phase2_seconds": round(result.seconds, 1),
                # phase-2 seconds in network passes (one image through the whole inference network, measured
                # just before): what visionqc.training.budget estimates phase 2 from
                "seconds_per_pass": round(spp, 4),
                "phase2_passes": round(result.seconds / spp),
                "phase2_test_accuracy": round(float((test_pred == y[te]).mean()), 4),
                "history": result.history,
                "load_average_before": load,
                "load_average_after": [round(v, 2) for v in os.getloadavg()],
                "threads": torch.get_num_threads(),
            }
            with RESULTS.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            short = {k: v for k, v in row.items() if k not in ("history", "command", "overrides", "when")}
            print(json.dumps(short), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
