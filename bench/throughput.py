"""Pretraining throughput: tokens/s and MFU of ligo_ds under each ZeRO stage and number of ranks.

    python bench/throughput.py --preset cpu            # tiny model, 1 and 2 CPU ranks (minutes)
    python bench/throughput.py --preset cpu --ranks 2 --stages zero3

Each cell is a real `ligo-ds pretrain` job under torchrun; the figure is the median tokens/s of its
metrics rows after the first (which includes warm-up). Prints a table; --json writes the raw rows.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {
    # model (HF config), seq_len, micro-batch, steps
    "cpu": (dict(model_type="gpt2", n_layer=2, n_embd=128, n_head=4, n_positions=256, vocab_size=8192), 128, 8, 40),
    "gpu": (dict(model_type="gpt2", n_layer=24, n_embd=1024, n_head=16, n_positions=1024, vocab_size=50304), 1024, 16, 60),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_data(path: Path) -> Path:
    if not (path / "meta.json").is_file():
        subprocess.run([sys.executable, "-m", "ligo_ds", "prepare", "--out", str(path), "--force"], check=True)
    return path


def measure(model: Path, data: Path, stage: str, ranks: int, seq_len: int, micro: int, steps: int, work: Path) -> dict:
    out = work / f"{stage}_{ranks}"
    cmd = [str(Path(sys.executable).parent / "torchrun"), f"--nproc_per_node={ranks}", f"--master_port={free_port()}",
           "-m", "ligo_ds", "pretrain", "--model", str(model), "--data", str(data), "--out", str(out),
           "--ds-config", stage, "--max-steps", str(steps), "--micro-batch", str(micro), "--seq-len", str(seq_len),
           "--log-every", "5", "--eval-every", str(steps), "--eval-samples", "8", "--save-every", str(10 * steps)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    wall = time.perf_counter() - start
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if "tokens_per_s" in r][1:]
    return {"stage": stage, "ranks": ranks, "tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
            "mfu": timed[-1]["mfu"], "peak_mem_gb": max(r["peak_mem_gb"] for r in timed), "job_wall_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--stages", default="zero1,zero2,zero3")
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--data", default=str(ROOT / "demo" / "data"))
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    shape, seq_len, micro, steps = PRESETS[args.preset]
    data = ensure_data(Path(args.data))
    shape = {**shape, "vocab_size": max(shape["vocab_size"], json.loads((data / "meta.json").read_text())["vocab_size"])}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = work / "model.json"
        model.write_text(json.dumps(shape))
        for stage in args.stages.split(","):
            for ranks in map(int, args.ranks.split(",")):
                rows.append(measure(model, data, stage, ranks, seq_len, micro, steps, work))
                r = rows[-1]
                print(f"  {stage} x{ranks}: {r['tokens_per_s']:,.0f} tokens/s", file=sys.stderr)
    print(f"\nligo_ds pretraining throughput, preset {args.preset}: {shape['n_layer']}L/{shape['n_embd']}, "
          f"seq {seq_len}, micro-batch {micro} per rank, {steps} steps")
    print(f"| stage | ranks | tokens/s (all ranks) | MFU | peak mem/rank (GiB) | job wall (s) |")
    print(f"|---|---|---|---|---|---|")
    for r in rows:
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
        print(f"| {r['stage']} | {r['ranks']} | {r['tokens_per_s']:,.0f} | {mfu} | {r['peak_mem_gb']:.2f} | "
              f"{r['job_wall_s']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
