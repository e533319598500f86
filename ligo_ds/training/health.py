"""Training health: what a run does when training goes wrong (the Health block), and the pure parts:
whether a step's loss spikes above the run's running statistics, and the stretches of data a run skips (by
hand with the skip_data option, or recorded by a spike rollback). The trainer's component that acts on them
is recovery.py.

Positions are global sample counts, the trainer's single data position (trainer.py). A skip FROM:TO makes
a run that reaches position FROM jump to TO, so a rerun that passes FROM again (resuming from an older
checkpoint) repeats the jump and ends with the same weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from ..options import Block, above, at_least, integer, option

# A flat loss has a deviation near zero, where every wiggle would be a spike; the deviation is taken to be
# at least this share of the mean loss.
MIN_RELATIVE_STD = 1e-3


@dataclass(frozen=True, kw_only=True)
class Health(Block):
    """What a run does when training goes wrong: steps with a non-finite loss or gradient norm are skipped,
    loss spikes can roll the run back past the data that caused them, and data can be skipped by hand. None
    of these is part of a run's identity: they may change when a run is resumed."""

    max_bad_steps: int = option(
        5,
        "consecutive steps with a non-finite loss or gradient norm (each skipped, nothing saved) before the run "
        "stops with exit code 3",
        check=at_least(1),
        identity=False,
    )
    spike_rollback: bool = option(
        False,
        "on a loss spike, reload the last checkpoint saved before it and skip the data from there to the spike "
        "(checkpoints wait while the loss is above the threshold)",
        identity=False,
    )
    spike_threshold: float = option(
        6.0,
        "a step spikes when its loss exceeds the running mean by this many running deviations",
        check=above(0),
        identity=False,
    )
    spike_window: int = option(
        100,
        "good steps in the running mean and deviation; no spike is called before there are that many",
        check=at_least(2),
        identity=False,
    )
    spike_steps: int = option(3, "consecutive spiking steps that make a spike", check=at_least(1), identity=False)
    max_rollbacks: int = option(
        3, "rollbacks to one checkpoint before the run stops with exit code 3", check=at_least(1), identity=False
    )
    skip_data: str | None = option(
        None,
        "training samples never to train on, FROM:TO[,FROM:TO...] as metrics.jsonl's samples column counts "
        "them, multiples of the global batch (grow: its training phase)",
        metavar="RANGES",
        identity=False,
    )

    def check(self) -> None:
        self.skip_ranges()

    def skip_ranges(self) -> list[tuple[int, int]]:
        """The skip_data option as sorted, disjoint (FROM, TO) pairs; [] without it."""
        return [] if self.skip_data is None else parse_ranges(self.skip_data, self.flag("skip_data"))


def parse_ranges(text: str, what: str) -> list[tuple[int, int]]:
    """FROM:TO[,FROM:TO...] as sorted, disjoint (FROM, TO) pairs with 0 <= FROM < TO; counts may be written
    as integer flags are (4096, 1e6, 2M). `what`: the option that gave them (its flag), for the messages."""
    out = []
    for part in text.split(","):
        start, sep, end = part.strip().partition(":")
        try:
            pair = (integer(start), integer(end)) if sep else None
        except ValueError:
            pair = None
        if pair is None:
            raise ConfigError(f"{what} {text!r}: {part.strip()!r} is not FROM:TO, two sample counts")
        if not 0 <= pair[0] < pair[1]:
            raise ConfigError(f"{what} {text!r}: {part.strip()!r} needs 0 <= FROM < TO")
        out.append(pair)
    out.sort()
    for (a, b), (c, d) in zip(out, out[1:]):
        if c < b:
            raise ConfigError(f"{what} {text!r}: {a}:{b} and {c}:{d} overlap")
    return out


def check_aligned(ranges: list[tuple[int, int]], global_batch: int, what: str) -> None:
    """A run's position moves a global batch at a time, so a skip must start and end on one."""
    for pair in ranges:
        for value in pair:
            if value % global_batch:
                low = value - value % global_batch
                raise ConfigError(
                    f"{what} {pair[0]}:{pair[1]}: {value} is not a multiple of the global batch ({global_batch} "
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
