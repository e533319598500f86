"""The learning rate at each step: a pure function of the step, the run's length and its Schedule.

Every schedule warms up linearly over its warmup (--warmup-steps, or by default a tenth of the run, at most
DEFAULT_WARMUP_CAP steps and never into wsd's decay, so that no run length refuses a default), then follows
its shape to the floor at `total`:
  cosine    cosine decay over the whole rest of the run (the default, and what older runs trained with)
  wsd       warmup-stable-decay: the peak until the last decay_fraction of the run, then a decay to the floor
            (linear, cosine or 1-sqrt). Every step of the stable phase has the same lr whatever the run's
            length, so a run can branch from there into a longer or shorter decay (`--branch-from`).
  constant  the peak to the end
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from ..options import Block, above, at_least, between, flag_name, option, within

SCHEDULES = ("cosine", "wsd", "constant")
MAX_STEPS = 10**9  # no run takes a billion optimizer steps; a larger --max-steps is a typo (1e30, say)
DEFAULT_DECAY_FRACTION = 0.2
DEFAULT_DECAY_SHAPE = "linear"
DEFAULT_WARMUP_SHARE, DEFAULT_WARMUP_CAP = 0.1, 100

# The decay of wsd: progress p in [0, 1] through the decay -> the share of (peak - floor) still left.
DECAY_SHAPES = {
    "linear": lambda p: 1 - p,
    "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)),
    "1-sqrt": lambda p: 1 - math.sqrt(p),  # Hägele et al. 2024: ends lower than linear at the same length
}


@dataclass(frozen=True, kw_only=True)
class Schedule(Block):
    """How long to train, and the learning rate over that time."""

    max_steps: int | None = option(
        None,
        f"optimizer steps (or give {flag_name('max_tokens')})",
        check=within(1, MAX_STEPS),
        identity="total_steps",
    )
    max_tokens: int | None = option(
        None,
        "training tokens, rounded up to whole steps (e.g. 1e11, 100B, 2.5T)",
        check=at_least(1),
        identity="total_steps",
    )
    lr: float = option(6e-4, "peak learning rate", check=above(0))
    min_lr: float | None = option(None, "the floor the decay ends at", shown_default="lr / 10", check=at_least(0))
    warmup_steps: int | None = option(
        None,
        "linear warmup steps",
        shown_default=f"a tenth of the run, at most {DEFAULT_WARMUP_CAP}",
        check=at_least(0),
    )
    schedule: str = option(
        "cosine",
        "after the warmup: cosine decay to the floor, wsd (stable at the peak, then "
        f"{flag_name('decay_fraction')} of the run decaying), or constant",
        choices=SCHEDULES,
        identity="schedule",  # its shape (shape()), only where it is not cosine
    )
    decay_fraction: float | None = option(
        None,
        "wsd: the share of the run spent decaying",
        shown_default=str(DEFAULT_DECAY_FRACTION),
        check=between(0.0, 1.0),
        identity="schedule",
    )
    decay_shape: str | None = option(
        None, "wsd: the decay's shape", choices=DECAY_SHAPES, shown_default=DEFAULT_DECAY_SHAPE, identity="schedule"
    )

    def check(self) -> None:
        flag = self.flag
        if (self.max_steps is None) == (self.max_tokens is None):
            raise ConfigError(
                f"give exactly one of {flag('max_steps')} ({self.max_steps}) and {flag('max_tokens')} "
                f"({self.max_tokens})"
            )
        if self.schedule != "wsd":
            for name in ("decay_fraction", "decay_shape"):
                if getattr(self, name) is not None:
                    raise ConfigError(
                        f"{flag(name)} {getattr(self, name)} shapes wsd's decay; this run's "
                        f"{flag('schedule')} is {self.schedule}"
                    )
        if self.schedule == "constant" and self.min_lr is not None:
            raise ConfigError(f"{flag('min_lr')} {self.min_lr}: a constant {flag('schedule')} never decays to a floor")
        if self.min_lr is not None and self.min_lr > self.lr:
            raise ConfigError(
                f"learning rates must satisfy 0 <= {flag('min_lr')} ({self.min_lr}) <= {flag('lr')} ({self.lr})"
            )
        if self.max_steps is not None:  # with --max-tokens the length needs the world size: session.start
            check_fits(self.max_steps, self)

    def warmup(self, total: int) -> int:
        """The warmup of a run of `total` steps: the one given, else a tenth of the run, at most
        DEFAULT_WARMUP_CAP, ending before wsd's decay starts."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        stable = total - decay_steps(total, self) if self.schedule == "wsd" else total
        return min(DEFAULT_WARMUP_CAP, int(DEFAULT_WARMUP_SHARE * total), stable)

    @property
    def floor_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr

    @property
    def wsd_fraction(self) -> float:
        return DEFAULT_DECAY_FRACTION if self.decay_fraction is None else self.decay_fraction

    @property
    def wsd_shape(self) -> str:
        return DEFAULT_DECAY_SHAPE if self.decay_shape is None else self.decay_shape

    def shape(self) -> dict:
        """The schedule's shape beyond lr, min_lr and warmup, for a run's identity: {} for cosine."""
        return {
            "cosine": {},
            "constant": {"schedule": "constant"},
            "wsd": {"schedule": "wsd", "decay_fraction": self.wsd_fraction, "decay_shape": self.wsd_shape},
        }[self.schedule]

    def total_steps(self, sequences_per_step: int, seq_len: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return -(-self.max_tokens // (sequences_per_step * seq_len))


def decay_steps(total: int, schedule: Schedule) -> int:
    """Steps of wsd's decay: decay_fraction of the run, rounded, at least one."""
    return max(1, round(schedule.wsd_fraction * total))


def decay_start(total: int, schedule: Schedule) -> int:
    """The first step whose lr is below the peak: the end of the warmup (cosine), of the stable phase (wsd),
    or never (constant)."""
    if schedule.schedule == "constant":
        return total
    if schedule.schedule == "wsd":
        return total - decay_steps(total, schedule)
    return schedule.warmup(total)


def _cosine(step: int, total: int, s: Schedule) -> float:
    warmup = s.warmup(total)
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return s.floor_lr + 0.5 * (s.lr - s.floor_lr) * (1 + math.cos(math.pi * progress))


def _wsd(step: int, total: int, s: Schedule) -> float:
    n = decay_steps(total, s)
    progress = min(1.0, max(0.0, (step - (total - n)) / n))
    return s.floor_lr + (s.lr - s.floor_lr) * DECAY_SHAPES[s.wsd_shape](progress)


SHAPES = {"cosine": _cosine, "wsd": _wsd, "constant": lambda step, total, s: s.lr}


def lr_at(step: int, total: int, schedule: Schedule) -> float:
    """The lr of the update that follows `step` updates, in a run of `total`."""
    s = schedule
    warmup = s.warmup(total)
    if step < warmup:
        return s.lr * (step + 1) / warmup
    return SHAPES[s.schedule](step, total, s)


def check_fits(total: int, schedule: Schedule) -> None:
    """Refuse a warmup the user gave (and a wsd decay) that does not fit in a run of `total` steps; the
    default one always fits."""
    s, flag = schedule, schedule.flag
    if s.warmup_steps is None:
        return
    if s.warmup_steps > total:
        raise ConfigError(
            f"{flag('warmup_steps')} {s.warmup_steps} is longer than the run ({total} steps): the learning rate "
            "would never reach its peak"
        )
    if s.schedule == "wsd" and s.warmup_steps > decay_start(total, s):
        raise ConfigError(
            f"{flag('warmup_steps')} {s.warmup_steps} and {flag('decay_fraction')} {s.wsd_fraction} "
            f"({decay_steps(total, s)} decay steps) do not fit in the run's {total} steps: the decay would start "
            "before the warmup ends"
        )


def check_branch(step: int, old_total: int, old: Schedule, new_total: int, new: Schedule) -> None:
    """A run continues another's state at `step` only where both schedules give the same lr there and on
    the way (the other run's stable phase, as wsd has): otherwise the branch would jump in lr."""
    if step > new_total:
        raise ConfigError(f"the branch point, step {step}, is past the new run's end ({new_total} steps)")
    old_lr, new_lr = lr_at(step, old_total, old), lr_at(step, new_total, new)
    if step > min(decay_start(old_total, old), decay_start(new_total, new)) or not math.isclose(
        old_lr, new_lr, rel_tol=1e-12
    ):
        raise ConfigError(
            f"cannot branch at step {step}: the run branched from has lr {old_lr:.6g} there and decays from step "
            f"{decay_start(old_total, old)}; this run's schedule gives {new_lr:.6g} and decays from step "
            f"{decay_start(new_total, new)}. Branch from a checkpoint of the stable phase (before both decays), "
            "with the same --lr and --warmup-steps"
        )
