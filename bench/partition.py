"""How ZeRO-3 divides the LiGO fit: per-rank parameter and optimizer elements on 1, 2 and 4 ranks, and
the fit step against the large model's own training step.

    python bench/partition.py                 # a tiny and a mid-size CPU shape (a few minutes on 2 cores)
    python bench/partition.py --ranks 1,2,4,8 # more ranks where the machine has them

Each cell is a real `ligo-ds fit` (ZeRO-3, torchrun, oversubscribed on small machines); the figures come
from RUN_DIR/partition.json and metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from jobs import launcher  # noqa: E402  (bench/ is on sys.path when run as a script)

SHAPES = {
    "tiny 1L/32 -> 2L/64": (
        dict(model_type="gpt2", n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=8192),
        dict(model_type="gpt2", n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=8192),
    ),
    "mid 2L/128 -> 4L/256": (
        dict(model_type="gpt2", n_layer=2, n_embd=128, n_head=4, n_positions=256, vocab_size=8192),
        dict(model_type="gpt2", n_layer=4, n_embd=256, n_head=8, n_positions=256, vocab_size=8192),
    ),
}


def job(nproc: int, args: list[str]) -> None:
    cmd = [*launcher(nproc), "-m", "ligo_ds", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{result.stdout[-3000:]}{result.stderr[-3000:]}")


def step_seconds(run: Path) -> float:
    """Median seconds per optimizer step over the logged intervals after the first."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if "tokens_per_s" in r][1:]
    return statistics.median((r["tokens"] / r["step"]) / r["tokens_per_s"] for r in timed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="1,2,4")
    parser.add_argument("--data", default=str(ROOT / "bench" / "runs" / "stdlib-data"))
    args = parser.parse_args()
    from ligo_ds import load_model, save_model

    data = Path(args.data)
    if not (data / "meta.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "ligo_ds", "prepare", "--out", str(data), "--force"],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
    partition, steps = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, (small, large) in SHAPES.items():
            key = name.split()[0]
            (work / f"{key}_small.json").write_text(json.dumps(small))
            (work / f"{key}_large.json").write_text(json.dumps(large))
            save_model(load_model(work / f"{key}_small.json"), work / f"{key}_source")
            common = [
                "--data",
                str(data),
                "--seq-len",
                "64",
                "--micro-batch",
                "4",
                "--log-every",
                "2",
                "--eval-every",
                "100",
                "--eval-samples",
                "2",
                "--save-every",
                "100",
            ]
            for n in map(int, args.ranks.split(",")):
                out = work / f"{key}_fit_{n}"
                job(
                    n,
                    [
                        "fit",
                        "--source",
                        str(work / f"{key}_source"),
                        "--target",
                        str(work / f"{key}_large.json"),
                        "--out",
                        str(out),
                        "--steps",
                        "8",
                        "--operator-warmup",
                        "2",
                        "--ds-config",
                        "zero3",
                        *common,
                    ],
                )
                for r in json.loads((out / "partition.json").read_text()):
                    partition.append({"shape": name, "ranks": n, **r})
                if n == 1:
                    train = work / f"{key}_train"
                    job(
                        1,
                        [
                            "pretrain",
                            "--model",
                            str(work / f"{key}_large.json"),
                            "--out",
                            str(train),
                            "--max-steps",
                            "8",
                            "--warmup-steps",
                            "2",
                            "--ds-config",
                            "zero3",
                            *common,
                        ],
                    )
                    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
                    mem = max(r.get("peak_mem_gb", 0) for r in rows)
                    t_fit, t_train = step_seconds(out), step_seconds(train)
                    steps.append({"shape": name, "fit_step_s": t_fit, "train_step_s": t_train, "fit_peak_gb": mem})
                print(f"  {name}: {n} rank(s) done", file=sys.stderr)
    print("| shape | ranks | rank | params held / full | trainable held | optimizer elements held |")
    print("|---|---|---|---|---|---|")
    for r in partition:
        print(
            f"| {r['shape']} | {r['ranks']} | {r['rank']} | {r['params_local']:,} / {r['params_full']:,} "
            f"({r['params_local'] / r['params_full']:.2f}) | {r['trainable_local']:,} | {r['optimizer_local']:,} |"
        )
    print("\n| shape | fit step (s) | large model's training step (s) | ratio | fit peak RSS per rank (GiB) |")
    print("|---|---|---|---|---|")
    for r in steps:
        print(
            f"| {r['shape']} | {r['fit_step_s']:.3f} | {r['train_step_s']:.3f} | "
            f"{r['fit_step_s'] / r['train_step_s']:.2f}x | {r['fit_peak_gb']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
