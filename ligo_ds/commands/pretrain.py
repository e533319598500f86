"""`ligo-ds pretrain` (the work: training/pretrain.py)."""

from __future__ import annotations

from ..training.pretrain import PretrainOptions, pretrain
from . import is_rank0

Options = PretrainOptions
CONFIG_FILE = True


def run(opts: PretrainOptions) -> int:
    """Pretrain a model with DeepSpeed (ZeRO 1-3), from scratch or continuing an HF checkpoint.

    Works under every launcher: plain python (one process), torchrun, the deepspeed launcher, mpirun
    and srun. Writes RUN_DIR/{config.json, ds_config.json, checkpoints/, metrics.jsonl, tb/, hf/}.
    Rerunning the same command resumes from the latest complete checkpoint.
    """
    hf = pretrain(opts)
    if hf is not None and is_rank0():
        print(f"done: final weights in {hf}")
    return 0
