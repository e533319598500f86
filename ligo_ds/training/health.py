"""Training health, the pure parts: whether a step's loss spikes above the run's running statistics, and
the stretches of data a run skips (by hand with --skip-data, or recorded by a spike rollback).

Positions are global sample counts, the trainer's single data position (trainer.py). A skip FROM:TO makes
a run that reaches position FROM jump to TO, so a rerun that passes FROM again (resuming from an older
checkpoint) repeats the jump and ends with the same weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

# A flat loss has a deviation near zero, where every wiggle would be a spike; the deviation is taken to be
# at least this share of the mean loss.
MIN_RELATIVE_STD = 1e-3


def parse_ranges(text: str, flag: str) -> list[tuple[int, int]]:
    """FROM:TO[,FROM:TO...] as sorted, disjoint (FROM, TO) pairs with 0 <= FROM < TO; counts may be written
    as integer flags are (4096, 1e6, 2M)."""
    from ..options.declare import integer

    out = []
    for part in text.split(","):
        start, sep, end = part.strip().partition(":")
        try:
            pair = (integer(start), integer(end)) if sep else None
        except ValueError:
            pair = None
        if pair is None:
            raise ConfigError(f"{flag} {text!r}: {part.strip()!r} is not FROM:TO, two sample counts")
        if not 0 <= pair[0] < pair[1]:
            raise ConfigError(f"{flag} {text!r}: {part.strip()!r} needs 0 <= FROM < TO")
        out.append(pair)
    out.sort()
    for (a, b), (c, d) in zip(out, out[1:]):
        if c < b:
            raise ConfigError(f"{flag} {text!r}: {a}:{b} and {c}:{d} overlap")
    return out


def check_aligned(ranges: list[tuple[int, int]], global_batch: int, flag: str) -> None:
    """A run's position moves a global batch at a time, so a skip must start and end on one."""
    for pair in ranges:
        for value in pair:
            if value % global_batch:
                low = value - value % global_batch
                raise ConfigError(
                    f"{flag} {pair[0]}:{pair[1]}: {value} is not a multiple of the global batch ({global_batch} "
                    f"samples a step); the position moves a step at a time: use {low} or {low + global_batch}"
                )


def running_stats(history: list[float]) -> tuple[float, float]:
    """(mean, deviation) of the recent good losses; the deviation floored at MIN_RELATIVE_STD of the mean."""
    mean = math.fsum(history) / len(history)
    var = math.fsum((x - mean) ** 2 for x in history) / len(history)
    return mean, max(math.sqrt(var), MIN_RELATIVE_STD * abs(mean))


def spikes(history: list[float], loss: float, threshold: float, window: int) -> bool:
    """Whether `loss` exceeds the mean of the last `window` good losses by `threshold` deviations; never
    before `window` good steps have been seen."""
    if len(history) < window:
        return False
    mean, std = running_stats(history[-window:])
    return loss > mean + threshold * std


@dataclass(frozen=True)
class Skip:
    start: int  # the position the run jumps from
    end: int  # ... and to
    reason: str  # "skip_data" (by hand) or "rollback"
    record: dict | None = None  # a rollback's record (rundir.skips), with the compute it spent


class SkipTable:
    """The skips a run makes: the user's ranges and the rollbacks recorded in its run directory."""

    def __init__(self, ranges: list[tuple[int, int]], records: list[dict]):
        self.user, self.records = list(ranges), list(records)

    def add(self, record: dict) -> None:
        self.records.append(record)

    def at(self, position: int) -> Skip | None:
        """The skip that starts at `position`, reaching furthest; None when there is none."""
        found = [Skip(a, b, "skip_data") for a, b in self.user if a == position]
        found += [Skip(r["from"], r["to"], "rollback", r) for r in self.records if r["from"] == position]
        return max(found, key=lambda s: s.end, default=None)

    def rollbacks_to(self, tag: str) -> int:
        return sum(r["checkpoint"] == tag for r in self.records)
