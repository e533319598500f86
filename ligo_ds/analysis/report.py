"""`ligo-ds report`: what growth saved, from run directories alone.

The scratch run (a pretraining run started from a config.json, the best final validation loss among
several, or the one named with --scratch) sets the target: its final validation loss. For every other
run the report gives the FLOPs and the time to first reach that target, interpolated linearly between
evaluations (time: seconds inside training steps, a grown run's fit steps included; start-up, evaluation,
checkpoints and the hand-off to the grown model are counted in no run), the saving 1 - FLOPs_to_target /
FLOPs of the whole scratch run (the paper's definition; a grown run's FLOPs include its operator fit),
the validation loss at the scratch run's total FLOPs, and, as separate columns the paper leaves out,
what pretraining the small model cost and the loss it ended at. Where the small model alone already
reached the target (measured the same way), the report says so under the table: growing it then saves
FLOPs trivially, and the saving is no evidence for the growth method; lengthen the large runs or
shorten the small one.

Accepted directories: a `pretrain` RUN_DIR, a `grow` RUN_DIR (fit/ + train/), or a `fit --steps 0` +
`pretrain` pair laid out the same way. Nothing but their files is read, so runs from other machines mix.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..training.rundir import read_metrics, val_protocol
from .budgets import Budget, BudgetSaving, best_per_length, budget_crossing, first_crossing, saving_curve


@dataclass
class Curve:
    name: str
    kind: str  # "scratch" | "grown" | "pretrain"
    points: list[tuple[float, float, float]]  # (flops, seconds, val_loss), in training order
    small_flops: float | None = None  # the source model's own pretraining, when known
    small_val: float | None = None  # the source model's final validation loss, when known
    small_protocol: dict | None = None  # how small_val was measured (rundir.val_protocol)
    protocol: dict | None = None  # how this run's validation loss was measured
    notes: dict = field(default_factory=dict)
    tokens: int | None = None  # training tokens its schedule runs for (the fit's left out)
    schedule: dict | None = None  # lr, floor, warmup and shape of its training schedule
    method: str | None = None  # a grown run's fit, whole but for its directory: runs of one method share it

    @property
    def final(self) -> tuple[float, float, float]:
        return self.points[-1]


def loss_at(points: list[tuple[float, float, float]], flops: float) -> float | None:
    """Validation loss at `flops` by linear interpolation; None outside the curve."""
    for (x0, _, l0), (x1, _, l1) in zip(points, points[1:]):
        if x0 <= flops <= x1:
            return l0 if x1 == x0 else l0 + (flops - x0) / (x1 - x0) * (l1 - l0)
    if points and math.isclose(points[-1][0], flops, rel_tol=1e-9):
        return points[-1][2]
    return None


def _val_points(metrics: Path) -> list[tuple[float, float, float]]:
    return [(r["flops"], r.get("train_seconds", 0.0), r["val_loss"]) for r in read_metrics(metrics) if "val_loss" in r]


def _config(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


SCHEDULE_KEYS = ("lr", "min_lr", "warmup_steps", "schedule")


def _length(config: dict) -> tuple[int | None, dict | None]:
    """(training tokens, schedule) from a run's recorded identity; (None, None) for a run without one."""
    ident = config.get("identity") or {}
    if not all(k in ident for k in ("total_steps", "global_batch", "seq_len")):
        return None, None
    tokens = ident["total_steps"] * ident["global_batch"] * ident["seq_len"]
    return tokens, {k: ident.get(k) for k in SCHEDULE_KEYS}


def load_curve(run: str | Path) -> Curve:
    run = Path(run)
    if (run / "train" / "metrics.jsonl").is_file():  # a grow run: the fit's curve, then training
        fit_cfg = _config(run / "fit" / "config.json")
        fit_points = _val_points(run / "fit" / "metrics.jsonl") if (run / "fit" / "metrics.jsonl").is_file() else []
        points = fit_points + _val_points(run / "train" / "metrics.jsonl")
        fit = fit_cfg.get("fit", {})
        train_cfg = _config(run / "train" / "config.json")
        method = {k: v for k, v in fit.items() if k != "out"}
        # Recorded when the fit started (None for a source made elsewhere), so a run dir copied from
        # another machine keeps it.
        return Curve(
            run.name,
            "grown",
            points,
            fit_cfg.get("source_pretraining_flops"),
            fit_cfg.get("source_final_val_loss"),
            fit_cfg.get("source_val_protocol"),
            val_protocol(train_cfg),
            {"fit_steps": fit.get("steps"), "width_init": fit.get("width_init"), "depth_init": fit.get("depth_init")},
            *_length(train_cfg),
            method=json.dumps(method, sort_keys=True) if fit else None,
        )
    if not (run / "metrics.jsonl").is_file():
        raise ConfigError(f"{str(run)!r} holds no metrics.jsonl (nor train/metrics.jsonl): not a ligo_ds run")
    config = _config(run / "config.json")
    model = config.get("options", {}).get("model", "")
    kind = "scratch" if model.endswith(".json") else "pretrain"
    tokens, schedule = _length(config)
    return Curve(
        run.name,
        kind,
        _val_points(run / "metrics.jsonl"),
        protocol=val_protocol(config),
        tokens=tokens,
        schedule=schedule,
    )


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
            raise ConfigError(f"--scratch {scratch!r} is not among the runs: {', '.join(c.name for c in curves)}")
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


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def own_schedule_markdown(base: Curve, found: list[Method]) -> str:
    lines = [
        "",
        "## On their own schedule",
        "",
        f"Each method's grown model trained to the end of full schedules of several lengths, in fractions of "
        f"the scratch run's {base.tokens:,} tokens; at each length the schedule with the lowest final loss "
        "counts. Saving: 1 - FLOPs (fit included) of the shortest length whose final loss reaches the target, "
        "interpolated between lengths, / the scratch run's FLOPs.",
        "",
        "| method | runs | saving on scratch's schedule | saving on its own | length reaching the target | "
        "final val loss by length |",
        "|---|---|---|---|---|---|",
    ]
    advice = []
    for m in found:
        by_length = ", ".join(f"{b.fraction:g}: {b.final_val:.4f} ({b.name})" for b in m.budgets)
        c = m.crossing
        if c is None:
            reach = "not reached"
            longest = m.budgets[-1].fraction if m.budgets else 1.0
            advice.append(f"- {m.name}: no length tried reaches the target; train it longer than {longest:g}.")
        else:
            bound = "at most " if c.at_most else ""
            reach = f"{bound}{c.fraction:.2f}"
            advice.append(
                f"- {m.name}: train the grown model for {'at most ' if c.at_most else 'about '}{c.fraction:.2f} of "
                f"the scratch run's tokens; of the lengths tried, {c.shortest.fraction:g} ({c.shortest.name}) is the "
                "shortest that reaches the target"
                + (" (the shortest tried: try shorter ones)" if c.at_most else "")
                + "."
            )
        saving = ("at least " if c is not None and c.at_most else "") + _pct(m.saving)
        lines.append(f"| {m.name} | {len(m.runs)} | {_pct(m.same_schedule)} | {saving} | {reach} | {by_length} |")
    return "\n".join([*lines, "", "How long to train each grown model:", *advice]) + "\n"


OWN_SCHEDULE_COLUMNS = ["method", "runs", "same_schedule_saving", "own_saving", "at_least", "length", "shortest_run"]


def write_own_schedule(found: list[Method], path: Path) -> None:
    """The own-schedule table, one row a method, for studies over seeds (bench/seeds.py); `at_least` marks a
    saving only bounded (the shortest length tried already reaches the target), empty cells a method that
    never reaches it."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(OWN_SCHEDULE_COLUMNS)
        for m in found:
            c = m.crossing
            writer.writerow(
                [
                    m.name,
                    len(m.runs),
                    "" if m.same_schedule is None else m.same_schedule,
                    "" if m.saving is None else m.saving,
                    "" if c is None else int(c.at_most),
                    "" if c is None else c.fraction,
                    "" if c is None else c.shortest.name,
                ]
            )


def curve_markdown(curve: list[tuple[float, dict[str, float | None]]], shown: int = 6) -> str:
    """A few rows of the saving curve (the whole curve is in saving_curve.csv and saving_vs_loss.png)."""
    if not curve:
        return ""
    picks = sorted({round(i * (len(curve) - 1) / max(1, shown - 1)) for i in range(shown)})
    names = list(curve[0][1])
    lines = [
        "",
        "## Saving by target loss",
        "",
        "For losses the scratch run reaches on its way: 1 - the fewest FLOPs any of a method's runs needs to "
        "reach it / the FLOPs the scratch run needed (saving_curve.csv, saving_vs_loss.png).",
        "",
        "| target loss | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for i in picks:
        loss, savings = curve[i]
        lines.append(f"| {loss:.4f} | " + " | ".join(_pct(savings[n]) for n in names) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def markdown(base: Curve, rows: list[Row]) -> str:
    lines = [
        f"Target: the scratch run `{base.name}`'s final validation loss {base.final[2]:.4f}, reached with "
        f"{base.final[0]:.3e} FLOPs.",
        "",
        "| run | kind | final val loss | FLOPs to target | saving (FLOPs) | time to target (s) | saving (time) | "
        "val loss at scratch FLOPs | small model's pretraining FLOPs | small model's final val loss |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.kind} | {r.final_val:.4f} | {_fmt(r.flops_to_target, '.3e', 'not reached')} | "
            f"{_fmt(None if r.saving is None else 100 * r.saving, '.1f')}{' %' if r.saving is not None else ''} | "
            f"{_fmt(r.seconds_to_target, '.1f')} | "
            f"{_fmt(None if r.wall_saving is None else 100 * r.wall_saving, '.1f')}"
            f"{' %' if r.wall_saving is not None else ''} | {_fmt(r.loss_at_scratch_flops, '.4f')} | "
            f"{_fmt(r.small_flops, '.3e')} | {_fmt(r.small_final_val, '.4f')} |"
        )
    trivial = [r.name for r in rows if r.small_reaches_target]
    if trivial:
        lines += [
            "",
            f"**Trivial saving:** the small model alone already reaches the target "
            f"({min(r.small_final_val for r in rows if r.small_reaches_target):.4f} <= {base.final[2]:.4f}) "
            f"for {', '.join(trivial)}. Growing it saves FLOPs whatever the method, so these savings are no "
            "evidence for growth: train the large runs longer or the small model less.",
        ]
    unknown = [r.name for r in rows if r.small_final_val is not None and r.small_reaches_target is None]
    if unknown:
        lines += [
            "",
            f"The small model's final loss for {', '.join(unknown)} was measured on other validation "
            "data, length or windows than the target, so it is not compared with it.",
        ]
    return "\n".join(lines) + "\n"


def plot(curves: list[Curve], base: Curve, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    # Runs start at 0 FLOPs, which a log axis cannot show: draw them at half the smallest non-zero value.
    positive = [p[0] for c in curves for p in c.points if p[0] > 0]
    floor = min(positive) / 2 if positive else 1.0
    for c in curves:
        xs = [max(p[0], floor) for p in c.points]
        ax.plot(
            xs, [p[2] for p in c.points], marker=".", label=f"{c.name} ({c.kind})", linewidth=2.5 if c is base else 1.5
        )
    ax.axhline(base.final[2], color="black", linestyle="--", linewidth=1, label="target (scratch final)")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (operator fit included)")
    ax.set_ylabel("validation loss")
    finals = [c.final[2] for c in curves]
    ax.set_ylim(min(finals) - 0.1 * abs(min(finals)), max(p[2] for c in curves for p in c.points[1:] or c.points) + 0.3)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curve(curve: list[tuple[float, dict[str, float | None]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    losses = [loss for loss, _ in curve]
    for name in curve[0][1]:
        ys = [None if s[name] is None else 100 * s[name] for _, s in curve]
        ax.plot(losses, [float("nan") if y is None else y for y in ys], marker=".", label=name)
    ax.invert_xaxis()  # training goes left to right: lower losses later
    ax.set_xlabel("target validation loss (reached by the scratch run)")
    ax.set_ylabel("FLOPs saved against the scratch run (%)")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(runs: list[str | Path], out: str | Path, scratch: str | None = None) -> list[Row]:
    curves = [load_curve(r) for r in runs]
    names = [c.name for c in curves]
    if len(set(names)) != len(names):
        raise ConfigError(f"run names repeat ({', '.join(names)}); give each run directory a distinct name")
    base, rows = compare(curves, scratch)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    found = methods(base, curves, rows)
    grouped = {m.name: [c.points for c in curves if c.name in m.runs] for m in found}
    curve = saving_curve(base.points, grouped) if grouped else []
    md = markdown(base, rows)
    if any(len(m.runs) > 1 for m in found) and base.tokens:
        md += own_schedule_markdown(base, found)
        write_own_schedule(found, out / "own_schedule.csv")
    md += curve_markdown(curve)
    (out / "report.md").write_text(md)
    if curve:
        with open(out / "saving_curve.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["target_loss", *grouped])
            for loss, savings in curve:
                writer.writerow([loss, *(savings[n] for n in grouped)])
        plot_curve(curve, out / "saving_vs_loss.png")
    with open(out / "report.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(Row.__dataclass_fields__))
        for r in rows:
            writer.writerow([getattr(r, k) for k in Row.__dataclass_fields__])
    plot(curves, base, out / "loss_vs_flops.png")
    return rows
