"""`ligo-ds grow` (the work: growth/grow.py)."""

from __future__ import annotations

from ..growth.grow import GrowOptions, grow
from . import is_rank0

Options = GrowOptions
CONFIG_FILE = True


def run(opts: GrowOptions) -> int:
    """Grow a small HF model into a target shape and pretrain the grown model, in one job.

    Fits the LiGO operator (RUN_DIR/fit), writes the grown model (RUN_DIR/grown), hands it to DeepSpeed
    pretraining partitioned by ZeRO (each rank writes its own partition) and trains it (RUN_DIR/train).
    Options shared by both phases (batch, sequence length, cadence, DeepSpeed config) apply to both.

    How long to train the grown model (the --max-steps or --max-tokens of its schedule) is the choice that
    matters most: it starts near the small model's loss, so it needs far fewer tokens than a scratch run.
    Recommended: a full schedule of about a third of the scratch run's tokens, keeping the scratch run's
    --lr and --warmup-steps (cosine to the floor over the shorter run: LEMON's "keep the peak, decay
    faster"). In the CPU study (bench/README.md: targets of 5M parameters trained on 0.15 tokens per
    parameter, far below the budgets models are trained at), over three seeds of GPT-2 and Llama pairs,
    models grown this way by LiGO reached the scratch run's final loss with 0.16-0.30 of its tokens, fit
    included: a third is the safe end. Shorter warmups did no better at a quarter of the length, wsd (--schedule
    wsd) a little better at half of it. Measure it on your own pair with bench/savings.py --budgets.
    """
    hf = grow(opts)
    if hf is not None and is_rank0():
        print(f"done: trained grown model in {hf}")
    return 0
