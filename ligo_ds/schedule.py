"""The learning rate at each step: a pure function of the step, the run's length and its Schedule."""

from __future__ import annotations

import math

from .options import Schedule


def lr_at(step: int, total: int, schedule: Schedule) -> float:
    """Linear warmup to `lr` over warmup_steps, then cosine decay to the floor at `total`."""
    s = schedule
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    span = max(1, total - s.warmup_steps)
    progress = min(1.0, (step - s.warmup_steps) / span)
    return s.floor_lr + 0.5 * (s.lr - s.floor_lr) * (1 + math.cos(math.pi * progress))
