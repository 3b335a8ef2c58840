"""What every command shares: exit codes and loading the model with a message instead of a traceback."""

from __future__ import annotations

import argparse
import sys

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_NOTHING_READ = 2
EXIT_BAD_MODEL = 3
EXIT_STORE_ERROR = 4


def load_predictor(args: argparse.Namespace):
    from visionqc.actions import ActionPolicy
    from visionqc.model.card import ModelLoadError
    from visionqc.model.predict import Predictor

    policy = ActionPolicy.from_file(args.policy) if getattr(args, "policy", None) else None
    try:
        return Predictor(args.model, policy=policy)
    except ModelLoadError as exc:
        print(f"error: cannot load model {args.model}: {exc}", file=sys.stderr)
        return None
