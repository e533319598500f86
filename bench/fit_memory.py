"""Per-rank peak host memory of a LiGO fit (`ligo-ds fit` under ZeRO-3) at 1, 2 and 4 ranks.

    python bench/fit_memory.py                      # GPT-2 124M -> 350M shapes, random weights, CPU
    python bench/fit_memory.py --preset tiny        # seconds; what the test suite runs
    python bench/fit_memory.py --code /other/ligo_ds_checkout   # another version's code (before/after)

Each rank's peak resident set (VmHWM from /proc) is read while the job runs; the ranks' processes are the
Python processes under torchrun. `base` is a rank's resident set once torch, deepspeed and transformers'
model class for the source are imported and before any weight is read (measured separately): the memory
no sharding can remove. The table shows the
largest and smallest rank's peak, the same above `base`, and the ratio of the largest to one rank's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from jobs import free_port  # noqa: E402  (bench/ is on sys.path when run as a script)

GPT2_124M = dict(model_type="gpt2", n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50304)
GPT2_350M = dict(model_type="gpt2", n_layer=24, n_embd=1024, n_head=16, n_positions=1024, vocab_size=50304)
TINY_SRC = dict(model_type="gpt2", n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=512)
TINY_TGT = dict(model_type="gpt2", n_layer=4, n_embd=128, n_head=8, n_positions=64, vocab_size=512)
# GPT-2's vocabulary and layout at a quarter of the depth and half the width: runs at 4 ranks on 24 GB.
SMALL_SRC = dict(model_type="gpt2", n_layer=6, n_embd=384, n_head=6, n_positions=1024, vocab_size=50304)
SMALL_TGT = dict(model_type="gpt2", n_layer=12, n_embd=512, n_head=8, n_positions=1024, vocab_size=50304)
PRESETS = {"gpt2": (GPT2_124M, GPT2_350M), "small": (SMALL_SRC, SMALL_TGT), "tiny": (TINY_SRC, TINY_TGT)}
GB = 2**30


def status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def ranks_of(pid: int) -> list[int]:
    """The Python worker processes under a launcher: those running `-m ligo_ds` (torchrun's agent is not one)."""
    import psutil

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in procs:
        try:
            if "ligo_ds" in p.cmdline() and "torchrun" not in " ".join(p.cmdline()[:2]):
                out.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def run_and_watch(argv: list[str], env: dict, cwd: Path, log: Path) -> dict[int, int]:
    """Run a job; return each rank process's peak resident set in bytes (read until it exits)."""
    peaks: dict[int, int] = {}
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        while proc.poll() is None:
            for pid in ranks_of(proc.pid):
                hwm = status_kb(pid, "VmHWM")
                if hwm is not None:
                    peaks[pid] = max(peaks.get(pid, 0), hwm * 1024)
            time.sleep(0.1)
    if proc.returncode != 0:
        raise SystemExit(f"exit {proc.returncode}: {' '.join(argv)}\n{log.read_text()[-4000:]}")
    return peaks


def base_rss(env: dict, cwd: Path, source: Path) -> int:
    # What a rank imports before it reads any weight: torch, deepspeed, ligo_ds, and transformers with the
    # source's model class (hf_load.SourceWeights asks the class for its checkpoint layout; ~0.15 GB).
    code = (
        "import sys, resource, torch, deepspeed, ligo_ds.growth.fit; from ligo_ds.model.hf_load import SourceWeights; "
        "SourceWeights(sys.argv[1]); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    argv = [sys.executable, "-c", code, str(source)]
    out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) * 1024


def setup(work: Path, preset: str) -> tuple[Path, Path, Path]:
    from ligo_ds import ModelConfig, save_model
    from ligo_ds.data.prepare import PrepareOptions, prepare
    from ligo_ds.model.decoder import Decoder

    src_cfg, tgt_cfg = PRESETS[preset]
    source = work / "source"
    if not (source / "config.json").is_file():
        import torch

        torch.manual_seed(0)
        save_model(Decoder(ModelConfig.from_hf(src_cfg)), source)
    target = work / "target.json"
    target.write_text(json.dumps(tgt_cfg))
    data = work / "data"
    if not (data / "meta.json").is_file():
        corpus = work / "corpus"
        corpus.mkdir(exist_ok=True)
        for i in range(60):
            (corpus / f"{i:03d}.txt").write_text(f"def f_{i}(a, b):\n    return a * {i} - b ** {i % 5}\n" * 8)
        prepare(PrepareOptions(source=str(corpus), out=str(data), vocab_size=320, val_fraction=0.1))
    return source, target, data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="gpt2")
    parser.add_argument("--ranks", default="1,2,4", help="world sizes to run")
    parser.add_argument("--code", default=str(ROOT), help="the ligo_ds checkout whose code runs the fit")
    parser.add_argument("--work", help="directory for the models, data and runs (default: a temporary one)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="fit_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    source, target, data = setup(work, args.preset)
    code = Path(args.code).resolve()
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(code),
        "TORCH_EXTENSIONS_DIR": str(ROOT / ".torch_extensions"),
        # glibc raises its mmap threshold after each large free, and then keeps freed tensors' memory in
        # its heap: the resident set of a CPU fit grew to 17 GB for 4 GB of live tensors (124M -> 350M).
        # A fixed threshold returns each large tensor's pages when it is freed, so the peak measured is
        # the live memory's (the runs are slower: every large tensor is a fresh mapping).
        "MALLOC_MMAP_THRESHOLD_": "131072",
    }
    base = base_rss(env, code, source)
    rows = []
    for n in [int(x) for x in args.ranks.split(",")]:
        out = work / f"run{n}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        fit = ["-m", "ligo_ds", "fit", "--source", str(source), "--target", str(target), "--data", str(data)]
        # One step (a peak is reached in the first), and the official order: the paper's widens every source
        # layer for every target layer, about 10x the work, which on a CPU takes most of an hour per step.
        fit += ["--out", str(out), "--steps", "1", "--operator-warmup", "1", "--seq-len", "32", "--micro-batch", "1"]
        fit += ["--eval-samples", "1", "--order", "official"]
        fit += ["--ds-config", "zero3", "--verify-data", "size", "--allow-tokenizer-mismatch"]
        if n == 1:
            argv = [sys.executable, *fit]
        else:
            argv = [
                str(Path(sys.executable).parent / "torchrun"),
                f"--nproc_per_node={n}",
                f"--master_port={free_port()}",
            ]
            argv += fit
        started = time.time()
        peaks = sorted(run_and_watch(argv, env, code, work / f"run{n}.log").values())
        rows.append({"ranks": n, "max": peaks[-1], "min": peaks[0], "seconds": time.time() - started})
        print(f"{n} ranks: peaks {[round(p / GB, 3) for p in peaks]} GB", flush=True)
    one = rows[0]["max"]
    print(f"\ncode: {code}   preset: {args.preset}   base (imports): {base / GB:.2f} GB")
    print(
        "| ranks | peak, largest rank (GB) | smallest (GB) | above base, largest (GB) | largest / 1 rank | "
        "above base / 1 rank's | wall s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['ranks']} | {r['max'] / GB:.2f} | {r['min'] / GB:.2f} | {(r['max'] - base) / GB:.2f} | "
            f"{r['max'] / one:.2f} | {(r['max'] - base) / (one - base):.2f} | {r['seconds']:.0f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"base": base, "rows": rows, "code": str(code)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
