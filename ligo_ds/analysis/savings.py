"""What each run saved against the scratch baseline: FLOPs and time to first reach its final validation loss
(`compare`, one Row a run), and each growth method's saving on schedules of its own lengths (`methods`,
budgets.py's arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .budgets import Budget, BudgetSaving, best_per_length, budget_crossing, first_crossing
from .runs import Curve, loss_at


@dataclass
class Row:
    name: str
    kind: str
    final_val: float
    flops: float
    flops_to_target: float | None
    seconds_to_target: float | None
    saving: float | None  # fraction of the scratch run's FLOPs
    wall_saving: float | None
    loss_at_scratch_flops: float | None
    small_flops: float | None
    small_final_val: float | None
    small_reaches_target: bool | None  # None: unknown, or measured differently from the target
    start_val: float | None = None  # a grown run's loss before training (runs.Curve.start_val)


def small_reaches_target(c: Curve, base: Curve) -> bool | None:
    """Did the source model alone already reach the target? Only answered when both losses were
    measured on the same data, sequence length and number of validation windows."""
    if c.small_val is None or c.small_protocol is None or c.small_protocol != base.protocol:
        return None
    return c.small_val <= base.final[2]


def compare(curves: list[Curve], scratch: str | None = None) -> tuple[Curve, list[Row]]:
    """The scratch baseline and one row per run (the baseline first)."""
    if not curves:
        raise ConfigError("no runs given")
    empty = [c.name for c in curves if not c.points]
    if empty:
        raise ConfigError(f"runs without any validation loss: {', '.join(empty)}")
    if scratch is not None:
        named = [c for c in curves if c.name == scratch]
        if not named:
            raise ConfigError(f"scratch run {scratch!r} is not among the runs: {', '.join(c.name for c in curves)}")
        base = named[0]
    else:
        candidates = [c for c in curves if c.kind == "scratch"]
        if not candidates:
            raise ConfigError(
                "no scratch run among the runs (a pretrain run started from a config.json); name one with --scratch"
            )
        base = min(candidates, key=lambda c: c.final[2])
    target, total, total_s = base.final[2], base.final[0], base.final[1]
    rows = []
    for c in [base] + [c for c in curves if c is not base]:
        hit = first_crossing(c.points, target)
        rows.append(
            Row(
                name=c.name,
                kind="scratch (target)" if c is base else c.kind,
                final_val=c.final[2],
                flops=c.final[0],
                flops_to_target=hit[0] if hit else None,
                seconds_to_target=hit[1] if hit else None,
                saving=None if hit is None else 1 - hit[0] / total,
                wall_saving=None if hit is None or not total_s else 1 - hit[1] / total_s,
                loss_at_scratch_flops=loss_at(c.points, total),
                small_flops=c.small_flops,
                small_final_val=c.small_val,
                small_reaches_target=small_reaches_target(c, base),
                start_val=c.start_val,
            )
        )
    return base, rows


@dataclass
class Method:
    """A growth method's runs (the grown runs sharing one fit) on schedules of their own."""

    name: str
    runs: list[str]
    same_schedule: float | None  # the saving of its run on the scratch run's schedule and length
    budgets: list[Budget]  # the best run per length, shortest first
    crossing: BudgetSaving | None
    saving: float | None  # 1 - crossing.flops / the scratch run's FLOPs


def _label(names: list[str]) -> str:
    """The names' common leading words (ligo, ligo_0.5x_wsd -> ligo), or the first name when they share none."""
    words = [n.split("_") for n in names]
    common = []
    for parts in zip(*words):
        if len(set(parts)) > 1:
            break
        common.append(parts[0])
    return "_".join(common) or sorted(names)[0]


def methods(base: Curve, curves: list[Curve], rows: list[Row]) -> list[Method]:
    """The grown runs grouped by method, each group's own-schedule saving (budgets.py)."""
    groups: dict[str, list[Curve]] = {}
    for c in curves:
        if c.kind == "grown" and c.method is not None:
            groups.setdefault(c.method, []).append(c)
    saving = {r.name: r.saving for r in rows}
    total = base.final[0]
    out = []
    for group in groups.values():
        names = [c.name for c in group]
        same = [c for c in group if c.tokens == base.tokens and c.schedule == base.schedule and c.tokens]
        budgets = [
            Budget(c.tokens / base.tokens, c.final[0], c.final[2], c.name) for c in group if c.tokens and base.tokens
        ]
        hit = budget_crossing(budgets, base.final[2])
        out.append(
            Method(
                _label(names),
                names,
                saving[same[0].name] if same else None,
                best_per_length(budgets),
                hit,
                None if hit is None else 1 - hit.flops / total,
            )
        )
    return out
