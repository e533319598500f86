"""`make demo`: the main job on the default offline corpus, end to end, at laptop-CPU size.

    prepare the stdlib corpus -> pretrain a small GPT-2 -> grow it with LiGO and continue pretraining
    -> train the large model from scratch on the same budget -> savings table and loss-vs-FLOPs plot

Each stage is a real `ligo-ds` command run as a subprocess, exactly as a user would type it. Rerunning
resumes: finished stages are skipped by the commands themselves (their run directories resume).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..options import Command, add_arguments, at_least, from_args, option, to_args

# Demo model shapes (HF config.json contents); head_dim stays 32 so the operator can grow heads.
SMALL = dict(model_type="gpt2", n_layer=2, n_embd=128, n_head=4, n_positions=256, vocab_size=8192)
LARGE = dict(model_type="gpt2", n_layer=4, n_embd=256, n_head=8, n_positions=256, vocab_size=8192)

# Shared by every run: the same batch, sequence length, schedule shape and evaluation set.
LR = "3e-3"
TRAIN = to_args(
    seq_len=128,
    micro_batch=16,
    lr=LR,
    warmup_steps=25,
    eval_every=25,
    eval_samples=64,
    log_every=25,
    save_every=100,
    ds_config="zero2",
)


def run(*args: str) -> None:
    print(f"\n$ ligo-ds {' '.join(args)}", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ligo_ds", *args], check=True)
    print(f"  ({time.perf_counter() - start:.1f} s)", flush=True)


def print_val_curve(metrics: Path, title: str) -> None:
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    print(f"\nvalidation loss, {title}:")
    print(f"{'step':>6} {'tokens':>10} {'GFLOPs':>10} {'val loss':>9}")
    for r in rows:
        if "val_loss" in r:
            print(f"{r['step']:>6} {r['tokens']:>10,} {r['flops'] / 1e9:>10,.1f} {r['val_loss']:>9.3f}")


@dataclass(frozen=True, kw_only=True)
class DemoOptions(Command):
    out: str = option("demo", "working directory", metavar="DIR", identity=False)
    # The small model is meant to exist already and to be worse than what the large one reaches: it
    # trains for fewer steps than the large runs, which share one budget.
    small_steps: int = option(150, "the small model's pretraining steps", check=at_least(1))
    large_steps: int = option(350, "steps of the scratch run and of the grown run", check=at_least(1))
    fit_steps: int = option(20, "operator fit steps", check=at_least(0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, DemoOptions, config_file=False)
    try:
        args = from_args(DemoOptions, parser.parse_args(argv))
    except ConfigError as e:
        parser.error(str(e))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = out / "data"
    if not (data / "meta.json").is_file():
        run("prepare", *to_args(source="stdlib", out=data, force=True))
    for name, shape in (("small", SMALL), ("large", LARGE)):
        (out / f"{name}.json").write_text(json.dumps(shape, indent=2) + "\n")
    run("inspect", *to_args(model=out / "large.json", data=data, seq_len=128))

    runs = out / "runs"
    # The small model holds its peak lr (no decay), as a checkpoint meant for growth is taken before
    # annealing: an annealed model loses ground when the grown run warms back up to the peak, and so does
    # the small model itself, continued with no growth at all.
    small = to_args(model=out / "small.json", data=data, out=runs / "small")
    run("pretrain", *small, *TRAIN, *to_args(min_lr=LR, max_steps=args.small_steps))
    print_val_curve(runs / "small" / "metrics.jsonl", "small model")
    scratch = to_args(model=out / "large.json", data=data, out=runs / "scratch")
    run("pretrain", *scratch, *TRAIN, *to_args(max_steps=args.large_steps))
    # LiGO from a function-preserving start (Net2Net width, zero-initialised new layers): the grown model
    # begins at the small model's loss and the fit only has to improve on it.
    ligo = to_args(
        source=runs / "small" / "hf",
        target=out / "large.json",
        data=data,
        out=runs / "ligo",
        fit_steps=args.fit_steps,
        width_init="net2net",
        depth_init="zero",
        operator_lr="1e-3",
        operator_warmup=5,
    )
    run("grow", *ligo, *TRAIN, *to_args(max_steps=args.large_steps))
    print_val_curve(runs / "ligo" / "train" / "metrics.jsonl", "grown model (FLOPs include the fit)")
    run("report", *to_args(runs / "scratch", runs / "ligo", out=out / "report"))
    print(f"plot: {out / 'report' / 'loss_vs_flops.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
