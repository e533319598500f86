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

The runs are read by runs.py, what each saved is computed by savings.py (budgets.py: own-schedule
savings), and the tables and plots are written by render.py.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import ConfigError
from .budgets import saving_curve
from .render import curve_markdown, markdown, own_schedule_markdown, plot, plot_curve, write_own_schedule
from .runs import load_curve
from .savings import Row, compare, methods


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
