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
    matters most: it starts near the small model's loss, so it needs fewer tokens than a scratch run, and
    how many fewer depends on the budget: the scratch run's tokens per target parameter. Keep the scratch
    run's --lr and --warmup-steps (cosine to the floor over the shorter run: LEMON's "keep the peak, decay
    faster") and train for, of the scratch run's tokens, fit included (bench/README.md, "Savings against the
    token budget": GPT-2 pairs of 1.1M and 3.7M targets, seed 1234; the shortest length that reached the
    scratch run's loss, the slowest method's):
      about 0.15 tokens per parameter: a third (every method reached it at 0.3, LiGO's fit included)
      about 1 token per parameter: a quarter from a small model whose lr was tuned (three seeds: 0.15-0.20
        for LiGO, 0.17-0.24 for Net2Net + zero); from one held at twice its best lr (0.16-0.38 nats worse)
        0.37-0.84 for LiGO and 0.41 to more than 1 for the heuristics, so tune the small model first; on
        the 3.7M target a half (0.36 LiGO, 0.42-0.44 the heuristics)
      about 4 tokens per parameter: a half to two thirds with LiGO (GPT-2, three seeds: 0.57-0.68; Llama,
        two: 0.48-0.59), two thirds to nearly all of it with the heuristics (0.67-0.95)
      more: on that pair the heuristics' saving heads to 0 near 7-9 tokens per parameter and LiGO's near 26
        (a line through two budgets), so measure your pair with bench/savings.py --budgets, or
        bench/budgets.py at your budget.
    Chinchilla-optimal training is about 20 tokens per parameter: growth saves most well below it.
    """
    hf = grow(opts)
    if hf is not None and is_rank0():
        print(f"done: trained grown model in {hf}")
    return 0
