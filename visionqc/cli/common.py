"""What every command shares: exit codes and loading the model with a message instead of a traceback."""

from __future__ import annotations

import argparse
import sys

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_NOTHING_READ = 2
EXIT_BAD_MODEL = 3
EXIT_STORE_ERROR = 4


RUNTIME_CHOICES = ("auto", "torch", "onnx", "int8")
RUNTIME_HELP = (
    "network runtime: torch (PyTorch), onnx (ONNX Runtime, fp32 graph), int8 (ONNX Runtime, int8 graph), or "
    "auto, the fastest the model card's measured parity allows (default: %(default)s, or $VISIONQC_RUNTIME)"
)


def add_runtime_option(parser: argparse.ArgumentParser) -> None:
    from visionqc import config

    parser.add_argument("--runtime", choices=RUNTIME_CHOICES, default=config.runtime(), help=RUNTIME_HELP)


def active_model_dir(station: str | None = None):
    """The registry's active model (for ``station`` when it has one), registering the shipped model on first use."""
    from visionqc import config
    from visionqc.registry import ModelRegistry

    if config.pinned_model_dir() is None:
        ModelRegistry(config.data_dir()).ensure_initialised()
    return config.model_dir(station)


def load_predictor(args: argparse.Namespace):
    """The Predictor the arguments ask for, or ``None`` after printing why the model cannot be loaded."""
    from visionqc.actions import ActionPolicy
    from visionqc.model.card import ModelLoadError
    from visionqc.model.predict import open_predictor

    policy = ActionPolicy.from_file(args.policy) if getattr(args, "policy", None) else None
    if getattr(args, "model", None) is None:
        args.model = active_model_dir(getattr(args, "station", None))
    try:
        predictor = open_predictor(args.model, policy=policy, runtime=getattr(args, "runtime", None))
    except ModelLoadError as exc:
        print(f"error: cannot load model {args.model}: {exc}", file=sys.stderr)
        return None
    if predictor.runtime_warning:
        print(f"warning: {predictor.runtime_warning}", file=sys.stderr)
    return predictor
