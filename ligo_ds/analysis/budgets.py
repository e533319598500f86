"""What growth saves when the grown model trains on its own schedule, and the saving as a curve.

Pure functions over (FLOPs, seconds, validation loss) curves; report.py reads the run directories.

Budgets: a grown model trained to the end of full schedules of several lengths (fractions of the scratch
run's tokens) ends at one final loss per length. The own-schedule saving is 1 - the FLOPs of the shortest
length whose final loss reaches the target, interpolated linearly between the lengths tried (a run's FLOPs
are affine in its length: the fit's, then a fixed cost per token), over the scratch run's FLOPs. Where
several schedules ran at one length, the lowest final loss counts, as the scratch sweep keeps its best lr.

The curve: for each validation loss the scratch run reaches (each new low of its evaluations), the FLOPs a
run needs to first reach it, over the FLOPs the scratch run needed. A method's curve takes, per loss, the
fewest FLOPs over all its runs (any length, any schedule): what a user who knew the target would spend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Points = list[tuple[float, float, float]]  # (flops, seconds, val_loss), in training order


@dataclass(frozen=True)
class Budget:
    """One grown run trained to the end of its schedule."""

    fraction: float  # its training tokens over the scratch run's
    flops: float  # the whole run's, fit included
    final_val: float
    name: str


@dataclass(frozen=True)
class BudgetSaving:
    flops: float  # to reach the target, interpolated between lengths
    fraction: float  # the length, in scratch-run tokens, that reaches it (interpolated)
    at_most: bool  # the shortest length tried already reaches it: the real saving may be larger
    shortest: Budget  # the shortest run tried that reaches it


def best_per_length(budgets: list[Budget]) -> list[Budget]:
    """One run per length (the lowest final loss among the schedules tried there), shortest first."""
    best: dict[float, Budget] = {}
    for b in budgets:
        key = round(b.fraction, 6)
        if key not in best or b.final_val < best[key].final_val:
            best[key] = b
    return [best[k] for k in sorted(best)]


def budget_crossing(budgets: list[Budget], target: float) -> BudgetSaving | None:
    """Where the final loss over lengths first reaches `target`; None when no length tried reaches it."""
    runs = best_per_length(budgets)
    for i, b in enumerate(runs):
        if b.final_val <= target:
            if i == 0:
                return BudgetSaving(b.flops, b.fraction, True, b)
            a = runs[i - 1]
            frac = (a.final_val - target) / (a.final_val - b.final_val)
            return BudgetSaving(
                a.flops + frac * (b.flops - a.flops), a.fraction + frac * (b.fraction - a.fraction), False, b
            )
    return None


def first_crossing(points: Points, target: float) -> tuple[float, float] | None:
    """(flops, seconds) where the validation loss first reaches `target`, linear between evaluations."""
    for i, (x, t, loss) in enumerate(points):
        if loss <= target:
            if i == 0:
                return x, t
            x0, t0, l0 = points[i - 1]
            frac = (l0 - target) / (l0 - loss)
            return x0 + frac * (x - x0), t0 + frac * (t - t0)
    return None


def scratch_targets(points: Points) -> list[tuple[float, float]]:
    """(loss, FLOPs) at each evaluation where the scratch run reaches a new low, the first (untrained) one
    left out: the losses a saving curve is drawn over."""
    out, low = [], float("inf")
    for x, _, loss in points[1:]:
        if loss < low:
            low = loss
            out.append((loss, x))
    return out


def saving_curve(scratch: Points, methods: dict[str, list[Points]]) -> list[tuple[float, dict[str, float | None]]]:
    """For each loss the scratch run reaches: loss -> {method: 1 - its fewest FLOPs to reach it over any of
    its runs / the scratch run's FLOPs to reach it (None where no run does)}."""
    rows = []
    for loss, spent in scratch_targets(scratch):
        savings = {}
        for name, runs in methods.items():
            reached = [hit[0] for hit in (first_crossing(p, loss) for p in runs) if hit is not None]
            savings[name] = 1 - min(reached) / spent if reached and spent > 0 else None
        rows.append((loss, savings))
    return rows


@dataclass(frozen=True)
class OverSeeds:
    """One number (a saving, or a lead in points) over several seeds: the paired view the goal is judged on."""

    values: tuple[float, ...]  # in the seeds' order
    mean: float
    sd: float  # sample standard deviation; nan for one seed, whose spread is unknown, not zero
    low: float


def over_seeds(values: list[float]) -> OverSeeds:
    n = len(values)
    if n == 0:
        raise ValueError("over_seeds: no values")
    mean = sum(values) / n
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else math.nan
    return OverSeeds(tuple(values), mean, sd, min(values))


def lead_over_best(savings: list[dict[str, float]], method: str) -> tuple[str, OverSeeds]:
    """`method`'s lead, seed by seed, over the other method with the highest mean saving (the best rival
    over all seeds, not each seed's luckiest, so the differences are paired). `savings`: one
    {method: saving} per seed, every seed with every method."""
    rivals = sorted({name for s in savings for name in s} - {method})
    if not rivals:
        raise ValueError(f"lead_over_best: no method besides {method!r} to lead")
    missing = [(i, name) for i, s in enumerate(savings) for name in [method, *rivals] if name not in s]
    if missing:
        raise ValueError(f"lead_over_best: seeds without a saving for (seed index, method) {missing}")
    best = max(rivals, key=lambda name: sum(s[name] for s in savings))
    return best, over_seeds([s[method] - s[best] for s in savings])
