"""Validation loss: the windows training evaluates (and `ligo-ds eval` on any model, commands/eval.py).

The set is the first N windows of `seq_len` tokens of the validation split, at offsets i * seq_len:
the same at every evaluation, for every world size and every launcher. Each rank takes windows
r, r + W, ... and the token-weighted sum of losses is all-reduced, so the mean is the same whatever the
split. `ligo-ds eval` runs a plain forward of an HF model (every rank a whole copy) on the same windows,
so its number for a run's final model is the run's last val_loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..data.batches import window_batch
from ..distributed import launch
from ..errors import ConfigError
from ..faults import crash_point


def num_windows(val_tokens: int, seq_len: int, wanted: int | None) -> int:
    """How many windows fit the validation split (at most `wanted`; all of them for None)."""
    n = (val_tokens - 1) // seq_len
    if n < 1:
        raise ConfigError(f"validation split has {val_tokens} tokens, fewer than one --seq-len {seq_len} window")
    return n if wanted is None else min(wanted, n)


def window_totals(
    forward: Callable[[torch.Tensor], torch.Tensor],
    val,  # a token stream or array
    seq_len: int,
    micro_batch: int,
    n: int,
    rank: int,
    world: int,
    device: torch.device,
) -> torch.Tensor:
    """(sum of token losses, token count) in float64 over this rank's share of the first `n` windows.

    Every rank runs the same number of forwards; ranks with fewer windows run padded batches of weight
    zero, because under ZeRO-3 every rank must take part in every forward.
    """
    mine = list(range(rank, n, world))
    batches = math.ceil(math.ceil(n / world) / micro_batch)
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for i in range(batches):
        idx = mine[i * micro_batch : (i + 1) * micro_batch]
        ids, targets = window_batch(val, np.asarray(idx or [0], dtype=np.int64) * seq_len, seq_len)
        logits = forward(ids.to(device))
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.to(device).flatten(), reduction="sum")
        crash_point("eval")
        if idx:
            totals += torch.stack([loss.double(), torch.tensor(targets.numel(), dtype=torch.float64, device=device)])
    return totals


class Evaluator:
    """The trainer's validation pass: the mean loss over the first eval_samples windows, split across ranks."""

    def __init__(self, engine, data, seq_len: int, micro_batch: int, eval_samples: int, d):
        self.engine, self.data, self.d = engine, data, d
        self.seq_len, self.micro_batch, self.eval_samples = seq_len, micro_batch, eval_samples

    @torch.no_grad()
    def evaluate(self) -> float:
        d, engine = self.d, self.engine
        val = self.data.validation()
        n = num_windows(len(val), self.seq_len, self.eval_samples)
        engine.eval()
        totals = window_totals(engine, val, self.seq_len, self.micro_batch, n, d.rank, d.world_size, d.device)
        engine.train()
        launch.all_reduce_sum(totals)
        return (totals[0] / totals[1]).item()
