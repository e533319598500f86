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

from .errors import ConfigError
from .rundir import read_metrics, val_protocol


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

    @property
    def final(self) -> tuple[float, float, float]:
        return self.points[-1]


def first_crossing(points: list[tuple[float, float, float]], target: float) -> tuple[float, float] | None:
    """(flops, seconds) where the validation loss first reaches `target`, linear between evaluations."""
    for i, (x, t, loss) in enumerate(points):
        if loss <= target:
            if i == 0:
                return x, t
            x0, t0, l0 = points[i - 1]
            frac = (l0 - target) / (l0 - loss)
            return x0 + frac * (x - x0), t0 + frac * (t - t0)
    return None


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


def load_curve(run: str | Path) -> Curve:
    run = Path(run)
    if (run / "train" / "metrics.jsonl").is_file():  # a grow run: the fit's curve, then training
        fit_cfg = _config(run / "fit" / "config.json")
        fit_points = _val_points(run / "fit" / "metrics.jsonl") if (run / "fit" / "metrics.jsonl").is_file() else []
        points = fit_points + _val_points(run / "train" / "metrics.jsonl")
        fit = fit_cfg.get("fit", {})
        # Recorded when the fit started (None for a source made elsewhere), so a run dir copied from
        # another machine keeps it.
        return Curve(
            run.name,
            "grown",
            points,
            fit_cfg.get("source_pretraining_flops"),
            fit_cfg.get("source_final_val_loss"),
            fit_cfg.get("source_val_protocol"),
            val_protocol(_config(run / "train" / "config.json")),
            {"fit_steps": fit.get("steps"), "width_init": fit.get("width_init"), "depth_init": fit.get("depth_init")},
        )
    if not (run / "metrics.jsonl").is_file():
        raise ConfigError(f"{str(run)!r} holds no metrics.jsonl (nor train/metrics.jsonl): not a ligo_ds run")
    config = _config(run / "config.json")
    model = config.get("options", {}).get("model", "")
    kind = "scratch" if model.endswith(".json") else "pretrain"
    return Curve(run.name, kind, _val_points(run / "metrics.jsonl"), protocol=val_protocol(config))


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


def report(runs: list[str | Path], out: str | Path, scratch: str | None = None) -> list[Row]:
    curves = [load_curve(r) for r in runs]
    names = [c.name for c in curves]
    if len(set(names)) != len(names):
        raise ConfigError(f"run names repeat ({', '.join(names)}); give each run directory a distinct name")
    base, rows = compare(curves, scratch)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(base, rows))
    with open(out / "report.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(Row.__dataclass_fields__))
        for r in rows:
            writer.writerow([getattr(r, k) for k in Row.__dataclass_fields__])
    plot(curves, base, out / "loss_vs_flops.png")
    return rows
