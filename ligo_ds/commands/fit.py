"""`ligo-ds fit` (the work: growth/fit.py)."""

from __future__ import annotations

from ..growth.fit import FitOptions, fit
from . import is_rank0

Options = FitOptions
CONFIG_FILE = True


def run(opts: FitOptions) -> int:
    """Fit the LiGO operator (small HF model -> target config) on the large model's LM loss.

    Only the operator trains; under ZeRO-3 it and the frozen source weights are partitioned across
    ranks. Writes RUN_DIR/hf (the grown model), metrics and checkpoints; reruns resume.
    """
    result = fit(opts)
    if not result.stopped and is_rank0():
        print(f"done: grown model in {result.hf} (fit FLOPs {result.flops:.3e})")
    return 0
