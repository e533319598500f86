"""One savings study over several seeds: each method's own-schedule saving seed by seed, its mean and spread,
and LiGO's paired lead over the best heuristic, from the reports `ligo-ds report` wrote per seed.

    python bench/seeds.py bench/runs/cpu/gpt2/report bench/runs/cpu_seed1/gpt2/report \
        bench/runs/cpu_seed2/gpt2/report [--lead ligo] [--csv OUT.csv]

A seed is named by its study's directory (cpu, cpu_seed1, ...). The rival is the heuristic with the
highest mean saving, and the lead is taken seed by seed against it, so a seed that favours every method
alike cancels. A saving marked "at least" (the shortest length tried already reached the target) counts
at its bound, which understates it; a method that never reached its seed's target stops the summary,
since no number stands for it.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from ligo_ds.analysis.budgets import lead_over_best, over_seeds


def read_seed(report: Path) -> tuple[float, dict[str, dict]]:
    """(the scratch target's loss, {method: its own_schedule.csv row}) of one seed's report."""
    own = report / "own_schedule.csv"
    if not own.is_file():
        raise SystemExit(
            f"{report}: no own_schedule.csv; expected a report of grown runs at several lengths "
            "(bench/savings.py --budgets ...)"
        )
    with open(report / "report.csv") as f:
        target = next(float(r["final_val"]) for r in csv.DictReader(f) if r["kind"] == "scratch (target)")
    with open(own) as f:
        return target, {r["method"]: r for r in csv.DictReader(f)}


def _pct(row: dict, key: str) -> str:
    if not row.get(key):
        return "-"
    bound = "≥ " if key == "own_saving" and row.get("at_least") == "1" else ""
    return f"{bound}{100 * float(row[key]):.1f}"


def _points(sd: float) -> str:
    return "-" if math.isnan(sd) else f"{100 * sd:.1f}"


def summary(reports: list[Path], lead: str) -> tuple[str, list[list]]:
    """The markdown tables and the CSV rows (method, what, seed..., mean, sd)."""
    names = [r.parent.parent.name if r.name == "report" else r.name for r in reports]
    if len(set(names)) != len(names):
        names = [str(r) for r in reports]
    seeds = [read_seed(r) for r in reports]
    methods = list(dict.fromkeys(m for _, rows in seeds for m in rows))
    head = "| method | " + " | ".join(names) + " | mean | sd |"
    rule = "|---|" + "---|" * (len(names) + 2)
    lines = [
        "| target (scratch final val) | " + " | ".join(f"{t:.4f}" for t, _ in seeds) + " | | |",
        "",
    ]
    rows_out: list[list] = [["method", "quantity", *names, "mean", "sd"]]
    for key, title in (("own_saving", "own schedule"), ("same_schedule_saving", "scratch's schedule")):
        lines += [f"Saving on {title}, %:", "", head, rule]
        for m in methods:
            cells = [rows.get(m, {}) for _, rows in seeds]
            values = [float(c[key]) for c in cells if c.get(key)]
            stats = over_seeds(values) if len(values) == len(cells) else None
            tail = f"{100 * stats.mean:.1f} | {_points(stats.sd)}" if stats else "- | -"
            lines.append(f"| {m} | " + " | ".join(_pct(c, key) for c in cells) + f" | {tail} |")
            spread = (stats.mean, stats.sd) if stats else ("", "")
            rows_out.append([m, key, *(c.get(key, "") for c in cells), *spread])
        lines.append("")
    # Only methods every seed ran are compared: a method run at some seeds would be a rival on those only.
    everywhere = [m for m in methods if all(m in rows for _, rows in seeds)]
    if lead not in everywhere:
        raise SystemExit(f"--lead {lead!r}: not among the methods every seed ran, {everywhere}")
    left_out = [m for m in methods if m not in everywhere]
    if left_out:
        lines.append(f"Not compared (not run at every seed): {', '.join(left_out)}.")
    own = []
    for name, (_, rows) in zip(names, seeds):
        unreached = [m for m in everywhere if not rows[m].get("own_saving")]
        if unreached:
            lines.append(f"No lead: at {name}, {', '.join(unreached)} never reached the target on any length tried.")
            return "\n".join(lines) + "\n", rows_out
        own.append({m: float(rows[m]["own_saving"]) for m in everywhere})
    rival, gap = lead_over_best(own, lead)
    lines.append(
        f"{lead}'s lead over {rival} (the best other method on average), points: "
        + ", ".join(f"{100 * v:+.1f}" for v in gap.values)
        + f"; mean {100 * gap.mean:+.1f}, sd {_points(gap.sd)}, lowest {100 * gap.low:+.1f}"
    )
    rows_out.append([lead, f"lead_over_{rival}", *gap.values, gap.mean, gap.sd])
    return "\n".join(lines) + "\n", rows_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="report directories, one a seed")
    parser.add_argument("--lead", default="ligo", help="the method whose lead is measured (default ligo)")
    parser.add_argument("--csv", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    text, rows = summary(args.reports, args.lead)
    print(text)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
