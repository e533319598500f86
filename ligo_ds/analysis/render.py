"""The savings report written out: its markdown tables, CSV files and plots (report.py computes them)."""

from __future__ import annotations

import csv
from pathlib import Path

from .runs import Curve
from .savings import Method, Row


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


def regime(base: Curve) -> str:
    """The line that says which budget the savings come from: the target's size and its tokens per parameter.
    Growth saves most far below the budgets models are trained at (about 20 tokens per parameter is compute-
    optimal), so a saving without its regime says little (bench/README.md has savings by budget)."""
    if base.params is None or not base.tokens:
        return "Regime: not recorded by the scratch run (the target's size and training tokens)."
    tpp = base.tokens / base.params
    line = (
        f"Regime: a target of {base.params / 1e6:.3g}M parameters trained on {base.tokens / 1e6:.3g}M tokens, "
        f"{tpp:.3g} tokens per parameter."
    )
    if tpp < 20:
        line += " Savings shrink as the budget grows (about 20 tokens per parameter is compute-optimal)."
    return line


def markdown(base: Curve, rows: list[Row]) -> str:
    lines = [
        f"Target: the scratch run `{base.name}`'s final validation loss {base.final[2]:.4f}, reached with "
        f"{base.final[0]:.3e} FLOPs.",
        "",
        regime(base),
        "",
        "| run | kind | final val loss | FLOPs to target | saving (FLOPs) | time to target (s) | saving (time) | "
        "val loss at scratch FLOPs | small model's pretraining FLOPs | small model's final val loss | "
        "grown start's val loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.kind} | {r.final_val:.4f} | {_fmt(r.flops_to_target, '.3e', 'not reached')} | "
            f"{_fmt(None if r.saving is None else 100 * r.saving, '.1f')}{' %' if r.saving is not None else ''} | "
            f"{_fmt(r.seconds_to_target, '.1f')} | "
            f"{_fmt(None if r.wall_saving is None else 100 * r.wall_saving, '.1f')}"
            f"{' %' if r.wall_saving is not None else ''} | {_fmt(r.loss_at_scratch_flops, '.4f')} | "
            f"{_fmt(r.small_flops, '.3e')} | {_fmt(r.small_final_val, '.4f')} | {_fmt(r.start_val, '.4f')} |"
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
