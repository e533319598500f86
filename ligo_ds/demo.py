"""`make demo`: the main job on the default offline corpus, end to end, at laptop-CPU size.

Each stage is a real `ligo-ds` command run as a subprocess, exactly as a user would type it, and each
is skipped when its output already exists, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Demo model shapes (HF config.json contents). The vocabulary matches the prepared corpus.
SMALL = dict(model_type="gpt2", n_layer=2, n_embd=128, n_head=4, n_positions=256, vocab_size=8192)
LARGE = dict(model_type="gpt2", n_layer=4, n_embd=256, n_head=8, n_positions=256, vocab_size=8192)


def run(*args: str) -> None:
    print(f"\n$ ligo-ds {' '.join(args)}", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ligo_ds", *args], check=True)
    print(f"  ({time.perf_counter() - start:.1f} s)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo", help="working directory (default ./demo)")
    parser.add_argument("--small-steps", type=int, default=300, help="pretraining steps of the small model")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = out / "data"
    if not (data / "meta.json").is_file():
        run("prepare", "--source", "stdlib", "--out", str(data), "--force")
    for name, shape in (("small", SMALL), ("large", LARGE)):
        config = out / f"{name}.json"
        config.write_text(json.dumps(shape, indent=2) + "\n")
        run("inspect", "--model", str(config), "--data", str(data), "--seq-len", "128")
    small = out / "runs" / "small"
    run("pretrain", "--model", str(out / "small.json"), "--data", str(data), "--out", str(small),
        *PRETRAIN, "--max-steps", str(args.small_steps))
    print_val_curve(small)
    return 0


# Shared by every demo run: same batch, sequence length and schedule shape.
PRETRAIN = ["--seq-len", "128", "--micro-batch", "16", "--lr", "3e-3", "--warmup-steps", "30",
            "--eval-every", "50", "--log-every", "10", "--save-every", "100", "--ds-config", "zero2"]


def print_val_curve(run_dir: Path) -> None:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    print(f"\nvalidation loss of {run_dir}:")
    print(f"{'step':>6} {'tokens':>10} {'GFLOPs':>10} {'val loss':>9}")
    for r in rows:
        if "val_loss" in r:
            print(f"{r['step']:>6} {r['tokens']:>10,} {r['flops'] / 1e9:>10,.1f} {r['val_loss']:>9.3f}")


if __name__ == "__main__":
    sys.exit(main())
