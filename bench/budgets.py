"""What growth saves against the token budget: the savings study at several budgets in tokens per parameter
of the target, at two model sizes, into one table and one plot (issue 42).

    python bench/budgets.py --preset tiny                               # a minute; what the tests run
    python bench/budgets.py --preset cpu --sizes 1m --tpp 0.15,1,4,16   # the small pair (resumable)
    python bench/budgets.py --preset cpu --sizes 4m --tpp 0.15,1
    python bench/budgets.py --preset cpu --sizes 1m --families llama --tpp 1,4   # the second family
    python bench/budgets.py --preset cpu --sizes 1m --tpp 0.15 --seeds 1234,1,2
    python bench/budgets.py --preset cpu --sizes 1m --tpp 1 --methods ligo-fullbatch,ligo-nofit   # item 4's variants
    python bench/budgets.py --preset cpu --sizes 1m --tpp 1 --out bench/runs/small-lr \
        --data bench/runs/budgets-cpu/data --small-lrs 2e-3,4e-3 --scratch-lrs 2e-3   # the small model's lr
    python bench/budgets.py --preset cpu --sizes 1m --tpp 4 --seeds 2 \
        --earlier bench/results/budgets_cpu.csv   # cells whose runs are gone join the table from their record

Each cell (size, tokens per parameter, seed) is a whole study of bench/savings.py with its own length: the
large model's steps are the budget's tokens over the batch, the small model is trained as long, the
scratch lr is swept at every budget (the best lr moves with the length), warmup, evaluation and the LiGO
fit scale with the length (RULES), and each grown method trains on full schedules of its own at a few
lengths, so its saving is the own-schedule one: the shortest schedule whose final loss reaches the
scratch run's, fit included. Parameters are the target's, embeddings included (tied ones once).

The corpus is the site-packages sources (bench/code_corpus.py, 35.8M training tokens at a vocabulary
of 2048), so 16 tokens per parameter of the 1M target are seen once. Every job is resumable: a rerun skips
the finished ones, and a cell that was not asked for again still joins the table when it finished. The
runs are large and local; budgets.csv is the record that travels (bench/results/): every method of every
cell, variants included, with whether the cell ran it, so --earlier rebuilds the tables and the plot from it.

Past 300 lines on purpose: the cell's lengths (RULES) and the tables read from the cells (main table, seeds,
trend, variants, plot) are one study's output, read top to bottom; the runs themselves are bench/savings.py's.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ligo_ds.analysis.budgets import over_seeds as spread  # noqa: E402
from ligo_ds.model.config import ModelConfig  # noqa: E402

from jobs import ROOT, Jobs, ligo  # noqa: E402
from savings import METHODS, SEED, VARIANTS, Grid, Preset, _gpt2, _llama, choose, parse_lrs, study  # noqa: E402

# size -> family -> (small, large). The 1m pair is the cpu preset's GPT-2 pair at half the width and a
# quarter of the vocabulary (2x width, 2x depth, heads of 32), the 4m pair the same at the cpu preset's width.
# The Llama pairs are the cpu preset's Llama pair scaled the same way (GQA 2:1, SwiGLU at 2.75x, tied
# embeddings): 1.00M and 3.48M parameters against GPT-2's 1.07M and 3.72M. The first family of a size sets
# the cell's length (cell_preset), so both families train on the same tokens.
SIZES = {
    "tiny": {"tiny": {"gpt2": (_gpt2(1, 32, 2, 64, 320), _gpt2(2, 64, 4, 64, 320))}},
    "cpu": {
        "1m": {
            "gpt2": (_gpt2(2, 64, 2, 128, 2048), _gpt2(4, 128, 4, 128, 2048)),
            "llama": (_llama(2, 64, 2, 1, 176, 128, 2048), _llama(4, 128, 4, 2, 352, 128, 2048)),
        },
        "4m": {
            "gpt2": (_gpt2(2, 128, 4, 128, 2048), _gpt2(4, 256, 8, 128, 2048)),
            "llama": (_llama(2, 128, 4, 2, 352, 128, 2048), _llama(4, 256, 8, 4, 704, 128, 2048)),
        },
    },
}


def _shared(**values) -> Preset:
    """What every cell of a preset shares; the families and lengths are set per cell (cell_preset)."""
    lengths = dict(small_steps=0, large_steps=0, fit_steps=0, warmup=0, eval_every=0)
    return Preset(families={}, **lengths, **values)


BASE = {
    "tiny": _shared(
        seq_len=32,
        micro_batch=4,
        scratch_lrs=(3e-3,),
        small_lrs=(3e-3,),
        eval_samples=4,
        fit_micro_batch=1,
        data_args=("--vocab-size", "320", "--val-fraction", "0.1"),
    ),
    "cpu": _shared(
        seq_len=128,
        micro_batch=16,
        scratch_lrs=(2e-3, 4e-3, 8e-3),  # SIZE_LRS for each size's
        small_lrs=(4e-3,),
        eval_samples=64,
        fit_micro_batch=2,
        corpus="site-packages",
        data_args=("--vocab-size", "2048"),
    ),
}
# Per size where it differs from BASE: a 4x larger model wants a lower lr. The 1m target's best lr fell from
# 4e-3 at 0.15 tokens per parameter to 2e-3 at 1 (4e-3 ended 0.46 higher there), so its sweep reaches 1e-3.
SIZE_LRS = {
    "1m": dict(scratch_lrs=(1e-3, 2e-3, 4e-3, 8e-3)),
    "4m": dict(scratch_lrs=(5e-4, 1e-3, 2e-3, 4e-3), small_lrs=(2e-3,)),
}
# Per (size, family) over SIZE_LRS. GPT-2's 1m small model stays at 4e-3, mis-tuned (2e-3 ends 0.16 to 0.38
# lower at 1 token per parameter; bench/results/budgets_cpu_small_lr), so that its cells keep their grown runs;
# a family that joins later sweeps its small model's lr from the start.
FAMILY_LRS = {("1m", "llama"): dict(small_lrs=(2e-3, 4e-3)), ("4m", "llama"): dict(small_lrs=(1e-3, 2e-3))}
DEFAULT_TPP = {"tiny": "0.01,0.02", "cpu": "0.15,1,4,16"}
# The grown runs of every cell: the learned operator (from the official code's start, and fitted_zero: from
# Net2Net + zero's) and the two best heuristics of the cpu study, each at four lengths of its own (fractions
# of the scratch run's tokens; at 0.15 tokens per parameter every method reached the target at 0.3 already).
# Interpolation is left out to save compute (it was never the best heuristic on the cpu preset).
GRID = Grid(methods=("net2net_stack", "net2net_zero", "ligo", "fitted_zero"), budgets=(0.15, 0.3, 0.6, 1.0))
TINY_GRID = Grid(methods=("net2net_zero", "ligo"), budgets=(0.5, 1.0))
# LiGO and its variants (ligo-nofit included: LiGO's start without the fit), each with its lead over the best
# heuristic, which they never count as
LEARNED = ("ligo", "fitted_zero", *VARIANTS)


@dataclass(frozen=True)
class Rules:
    """How a cell's lengths follow its steps: warmup a share of the run (as the cpu preset's 30 of 400),
    about 16 evaluations, and the LiGO fit a share of the run (15 of 400 on the cpu preset) within
    [min_fit, 100], the paper's 100 steps being the cap."""

    warmup: float = 0.075
    evaluations: int = 16
    fit: float = 0.0375
    min_fit: int = 5


RULES = Rules()


def target_params(cfg: dict) -> int:
    return ModelConfig.from_hf(cfg).num_params()


def cell_preset(base: Preset, families: dict, tpp: float, rules: Rules = RULES) -> Preset:
    """The savings study's preset for one budget: every family's target trained on `tpp` tokens per
    parameter (the families of one size have targets of about one size; the first one sets the length)."""
    n = target_params(next(iter(families.values()))[1])
    steps = max(4, round(tpp * n / (base.micro_batch * base.seq_len)))
    every = max(1, steps // rules.evaluations)
    return replace(
        base,
        families=families,
        small_steps=steps,
        large_steps=steps,
        warmup=max(1, round(rules.warmup * steps)),
        eval_every=every,
        fit_steps=min(100, max(rules.min_fit, round(rules.fit * steps))),
    )


def family_preset(cell: Preset, size: str, family: str, lrs: dict) -> Preset:
    """One family's preset in a cell: the size's lrs (already in `cell`), then the family's (FAMILY_LRS),
    then the command line's."""
    return replace(cell, **{**FAMILY_LRS.get((size, family), {}), **lrs})


@dataclass(frozen=True)
class Cell:
    size: str
    family: str
    tpp: float
    seed: int
    params: int
    tokens: int

    @property
    def name(self) -> str:
        seed = "" if self.seed == SEED else f"_seed{self.seed}"
        return f"{self.size}_tpp{self.tpp:g}{seed}"


def cell_dir(root: Path, cell: Cell) -> Path:
    return root / cell.name


def read_cell(report: Path) -> dict[str, dict]:
    """method -> its own_schedule.csv row (own and same-schedule savings, length), and "_scratch" -> the
    target's final loss and whether the small model alone reached it, from a cell's report."""
    out: dict[str, dict] = {}
    with open(report / "own_schedule.csv") as f:
        for row in csv.DictReader(f):
            out[row["method"]] = row
    with open(report / "report.csv") as f:
        rows = list(csv.DictReader(f))
    target = next(r for r in rows if r["kind"] == "scratch (target)")
    small = next((r for r in rows if r["kind"] == "grown"), {})
    out["_scratch"] = {
        "final_val": target["final_val"],
        "small_final_val": small.get("small_final_val"),
        "small_reaches_target": small.get("small_reaches_target"),
    }
    return out


def fraction(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def where_it_falls(points: list[tuple[float, float]], level: float) -> float | None:
    """The tokens per parameter where a straight line through (log10 tpp, saving) reaches `level`, from a
    least-squares fit; None with fewer than two budgets or a saving that does not fall with the budget."""
    if len(points) < 2:
        return None
    xs = [math.log10(t) for t, _ in points]
    ys = [s for _, s in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    if slope >= 0:
        return None
    return 10 ** (mx + (level - my) / slope)


FIRST = 8  # the column of table()'s rows where the savings begin


def table(cells: dict[Cell, dict], methods: tuple[str, ...]) -> tuple[str, list[list], list[list[bool]]]:
    """The markdown table and CSV rows: per cell each method's own-schedule saving (None: no length tried
    reached the target, or the cell did not run it), each fitted method's lead over the best heuristic, and
    whether the small model alone reached the target (then every saving is trivial); and per row, whether
    the cell ran each method."""
    heuristics = [m for m in methods if m not in LEARNED]
    learned = [m for m in methods if m in LEARNED]
    header = ["size", "family", "target params", "tokens per param", "tokens", "seed", "scratch final val"]
    header += (
        ["small final val"]
        + [f"{m} own saving" for m in methods]
        + [f"{m} lead" for m in learned]
        + ["small alone reaches target"]
    )
    header += [f"{m} reached at the shortest length" for m in methods]
    rows, ran = [], []
    for cell in sorted(cells, key=lambda c: (c.size, c.family, c.tpp, c.seed)):
        got = cells[cell]
        ran.append([m in got for m in methods])
        own = {m: fraction(got.get(m, {}).get("own_saving")) for m in methods}
        # the shortest length tried already reached the target: the saving is a lower bound
        bound = [got.get(m, {}).get("at_least") == "1" for m in methods]
        best = max((own[m] for m in heuristics if own[m] is not None), default=None)
        leads = [None if own[m] is None or best is None else own[m] - best for m in learned]
        rows.append(
            [cell.size, cell.family, cell.params, cell.tpp, cell.tokens, cell.seed, float(got["_scratch"]["final_val"])]
            + [fraction(got["_scratch"].get("small_final_val"))]
            + [own[m] for m in methods]
            + leads
            + [got["_scratch"]["small_reaches_target"]]
            + bound
        )
    shown_header = header[: -len(methods)]  # the bounds show as ">=" in the savings' cells
    lines = ["| " + " | ".join(shown_header) + " |", "|" + "---|" * len(shown_header)]
    for r, was_run in zip(rows, ran, strict=True):
        shown = [str(v) for v in r[:4]] + [f"{r[4]:,}", str(r[5]), f"{r[6]:.4f}"]
        shown.append("-" if r[7] is None else f"{r[7]:.4f}")
        k = len(methods)
        bound = r[-k:]
        savings = r[FIRST : FIRST + k]
        shown += [
            ("not reached" if run else "not run") if v is None else f"{'>= ' * b}{100 * v:.1f} %"
            for v, b, run in zip(savings, bound, was_run, strict=True)
        ]
        shown += ["-" if v is None else f"{100 * v:+.1f} pt" for v in r[FIRST + k : -k - 1]]
        lines.append("| " + " | ".join([*shown, str(r[-k - 1] or "-")]) + " |")
    return "\n".join(lines) + "\n", [header, *rows], ran


def over_seeds(rows: list[list], methods: tuple[str, ...], ran: list[list[bool]] | None = None) -> str:
    """Per (size, family, budget) run at several seeds: each method's mean own saving and spread (sample sd),
    and each fitted method's mean lead, from table()'s rows, over the seeds that ran the method (`ran`, per
    row and method; default all); the seeds that did not are named."""
    k, learned = len(methods), [m for m in methods if m in LEARNED]
    groups: dict[tuple, list[tuple[list, list[bool]]]] = {}
    for r, was_run in zip(rows, ran or [[True] * k] * len(rows), strict=True):
        groups.setdefault((r[0], r[1], r[3]), []).append((r, was_run))
    header = ["size", "family", "tokens per param", "seeds"] + list(methods) + [f"{m} lead" for m in learned]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def mean_sd(group: list[tuple[list, list[bool]]], column: int, method: int) -> str:
        values = [r[column] for r, was_run in group if was_run[method]]
        absent = [str(r[5]) for r, was_run in group if not was_run[method]]
        got = [v for v in values if v is not None]
        if not values:
            return "not run"
        if len(got) < len(values):
            text = f"{len(values) - len(got)} of {len(values)} not reached"
        else:
            s = spread(got)
            text = f"{100 * s.mean:.1f} " + ("(one seed)" if len(got) == 1 else f"(sd {100 * s.sd:.1f})")
        return text + (f", not run at {','.join(absent)}" if absent else "")

    for (size, family, tpp), group in sorted(groups.items()):
        if len(group) < 2:
            continue
        # a seed's saving a lower bound
        bounded = [any(r[len(r) - k + i] for r, _ in group) for i in range(k)]
        cols = [mean_sd(group, FIRST + i, i) + " with lower bounds" * b for i, b in enumerate(bounded)]
        cols += [mean_sd(group, FIRST + k + i, methods.index(m)) for i, m in enumerate(learned)]
        seeds = ",".join(str(r[5]) for r, _ in group)
        lines.append("| " + " | ".join([size, family, f"{tpp:g}", seeds, *cols]) + " |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def measured(cells: dict[Cell, dict], size: str, family: str, method: str) -> list[tuple[float, float]]:
    """(tokens per param, own saving) of seed 1234's cells of `size` and `family` where `method` reached the
    target and its saving is a measurement, not a lower bound (the shortest length tried already reached the
    target)."""
    points = []
    for c, got in cells.items():
        row = got.get(method, {})
        if (c.size, c.family, c.seed) == (size, family, SEED) and fraction(row.get("own_saving")) is not None:
            if row.get("at_least") != "1":
                points.append((c.tpp, fraction(row["own_saving"])))
    return sorted(points)


def trend(cells: dict[Cell, dict], methods: tuple[str, ...]) -> str:
    """Per size, family and method: the budget where the saving (seed 1234's cells, lower bounds left out)
    falls below 25 % and where a straight line in log budget through them would reach 0."""
    lines = ["| size | family | method | budgets measured | below 25 % at tokens per param | 0 % at (fitted trend) |"]
    lines.append("|---|---|---|---|---|---|")
    for size, family in sorted({(c.size, c.family) for c in cells}):
        for m in methods:
            points = measured(cells, size, family, m)
            below = next((t for t, s in points if s < 0.25), None)
            zero = where_it_falls(points, 0.0)
            lines.append(
                f"| {size} | {family} | {m} | {', '.join(f'{t:g}' for t, _ in points) or '-'} | "
                f"{'not within the budgets measured' if below is None else f'{below:g} (measured)'} | "
                f"{'-' if zero is None else f'{zero:.3g} (extrapolated)'} |"
            )
    return "\n".join(lines) + "\n"


def plot(cells: dict[Cell, dict], methods: tuple[str, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ("-o", "--s", ":^", "-.v", "-D", "--x")  # one per (size, family); one colour per method
    for (size, family), style in zip(sorted({(c.size, c.family) for c in cells}), styles):
        for i, m in enumerate(methods):
            points = [(t, 100 * v) for t, v in measured(cells, size, family, m)]
            if points:
                ax.plot(*zip(*points, strict=True), style, color=f"C{i}", label=f"{m} ({size} {family})")
    ax.set_xscale("log")
    ticks = sorted({c.tpp for c in cells})  # the budgets themselves, not log-scale minor labels over each other
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("tokens per target parameter")
    ax.set_ylabel("FLOPs saved, own schedule (%)")
    ax.set_title("seed 1234; savings that are lower bounds left out", fontsize=9)
    if ax.get_legend_handles_labels()[0]:  # seed 1234's cells may all be lower bounds, or other seeds'
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def collect(root: Path, sizes: dict, base: Preset) -> dict[Cell, dict]:
    """Every finished cell under `root`, asked for by this invocation or an earlier one."""
    cells = {}
    for size, families in sizes.items():
        for work in sorted(root.glob(f"{size}_tpp*")):
            tpp_text, _, seed_text = work.name[len(size) + 4 :].partition("_seed")
            tpp, seed = float(tpp_text), int(seed_text or SEED)
            cp = cell_preset(base, families, tpp)
            for family, (_, large) in families.items():
                report = work / family / "report"
                if (report / "own_schedule.csv").is_file():
                    tokens = cp.large_steps * cp.micro_batch * cp.seq_len
                    cells[Cell(size, family, tpp, seed, target_params(large), tokens)] = read_cell(report)
    return cells


def variant_table(cells: dict[Cell, dict], heuristics: tuple[str, ...], fitted: tuple[str, ...]) -> str:
    """Item 4's variants, in the cells where any ran: the best heuristic's own saving and each fitted method's
    (LiGO's and the variants') with its lead over it, then each one's mean lead over the seeds of a budget.
    "-" is a method not run in that cell; a lower bound (">=") leaves its lead out of the mean."""
    ran = {c: got for c, got in cells.items() if any(m in got for m in fitted[1:])}
    if not ran:
        return ""
    header = ["size", "family", "tokens per param", "seed", "best heuristic", *fitted]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    leads: dict[tuple, dict[str, list[float]]] = {}
    for cell in sorted(ran, key=lambda c: (c.size, c.family, c.tpp, c.seed)):
        got = ran[cell]
        own = {m: fraction(got[m]["own_saving"]) if m in got else None for m in (*heuristics, *fitted)}
        best = max((m for m in heuristics if own[m] is not None), key=lambda m: own[m], default=None)
        shown = [cell.size, cell.family, f"{cell.tpp:g}", str(cell.seed)]
        shown.append("-" if best is None else f"{best} {100 * own[best]:.1f} %")
        group = leads.setdefault((cell.size, cell.family, cell.tpp), {m: [] for m in fitted})
        for m in fitted:
            if m not in got:
                shown.append("-")
            elif own[m] is None or best is None:
                shown.append("not reached")
            else:
                bound = got[m].get("at_least") == "1"
                lead = own[m] - own[best]
                shown.append(f"{'>= ' * bound}{100 * own[m]:.1f} % ({100 * lead:+.1f} pt)")
                if not bound:
                    group[m].append(lead)
        lines.append("| " + " | ".join(shown) + " |")
    for (size, family, tpp), group in sorted(leads.items()):
        mean = ["-" if not v else f"{100 * sum(v) / len(v):+.1f} pt over {len(v)}" for v in group.values()]
        lines.append("| " + " | ".join([size, family, f"{tpp:g}", "mean lead", "", *mean]) + " |")
    return "\n".join(lines) + "\n"


def record(cells: dict[Cell, dict], methods: tuple[str, ...]) -> list[list]:
    """budgets.csv: table()'s rows over every method any cell ran (the variants too), each with whether the
    cell ran it, so that read_record() rebuilds the cells when their runs are gone."""
    _, rows, ran = table(cells, methods)
    return [rows[0] + [f"{m} run" for m in methods]] + [r + flags for r, flags in zip(rows[1:], ran, strict=True)]


def read_record(path: Path) -> dict[Cell, dict]:
    """The cells of a budgets.csv that record() wrote, as collect() reads them from the runs: each method's
    own saving and whether it is a lower bound, the scratch and small models' final losses."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise SystemExit(f"--earlier {str(path)!r}: {e.strerror}; expected a budgets.csv of budgets.py") from None
    methods = [h.removesuffix(" run") for h in (rows[0] if rows else {}) if h.endswith(" run")]
    if not methods:
        raise SystemExit(f"--earlier {str(path)!r}: no '<method> run' columns; expected a budgets.csv of budgets.py")
    cells = {}
    for line, r in enumerate(rows, start=2):
        try:
            cell, got = _recorded_cell(r, methods)
        except (KeyError, ValueError) as e:
            raise SystemExit(
                f"--earlier {str(path)!r}, line {line}: {e!r} in {r}; expected a row of record()"
            ) from None
        cells[cell] = got
    return cells


def _recorded_cell(r: dict[str, str], methods: list[str]) -> tuple[Cell, dict]:
    """One row of budgets.csv as the cell and what collect() would have read for it."""
    numbers = (float(r["tokens per param"]), int(r["seed"]), int(r["target params"]), int(r["tokens"]))
    got = {
        m: {
            "own_saving": r[f"{m} own saving"],
            "at_least": str(int(r[f"{m} reached at the shortest length"] == "True")),
        }
        for m in methods
        if r[f"{m} run"] == "True"
    }
    got["_scratch"] = {
        "final_val": r["scratch final val"],
        "small_final_val": r["small final val"] or None,
        "small_reaches_target": r["small alone reaches target"],
    }
    return Cell(r["size"], r["family"], *numbers), got


def summarise(root: Path, cells: dict[Cell, dict], methods: tuple[str, ...]) -> str:
    """budgets.md (the cells, the seeds, the trend, item 4's variants where any ran), budgets.csv (every
    method, record()) and budgets.png under `root`; returns the md."""
    everything = tuple(m for m in (*methods, *VARIANTS) if any(m in got for got in cells.values()))
    methods = tuple(m for m in methods if m in everything)  # a study of a few methods
    md, rows, ran = table(cells, methods)
    seeds = over_seeds(rows[1:], methods, ran)
    if seeds:
        md += "\nOwn-schedule savings over seeds, in % (mean and sample sd; leads in points):\n\n" + seeds
    md += "\n" + trend(cells, methods)
    heuristics = tuple(m for m in methods if m not in LEARNED)
    variants = variant_table(cells, heuristics, ("ligo", *(v for v in VARIANTS if any(v in g for g in cells.values()))))
    if variants:
        md += "\nItem 4's variants against the best heuristic of each cell (own schedule, fit included):\n\n" + variants
    with open(root / "budgets.csv", "w", newline="") as f:
        csv.writer(f).writerows(record(cells, everything))
    (root / "budgets.md").write_text(md)
    plot(cells, methods, root / "budgets.png")
    return md


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(BASE), default="cpu")
    p.add_argument("--out", default=str(ROOT / "bench" / "runs"))
    p.add_argument("--sizes", help="comma-separated, some of the preset's sizes (default: all)")
    p.add_argument("--families", help="comma-separated, some of the sizes' families (default: all)")
    p.add_argument("--tpp", help="tokens per target parameter, comma-separated (default: the preset's)")
    p.add_argument("--seeds", default=str(SEED), help=f"comma-separated seeds (default {SEED})")
    p.add_argument("--source", help="corpus for `ligo-ds prepare` (default: the preset's)")
    p.add_argument("--data", help="an already prepared DATA_DIR instead of --source")
    p.add_argument(
        "--methods",
        help=f"grown runs, some of {', '.join(METHODS)} (default: the preset's grid); the table keeps every "
        "finished one",
    )
    p.add_argument("--scratch-lrs", help="the scratch sweep's peak lrs instead of the size's (SIZE_LRS)")
    p.add_argument(
        "--small-lrs",
        help="the small model's sweep instead of the size's; with --out elsewhere (and --data this study's), "
        "a study of the small model's lr that leaves the preset's cells alone",
    )
    p.add_argument(
        "--earlier",
        help="an earlier study's budgets.csv (e.g. bench/results/budgets_cpu.csv): its cells join the table where "
        "their runs are gone from --out; a cell finished under --out replaces its row",
    )
    a = p.parse_args()
    earlier = read_record(Path(a.earlier)) if a.earlier else {}  # before hours of runs, not after
    lrs = {}
    if a.scratch_lrs:
        lrs["scratch_lrs"] = parse_lrs(a.scratch_lrs, "--scratch-lrs")
    if a.small_lrs:
        lrs["small_lrs"] = parse_lrs(a.small_lrs, "--small-lrs")
    base, sizes = BASE[a.preset], SIZES[a.preset]
    chosen = a.sizes.split(",") if a.sizes else list(sizes)
    unknown = [s for s in chosen if s not in sizes]
    if unknown:
        raise SystemExit(f"--sizes: unknown {unknown}; expected some of {sorted(sizes)}")
    known = tuple(dict.fromkeys(f for s in chosen for f in sizes[s]))
    families = choose(a.families, known, "--families") if a.families else known
    try:
        tpps = sorted({float(x) for x in (a.tpp or DEFAULT_TPP[a.preset]).split(",")})
        seeds = [int(x) for x in a.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"--tpp {a.tpp!r} / --seeds {a.seeds!r}: expected comma-separated numbers") from None
    if not tpps or min(tpps) <= 0:
        raise SystemExit(f"--tpp {a.tpp!r}: expected positive tokens per parameter, e.g. 0.15,1,4")
    root = Path(a.out) / f"budgets-{a.preset}"
    root.mkdir(parents=True, exist_ok=True)
    data = Path(a.data).resolve() if a.data else root / "data"
    if a.data and a.source:
        raise SystemExit(f"--data {a.data!r} and --source {a.source!r}: give one (--data is already prepared)")
    if a.data and not (data / "meta.json").is_file():
        raise SystemExit(f"--data {a.data!r}: no meta.json there; expected a directory made by `ligo-ds prepare`")
    if not (data / "meta.json").is_file():
        source = a.source or "stdlib"
        if a.source is None and base.corpus == "site-packages":
            from code_corpus import write_corpus

            source = str(root / "corpus")
            write_corpus(Path(source))
        ligo("prepare", "--source", source, "--out", str(data), "--force", *base.data_args, log=root / "jobs.log")
    preset_grid = TINY_GRID if a.preset == "tiny" else GRID  # the table's methods, whatever this run adds
    grid = replace(preset_grid, methods=choose(a.methods, METHODS, "--methods")) if a.methods else preset_grid
    for size in chosen:
        for tpp in tpps:
            for seed in seeds:
                # the length from all the size's families (cell_preset), the lrs per family
                cp = cell_preset(replace(base, **SIZE_LRS.get(size, {})), sizes[size], tpp)
                work = root / Cell(size, "", tpp, seed, 0, 0).name
                work.mkdir(exist_ok=True)
                jobs = Jobs(1, None, work / "jobs.log")
                try:
                    for family in (f for f in cp.families if f in families):
                        study(family_preset(cp, size, family, lrs), family, data, work, jobs, grid, seed)
                finally:
                    jobs.close()
    print(summarise(root, {**earlier, **collect(root, sizes, base)}, preset_grid.methods))
    print(f"table: {root / 'budgets.md'}, {root / 'budgets.csv'}; plot: {root / 'budgets.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
