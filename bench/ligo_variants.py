"""LiGO's settings, one change at a time, measured against a finished savings study's target.

    python bench/ligo_variants.py --study bench/runs/cpu --family gpt2 --variants official_order,op_lr2e-3
    python bench/ligo_variants.py --study bench/runs/cpu --family gpt2 --seed 4321 --variants study,fit15
    python bench/ligo_variants.py --study bench/runs/cpu --family gpt2 --heuristics net2net_zero \
        --flags="--eval-every 5 --log-every 5" --variants study
    python bench/ligo_variants.py --list

Every job is a command the study recorded (`savings_job.json` in each of its run dirs) with a few flags
changed, so a variant differs from the study's LiGO run in exactly what its name says. With the study's
own seed its scratch and heuristic runs are the baselines and are not run again; with another seed the
best scratch run and the heuristics (all, or those named by --heuristics) run again under that seed
first (OUT/FAMILY/seedS/), because a saving read against another seed's target is not one.
--flags changes flags in every job, baselines included (they then run again at any seed): for example a
denser evaluation, which reads each crossing more finely without changing any run's training.
`ligo-ds report` then compares scratch, the heuristics and the variants; a compact table (fit cost,
final loss, saving) is printed after it.
Rerunning resumes: finished jobs whose recorded command matches are skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ligo_ds.training.rundir import read_metrics  # noqa: E402

from jobs import JOB_RECORD, final_val, flag, ligo  # noqa: E402

# name -> flags that replace (or join) the study's LiGO command. "study" is that command unchanged.
VARIANTS: dict[str, dict[str, str]] = {
    "study": {},
    "official_order": {"--order": "official"},
    "paper_order": {"--order": "paper"},
    "op_lr5e-4": {"--operator-lr": "0.0005"},
    "op_lr2e-3": {"--operator-lr": "0.002"},
    "op_warmup0": {"--operator-warmup": "0"},
    "fit15": {"--fit-steps": "15", "--operator-warmup": "1"},
    "fit30": {"--fit-steps": "30", "--operator-warmup": "3"},  # the study's fit before 15 steps proved better
    "fit10_lr3e-3": {"--fit-steps": "10", "--operator-warmup": "1", "--operator-lr": "0.003"},
    "fit8": {"--fit-steps": "8", "--operator-warmup": "1"},
    "fit0": {"--fit-steps": "0"},  # LiGO's initialisation alone: what the fit adds over its random width mixes
    "fit60": {"--fit-steps": "60", "--operator-warmup": "6"},
    "fp_init": {"--width-init": "net2net", "--depth-init": "zero"},
    "depth_zero": {"--depth-init": "zero"},
    "depth_interpolate": {"--depth-init": "interpolate"},
    "noise0.03": {"--init-noise": "0.03"},
    "tying_inverse": {"--tying": "inverse"},
    "fit_mb2": {"--fit-micro-batch": "2"},
    "fit_mb4": {"--fit-micro-batch": "4"},
    "official_fit_mb2": {"--order": "official", "--fit-micro-batch": "2"},
    "paper_fit_mb4": {"--order": "paper", "--fit-micro-batch": "4"},  # the study's LiGO before the official order
}
# name -> (a heuristic run of the study, flags changed in its command): a setting tried on LiGO is tried on
# the heuristic too, so a lead that comes from the setting alone is not read as LiGO's.
HEURISTIC_VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "zero_noise0.03": ("net2net_zero", {"--init-noise": "0.03"}),
    "stack_noise0.03": ("net2net_stack", {"--init-noise": "0.03"}),
}


def with_flags(args: list[str], flags: dict[str, str]) -> list[str]:
    """`args` with each flag's value replaced, or the flag appended when the command lacks it."""
    args = list(args)
    for name, value in flags.items():
        if name in args:
            args[args.index(name) + 1] = value
        else:
            args += [name, value]
    return args


def parse_flags(text: str) -> dict[str, str]:
    """'--eval-every 5 --log-every 5' -> {'--eval-every': '5', '--log-every': '5'}."""
    words = text.split()
    if len(words) % 2 or any(not k.startswith("--") or v.startswith("--") for k, v in zip(words[::2], words[1::2])):
        raise SystemExit(f"--flags {text!r}: expected pairs of a flag and its value, e.g. '--eval-every 5'")
    return dict(zip(words[::2], words[1::2]))


def recorded(run: Path, work: Path) -> list[str]:
    """The command that made a study run, with the study's work dir put back for $WORK."""
    record = run / JOB_RECORD
    if not record.is_file():
        raise SystemExit(
            f"{str(run)!r}: no {JOB_RECORD}; expected a run made by bench/savings.py (rerun the study "
            "with its own command to write the records)"
        )
    return [a.replace("$WORK", str(work)) for a in json.loads(record.read_text())["args"]]


def study_runs(work: Path, family: str) -> tuple[Path, list[Path], Path]:
    """(best scratch run, heuristic runs, LiGO run) of a finished study's family."""
    runs = work / family / "runs"
    if not runs.is_dir():
        raise SystemExit(
            f"{str(runs)!r} does not exist; expected --study to be a bench/savings.py work dir "
            f"(for example bench/runs/cpu) holding the family {family!r}"
        )
    large = str(work / family / "large.json")
    scratch, heuristics, fitted = [], [], []
    for run in sorted(p for p in runs.iterdir() if (p / JOB_RECORD).is_file()):
        args = recorded(run, work)
        if args[0] == "pretrain" and flag(args, "--model") == large:
            scratch.append((final_val(run), run))
        elif args[0] == "grow":
            (fitted if int(flag(args, "--fit-steps") or 0) > 0 else heuristics).append(run)
    if not scratch or len(fitted) != 1:
        raise SystemExit(
            f"{str(runs)!r}: found {len(scratch)} scratch and {len(fitted)} LiGO runs with records; "
            "expected a finished study (at least one scratch run and exactly one fitted run)"
        )
    return min(scratch)[1], heuristics, fitted[0]


def fit_flops(run: Path) -> float | None:
    """The fit's FLOPs (None for a heuristic, which has no fit)."""
    metrics = run / "fit" / "metrics.jsonl"
    return read_metrics(metrics)[-1]["flops"] if metrics.is_file() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", help="a finished bench/savings.py work dir, e.g. bench/runs/cpu")
    parser.add_argument("--family", default="gpt2")
    parser.add_argument("--variants", default="study", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--seed", type=int, help="default: the study's seed")
    parser.add_argument(
        "--heuristics",
        help="comma-separated heuristic runs to compare (and, at another seed, "
        "to run again); default: all of the study's",
    )
    parser.add_argument(
        "--flags",
        default="",
        help="flags changed in every job, the baselines included, which "
        "then run again even at the study's seed, e.g. '--eval-every 5 --log-every 5' to read the "
        "crossings more finely (default out: STUDY/variants_eval-every5_log-every5)",
    )
    parser.add_argument("--out", help="default: STUDY/variants")
    parser.add_argument("--list", action="store_true", help="print the variants and their flags, and exit")
    args = parser.parse_args()
    if args.list:
        for name, flags in VARIANTS.items():
            print(f"{name:18s} {' '.join(f'{k} {v}' for k, v in flags.items()) or '(the study command)'}")
        for name, (base, flags) in HEURISTIC_VARIANTS.items():
            print(f"{name:18s} {base} with {' '.join(f'{k} {v}' for k, v in flags.items())}")
        return 0
    if not args.study:
        parser.error("--study is required (a bench/savings.py work dir)")
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS and v not in HEURISTIC_VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; expected some of {[*VARIANTS, *HEURISTIC_VARIANTS]}")
    work = Path(args.study).resolve()
    scratch, heuristics, study_ligo = study_runs(work, args.family)
    by_name = {h.name: h for h in heuristics}  # every heuristic of the study, for HEURISTIC_VARIANTS' bases
    for name in args.variants.split(","):
        if name in HEURISTIC_VARIANTS and HEURISTIC_VARIANTS[name][0] not in by_name:
            raise SystemExit(
                f"--variants {name}: the study has no {HEURISTIC_VARIANTS[name][0]!r} run; expected "
                f"one of {sorted(by_name)}"
            )
    if args.heuristics:
        names = args.heuristics.split(",")
        missing = sorted(set(names) - {h.name for h in heuristics})
        if missing:
            raise SystemExit(
                f"--heuristics: {missing} not in the study; expected some of {[h.name for h in heuristics]}"
            )
        heuristics = [h for h in heuristics if h.name in names]
    study_seed = int(flag(recorded(study_ligo, work), "--seed"))
    seed = args.seed if args.seed is not None else study_seed
    everywhere = parse_flags(args.flags)
    default_out = work / ("variants" + "".join(f"_{k.lstrip('-')}{v}" for k, v in everywhere.items()))
    out = (Path(args.out).resolve() if args.out else default_out) / args.family / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    log = out / "jobs.log"
    reseed = {**everywhere, "--seed": str(seed)}

    def run(base: Path, name: str, flags: dict[str, str]) -> Path:
        job = with_flags(recorded(base, work), {**flags, **reseed, "--out": str(out / name)})
        done = out / name / ("hf" if job[0] == "pretrain" else "train/hf") / "config.json"
        ligo(*job, log=log, done=done)
        return out / name

    if seed != study_seed or everywhere:
        scratch = run(scratch, scratch.name, {})
        heuristics = [run(h, h.name, {}) for h in heuristics]

    def variant(name: str) -> Path:
        if name == "study" and seed == study_seed and not everywhere:
            return study_ligo
        if name in VARIANTS:
            return run(study_ligo, name, VARIANTS[name])
        base, flags = HEURISTIC_VARIANTS[name]
        return run(by_name[base], name, flags)

    runs = [variant(name) for name in args.variants.split(",")]
    report = out / "report"
    ligo("report", str(scratch), *map(str, heuristics), *map(str, runs), "--out", str(report), log=log)
    print((report / "report.md").read_text())
    print(
        f"| {args.family}, seed {seed} | fit cost (of the scratch run) | final val | saving (FLOPs) |\n"
        "|---|---|---|---|"
    )
    with open(report / "report.csv") as f:
        rows = list(csv.DictReader(f))
    scratch_flops = float(next(row["flops"] for row in rows if row["name"] == scratch.name))
    for row in rows:
        run_dir = next((r for r in [*heuristics, *runs] if r.name == row["name"]), None)
        if run_dir is None:
            continue
        fit = fit_flops(run_dir)
        share = None if fit is None else fit / scratch_flops
        saving = f"{100 * float(row['saving']):.1f} %" if row["saving"] else "not reached"
        label = "study" if run_dir == study_ligo else row["name"]
        print(
            f"| {label} | {f'{100 * share:.1f} %' if share is not None else '-'} | {float(row['final_val']):.4f} "
            f"| {saving} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
