"""What growth saves: scratch vs LiGO vs the classic heuristics, one command, one table, one plot.

    python bench/savings.py --preset cpu      # both families on the stdlib corpus, 51-70 min on 2 cores (by host)
    python bench/savings.py --preset gpu      # larger models, one H100/H200, 4 jobs sharing it
    python bench/savings.py --preset gpu --jobs 8 --devices 0,1,2,3,4,5,6,7   # a node of 8 GPUs
    python bench/savings.py --preset tiny     # seconds; what the test suite runs
    python bench/savings.py --preset cpu --families gpt2 --methods ligo,net2net_zero \
        --budgets 0.25,0.5,0.75,1 --schedules lemon,wsd   # grown runs on schedules of their own
    python bench/savings.py --preset cpu --families gpt2 --seed 1 --scratch-lrs 2e-3 --small-lrs 2e-3 \
        --methods ligo,net2net_zero --budgets 0.25,0.3,0.5   # another seed at seed 1234's best lrs

Per family (a GPT-2 pair and a Llama pair with GQA): pretrain the small model for the large model's
steps and batch at a few learning rates, each held at its peak after warmup (no decay: see `study`), and
grow the best; train the large model from scratch at a few learning rates (the best is the baseline, so
neither end of the comparison is a weak model);
then grow the small model with each heuristic (an operator special case written with `fit --steps 0`)
and with LiGO (the fitted operator), and train every grown model with the same data order, batch,
schedule and token budget as scratch. `ligo-ds report` then writes report.md / report.csv /
loss_vs_flops.png per family.
With --budgets and --schedules each grown method also trains on full schedules of its own: every
schedule of GROWN_SCHEDULES named (short or no re-warmup, a peak-lr factor, wsd, LEMON's keep-the-peak)
at every length named (fractions of the scratch run's tokens). The report then gives each method's
saving at the shortest length whose final loss reaches the target (the best schedule at each length,
as the scratch sweep keeps its best lr), the length a user should train for, and the saving at every
loss the scratch run reaches on its way (saving_vs_loss.png).
Every job is a real `ligo-ds` command; rerunning the script resumes what is unfinished, and the report
keeps the finished grown runs an earlier invocation of the same study asked for (other methods, lengths or
schedules), each checked against the command this one would give it.
With --jobs N, up to N jobs run at once (the families side by side, and within a family the two sweeps,
then the grown runs), each pinned to a device of --devices in turn. Small models leave a GPU mostly idle
between kernels (start-up, evaluation, Python), so jobs sharing one finish sooner than one after another;
their wall times are then times of shared runs, which the time columns of the report say nothing
reliable about. FLOPs, the study's measure, are unaffected. On a CPU it gains nothing: the jobs share its cores.

Past 300 lines on purpose: a third is the preset table (the studied pairs, sizes and schedules) and the
rest one study read top to bottom; running jobs lives in bench/jobs.py, the report in ligo_ds/analysis/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ligo_ds.options import to_args  # noqa: E402

from jobs import ROOT, Jobs, final_val, ligo, run_state  # noqa: E402


@dataclass(frozen=True)
class Preset:
    families: dict  # name -> (small HF config, large HF config)
    small_steps: int
    large_steps: int
    # LiGO's operator steps, about 4 % of a large run's: on CPU 15 steps save a point more than 30 with every
    # seed tried and 60 steps a point less, because training gives back what a longer fit gains while the
    # fit's FLOPs stay counted.
    fit_steps: int
    seq_len: int
    micro_batch: int
    scratch_lrs: tuple
    # The small model's peak lrs; the lowest final loss is grown. A mis-tuned small model gives growth a
    # weak start: on CPU the GPT-2 small model ends 0.24 nats lower at 2e-3 than at 4e-3, and every growth
    # from the 4e-3 model saved 2-18 % instead of 58-59 %.
    small_lrs: tuple
    warmup: int
    eval_every: int
    eval_samples: int
    operator_lr: float = 1e-3
    # LiGO's fit batch per rank (default micro_batch). An eighth fits worse but costs far less (the operator
    # produces every weight on every step, whatever the batch), and the grown runs end as low.
    fit_micro_batch: int | None = None
    ds_config: str = "zero2"
    jobs: int = 1  # jobs at once (--jobs): 1 keeps the time columns clean, more finish sooner on a GPU
    corpus: str = "stdlib"  # or "site-packages": bench/code_corpus.py, for budgets that would repeat stdlib
    data_args: tuple = ()


def _gpt2(layers, width, heads, positions, vocab):
    return dict(model_type="gpt2", n_layer=layers, n_embd=width, n_head=heads, n_positions=positions, vocab_size=vocab)


def _llama(layers, width, heads, kv, ffn, positions, vocab):
    return dict(
        model_type="llama",
        num_hidden_layers=layers,
        hidden_size=width,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=ffn,
        max_position_embeddings=positions,
        vocab_size=vocab,
        tie_word_embeddings=True,
    )


def _llama32(layers, width, heads, kv, head_dim, ffn, positions, vocab):
    """A pair shaped like Llama 3.2 1B -> 3B (issue 39): head_dim doubles while the head count falls, the
    GQA group changes with the kv heads kept, depth grows, the MLP keeps its width; rope base 5e5. No
    heuristic is function preserving for it (the hidden ratio 1.5 breaks Net2Net's norm), which is the case
    LiGO is for."""
    return {**_llama(layers, width, heads, kv, ffn, positions, vocab), "head_dim": head_dim, "rope_theta": 5e5}


PRESETS = {
    "tiny": Preset(
        families={
            "gpt2": (_gpt2(1, 32, 2, 64, 320), _gpt2(2, 64, 4, 64, 320)),
            "llama": (_llama(1, 32, 2, 1, 64, 64, 320), _llama(2, 64, 4, 2, 128, 64, 320)),
            "llama32": (_llama32(2, 32, 4, 1, 8, 64, 64, 320), _llama32(3, 48, 3, 1, 16, 64, 64, 320)),
        },
        small_steps=8,
        large_steps=8,
        fit_steps=2,
        seq_len=32,
        micro_batch=4,
        scratch_lrs=(3e-3,),
        small_lrs=(3e-3,),
        warmup=2,
        eval_every=4,
        eval_samples=4,
        fit_micro_batch=1,
        data_args=("--vocab-size", "320", "--val-fraction", "0.1"),  # 60 documents: a 2 % split could draw none
    ),
    "cpu": Preset(
        families={
            "gpt2": (_gpt2(2, 128, 4, 256, 8192), _gpt2(4, 256, 8, 256, 8192)),
            "llama": (_llama(2, 128, 4, 2, 352, 256, 8192), _llama(4, 256, 8, 4, 704, 256, 8192)),
            # 32 -> 24 heads as 8 -> 6, kv 8 -> 8 as 2 -> 2 (group 4 -> 3), head_dim 64 -> 128 as 16 -> 32,
            # 16 -> 28 layers as 4 -> 7, hidden 2048 -> 3072 as 128 -> 192, MLP 8192 kept as 512.
            "llama32": (_llama32(4, 128, 8, 2, 16, 512, 256, 8192), _llama32(7, 192, 6, 2, 32, 512, 256, 8192)),
        },
        small_steps=400,
        large_steps=400,
        fit_steps=15,
        seq_len=128,
        micro_batch=16,
        scratch_lrs=(1e-3, 2e-3, 4e-3),
        small_lrs=(1e-3, 2e-3, 4e-3),
        warmup=30,
        eval_every=25,
        eval_samples=64,
        fit_micro_batch=2,
    ),
    "gpu": Preset(
        families={
            "gpt2": (_gpt2(6, 384, 6, 512, 8192), _gpt2(12, 768, 12, 512, 8192)),
            "llama": (_llama(6, 384, 6, 2, 1024, 512, 8192), _llama(12, 768, 12, 4, 2048, 512, 8192)),
        },
        small_steps=500,
        large_steps=500,
        fit_steps=20,
        seq_len=512,
        micro_batch=32,
        scratch_lrs=(3e-4, 6e-4, 1.2e-3),
        small_lrs=(2.4e-3,),
        warmup=50,
        eval_every=50,
        eval_samples=128,
        fit_micro_batch=4,
        corpus="site-packages",
        jobs=4,
    ),
}


# Grown runs: name -> (fit steps, growth options). The heuristics are operator special cases, not fitted;
# width grows the function-preserving Net2Net / bert2BERT way in each, depth by stacking (StackBERT,
# G_stack), interpolation, or zero-initialised new layers (Net2Net deepening, function preserving).
# LiGO fits the operator from the official code's initialisation (random width mixes, stacked depth),
# the best of the initialisations tried, in the official code's order (mix over depth, then widen per
# target layer), which costs less per fit step than the paper's and fits as well.
# Every grown run keeps `grow`'s default init noise (0.01): without it copied units stay identical.
# `fitted_zero` is the variant for budgets where the function-preserving heuristic is strong (issue 42): the
# same fit started from Net2Net + zero with the inverse tying, so it starts where that heuristic does and
# can only move from there. The "-" variants change one thing of a fitted method (issue 42, item 4): the fit's
# batch raised to the training batch (the preset's eighth fits on noisy gradients: fitted_zero's fit raised
# its start's loss on the 4m pair), no init noise, so that only the learned map's random mixes and the fit
# break the copies' symmetry, or no fit at all (LiGO's random start trained as it is: what the fit adds).
# No method's name begins another's followed by "_" (parse_run_name).
def grown_runs(p: Preset) -> dict[str, tuple[int, list[str]]]:
    ligo_start = ["--width-init", "random", "--depth-init", "stack", "--order", "official"]
    zero_start = ["--width-init", "net2net", "--depth-init", "zero"]
    full_batch = ["--fit-micro-batch", str(p.micro_batch)]
    return {
        "net2net_stack": (0, ["--width-init", "net2net", "--depth-init", "stack"]),
        "net2net_interpolate": (0, ["--width-init", "net2net", "--depth-init", "interpolate"]),
        "net2net_zero": (0, zero_start),
        "ligo": (p.fit_steps, ligo_start),
        "fitted_zero": (p.fit_steps, zero_start),
        "ligo-fullbatch": (p.fit_steps, [*ligo_start, *full_batch]),
        "ligo-quiet": (p.fit_steps, [*ligo_start, "--init-noise", "0"]),
        "ligo-nofit": (0, ligo_start),
        "fitted_zero-fullbatch": (p.fit_steps, [*zero_start, *full_batch]),
    }


METHODS = tuple(grown_runs(PRESETS["tiny"]))  # grown_runs' order
VARIANTS = tuple(m for m in METHODS if "-" in m)


# How a grown model trains: name -> (its warmup as a share of the scratch run's, its peak lr as a multiple
# of the scratch run's best, schedule flags). Each runs over the grown run's own length (--budgets), so
# its decay ends with the run. --schedules picks the ones swept; at each length the lowest final loss
# counts, as the scratch sweep keeps its best lr.
GROWN_SCHEDULES = {
    # LEMON (Wang et al., ICLR 2024): keep the scratch peak, decay faster. The scratch run's own warmup,
    # peak and cosine, over the shorter run; at length 1 it is the scratch run's schedule.
    "lemon": (1.0, 1.0, ()),
    # The grown model starts near the small model's loss: the bet that a sixth of the warmup settles Adam's
    # moments without spending steps below the peak. On the cpu preset it lost to lemon at a quarter of
    # the length (bench/HISTORY.md item 24).
    "short-warmup": (1 / 6, 1.0, ()),
    # Constant at the peak, then a 1-sqrt decay over the last 30 % (Hägele et al. 2024).
    "wsd": (1 / 6, 1.0, ("--schedule", "wsd", "--decay-fraction", "0.3", "--decay-shape", "1-sqrt")),
    # No re-warmup at all, from half the peak: the grown weights are trained ones, not an initialisation.
    "no-warmup": (0.0, 0.5, ()),
}


def grown_schedule(p: Preset, name: str, lr: float, budget: float) -> tuple[float, int, int, tuple[str, ...]]:
    """(peak lr, steps, warmup steps, schedule flags) of a grown run on `name` over `budget` of the scratch
    run's steps."""
    share, factor, flags = GROWN_SCHEDULES[name]
    return lr * factor, max(1, round(budget * p.large_steps)), round(share * p.warmup), flags


def with_warmup(common: list[str], warmup: int) -> list[str]:
    """The study's common flags with another --warmup-steps (in place, so a run on the scratch run's
    schedule keeps the command, and the record, it had before grown schedules)."""
    i = common.index("--warmup-steps")
    return [*common[: i + 1], str(warmup), *common[i + 2 :]]


def run_name(method: str, budget: float, schedule: str) -> str:
    """`ligo` for the scratch run's length and schedule (the study before budgets), `ligo_0.5x_wsd` else."""
    return method if (budget, schedule) == (1.0, "lemon") else f"{method}_{budget:g}x_{schedule}"


def parse_floats(text: str, flag: str, within, expected: str) -> tuple[float, ...]:
    """A comma-separated list of numbers, sorted and without repeats; `within(x)` says which are allowed."""
    try:
        values = tuple(sorted({float(x) for x in text.split(",")}))
    except ValueError:
        values = ()
    if not values or not all(within(x) for x in values):
        raise SystemExit(f"{flag} {text!r}: expected {expected}")
    return values


def parse_budgets(text: str) -> tuple[float, ...]:
    return parse_floats(
        text, "--budgets", lambda b: 0 < b <= 4, "fractions of the scratch run's tokens in (0, 4], e.g. 0.25,0.5,1"
    )


def parse_lrs(text: str, flag: str) -> tuple[float, ...]:
    return parse_floats(text, flag, lambda lr: 0 < lr < 1, "comma-separated learning rates in (0, 1), e.g. 1e-3,2e-3")


def choose(text: str, known, flag: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise SystemExit(f"{flag} {text!r}: unknown {unknown}; expected some of {', '.join(known)}")
    return names


def best_of(sweep: list[tuple[float, float, Path]], what: str, family: str) -> tuple[float, float, Path]:
    """The (final val, lr, run) with the lowest loss, saying so, and warning when it is the sweep's edge."""
    best = min(sweep)
    lrs = [lr for _, lr, _ in sweep]
    print(
        f"  {family}: {what} final val by lr: "
        + ", ".join(f"{lr:g}: {v:.4f}" for v, lr, _ in sweep)
        + f" -> lr {best[1]:g}",
        file=sys.stderr,
    )
    if len(lrs) > 2 and best[1] in (min(lrs), max(lrs)):
        print(
            f"  {family}: warning: the best {what} lr {best[1]:g} is at the edge of the sweep "
            f"{[f'{lr:g}' for lr in lrs]}; that model may be a weak one",
            file=sys.stderr,
        )
    return best


SEED = 1234  # every run's (weights' init, data order, the operator's random mixes); --seed for others


@dataclass(frozen=True)
class Grid:
    """The grown runs of a study: methods x lengths x schedules."""

    methods: tuple = ("net2net_stack", "net2net_interpolate", "net2net_zero", "ligo")
    budgets: tuple = (1.0,)
    schedules: tuple = ("lemon",)


def study(p: Preset, family: str, data: Path, work: Path, jobs: Jobs, grid: Grid = Grid(), seed: int = SEED) -> Path:
    small_cfg, large_cfg = p.families[family]
    fam = work / family
    fam.mkdir(parents=True, exist_ok=True)
    (fam / "small.json").write_text(json.dumps(small_cfg))
    (fam / "large.json").write_text(json.dumps(large_cfg))
    common = to_args(
        data=data,
        seq_len=p.seq_len,
        micro_batch=p.micro_batch,
        warmup_steps=p.warmup,
        eval_every=p.eval_every,
        eval_samples=p.eval_samples,
        log_every=p.eval_every,
        save_every=10 * p.large_steps,
        ds_config=p.ds_config,
        seed=seed,
    )
    runs = fam / "runs"
    # The small model keeps its peak lr after warmup (no decay), as a checkpoint meant for growth is taken
    # before annealing: an annealed model loses ~0.14 nats when the grown run warms back up to the scratch
    # peak, and a small model continued without any growth loses as much.
    # The two sweeps are independent, so they are queued together; the grown runs need both winners.
    smalls, scratch = [], []
    for lr in p.small_lrs:
        out = runs / f"small_lr{lr:g}"
        args = to_args(model=fam / "small.json", out=out, lr=lr, min_lr=lr, max_steps=p.small_steps)
        smalls.append((lr, out, jobs.submit("pretrain", *args, *common, done=out / "hf" / "config.json")))
    for lr in p.scratch_lrs:
        out = runs / f"scratch_lr{lr:g}"
        args = to_args(model=fam / "large.json", out=out, lr=lr, max_steps=p.large_steps)
        scratch.append((lr, out, jobs.submit("pretrain", *args, *common, done=out / "hf" / "config.json")))
    for _, _, job in [*smalls, *scratch]:
        job.result()
    small_val, _, small = best_of([(final_val(out), lr, out) for lr, out, _ in smalls], "small model", family)
    best_val, best_lr, _ = best_of([(final_val(out), lr, out) for lr, out, _ in scratch], "scratch", family)
    if small_val <= best_val:
        print(
            f"  {family}: warning: the small model alone ({small_val:.4f}) already reaches the scratch target "
            f"({best_val:.4f}), so every growth saving is trivial here (the report says so too)",
            file=sys.stderr,
        )

    def grow_job(method: str, budget: float, schedule: str) -> tuple[Path, list[str], Path]:
        """(run dir, `ligo-ds` arguments, the file that says it finished) of one grown run."""
        steps, options = grown_runs(p)[method]
        if steps and p.fit_micro_batch is not None and "--fit-micro-batch" not in options:
            options = [*options, *to_args(fit_micro_batch=p.fit_micro_batch)]
        out = runs / run_name(method, budget, schedule)
        head = to_args(source=small / "hf", target=fam / "large.json", out=out, fit_steps=steps)
        lr, length, warmup, flags = grown_schedule(p, schedule, best_lr, budget)
        tail = to_args(operator_lr=p.operator_lr, operator_warmup=max(1, steps // 10), lr=lr, max_steps=length)
        return out, ["grow", *head, *options, *tail, *with_warmup(common, warmup), *flags], out / "train/hf/config.json"

    grown = {}  # grid point -> (run dir, its job)
    for point in product(grid.methods, grid.budgets, grid.schedules):
        out, argv, done = grow_job(*point)
        grown[point] = (out, jobs.submit(*argv, done=done))
    for _, job in grown.values():
        job.result()
    made = {point: out for point, (out, _) in grown.items()}
    reported = {**made, **earlier_runs(runs, set(made.values()), grow_job, jobs.log, family)}
    report = fam / "report"
    # by method, then length, then schedule, whichever invocation made them
    grown_dirs = [str(reported[point]) for point in sorted(reported, key=grid_order)]
    jobs.submit("report", *(str(out) for _, out, _ in scratch), *grown_dirs, "--out", str(report)).result()
    return report


def parse_run_name(name: str) -> tuple[str, float, str] | None:
    """(method, length, schedule) of a grown run's dir name (run_name's inverse), or None for any other dir."""
    if name in METHODS:
        return name, 1.0, "lemon"
    for method in METHODS:  # no method's name begins another's followed by "_"
        if name.startswith(method + "_"):
            budget, x, schedule = name[len(method) + 1 :].partition("x_")
            try:
                point = (method, float(budget), schedule)
            except ValueError:
                return None
            return point if x and schedule in GROWN_SCHEDULES and run_name(*point) == name else None
    return None


def grid_order(point: tuple[str, float, str]) -> tuple[int, float, int]:
    method, budget, schedule = point
    return METHODS.index(method), budget, list(GROWN_SCHEDULES).index(schedule)


# Why an earlier run is left out of the report, by its jobs.run_state
LEFT_OUT = {
    "unfinished": "it is unfinished",
    "unrecorded": "it has no record of its command",
    "other": "it was made by a different command (another small model, scratch lr, preset or seed)",
}


def earlier_runs(runs: Path, made: set[Path], grow_job, log: Path, family: str) -> dict[tuple, Path]:
    """Finished grown runs of this study outside this invocation's grid (other methods or lengths asked for
    before), by grid point, so a rerun with a few more lengths reports them all. A run counts only when its
    recorded command is the one this study would give it now (same small model, scratch lr, preset and
    seed); any other is left out, saying why, so a report never mixes runs of two studies."""
    found = {}
    for out in sorted(d for d in runs.iterdir() if d.is_dir() and d not in made):
        point = parse_run_name(out.name)
        if point is None:
            continue
        _, argv, done = grow_job(*point)
        state = run_state(argv, done, log)
        if state == "made":
            found[point] = out
        else:
            print(f"  {family}: {out.name} left out of the report: {LEFT_OUT[state]}", file=sys.stderr)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--out", default=str(ROOT / "bench" / "runs"))
    parser.add_argument("--families", default="gpt2,llama")
    parser.add_argument(
        "--source", help="corpus for `ligo-ds prepare` (default: the preset's, stdlib or site-packages sources)"
    )
    parser.add_argument("--data", help="an already prepared DATA_DIR (`ligo-ds prepare`) instead of --source")
    parser.add_argument("--jobs", type=int, help="jobs at once (default: the preset's; gpu 4, others 1)")
    parser.add_argument(
        "--devices",
        help="comma-separated GPU ids the jobs are spread over, e.g. 0,1,2,3, "
        "counted among the devices this script sees (default: every job sees them all)",
    )
    parser.add_argument(
        "--budgets",
        default="1",
        help="lengths of the grown runs' schedules, in fractions of the scratch run's tokens, e.g. 0.25,0.5,0.75,1 "
        "(default 1: the scratch run's length)",
    )
    parser.add_argument(
        "--schedules",
        default="lemon",
        help=f"the grown runs' schedules swept at each length, some of {', '.join(GROWN_SCHEDULES)} "
        "(default lemon: the scratch run's schedule over the grown run's length)",
    )
    parser.add_argument(
        "--methods", help=f"grown runs, some of {', '.join(METHODS)} (default: {', '.join(Grid.methods)})"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=SEED,
        help=f"every run's seed (default {SEED}); another seed is a whole study of its own, under OUT/PRESET_seedN",
    )
    parser.add_argument(
        "--scratch-lrs",
        help="the scratch sweep's peak lrs instead of the preset's, e.g. the best of seed 1234's sweep "
        "for the other seeds' studies",
    )
    parser.add_argument("--small-lrs", help="the small model's sweep instead of the preset's, likewise")
    args = parser.parse_args()
    p = PRESETS[args.preset]
    if args.scratch_lrs:
        p = replace(p, scratch_lrs=parse_lrs(args.scratch_lrs, "--scratch-lrs"))
    if args.small_lrs:
        p = replace(p, small_lrs=parse_lrs(args.small_lrs, "--small-lrs"))
    grid = Grid(
        methods=choose(args.methods, list(grown_runs(p)), "--methods") if args.methods else Grid.methods,
        budgets=parse_budgets(args.budgets),
        schedules=choose(args.schedules, list(GROWN_SCHEDULES), "--schedules"),
    )
    work = Path(args.out) / (args.preset if args.seed == SEED else f"{args.preset}_seed{args.seed}")
    work.mkdir(parents=True, exist_ok=True)
    log = work / "jobs.log"
    data = Path(args.data).resolve() if args.data else work / "data"
    start = time.perf_counter()
    families = args.families.split(",")
    unknown = [f for f in families if f not in p.families]
    if unknown:
        raise SystemExit(f"--families: unknown {unknown}; expected some of {sorted(p.families)}")
    jobs = Jobs(args.jobs if args.jobs is not None else p.jobs, args.devices.split(",") if args.devices else None, log)
    if args.data and args.source:
        raise SystemExit(f"--data {args.data!r} and --source {args.source!r}: give one (--data is already prepared)")
    if args.data and not (data / "meta.json").is_file():
        raise SystemExit(f"--data {args.data!r}: no meta.json there; expected a directory made by `ligo-ds prepare`")
    if not (data / "meta.json").is_file():
        source = args.source or p.corpus
        if source == "site-packages":
            from code_corpus import write_corpus

            source = str(work / "corpus")
            docs, size = write_corpus(Path(source))
            print(f"  corpus: {docs} site-packages sources, {size / 1e6:.1f} MB", file=sys.stderr)
        ligo("prepare", "--source", source, "--out", str(data), "--force", *p.data_args, log=log)
    try:
        if jobs.jobs == 1:  # one family after the other, in the order of the job log before --jobs
            reports = [study(p, family, data, work, jobs, grid, args.seed) for family in families]
        else:
            with ThreadPoolExecutor(max_workers=len(families)) as side_by_side:
                futures = [
                    side_by_side.submit(study, p, family, data, work, jobs, grid, args.seed) for family in families
                ]
                reports = [f.result() for f in futures]
    finally:
        jobs.close()
    for family, report in zip(families, reports):
        print(f"\n## {family} ({args.preset} preset)\n")
        print((report / "report.md").read_text())
        print(f"plot: {report / 'loss_vs_flops.png'}")
    if jobs.jobs > 1:
        print(
            f"\nnote: {jobs.jobs} jobs ran at once, so the time columns time shared runs; compare FLOPs "
            "(or rerun with --jobs 1 to time)"
        )
    print(f"\nwhole study: {time.perf_counter() - start:.0f} s; job log: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
