"""`ligo-ds plan`'s predictions against measured peaks, in one table.

    python bench/plan.py                 # the CPU cases below: pretraining under ZeRO 1-3 at 1 and 2 ranks, a fit
    python bench/plan.py --cases zero3-2 # some of them

Each case is a real job (`ligo-ds pretrain` or `ligo-ds fit`, under torchrun for 2 ranks) on random weights,
two steps long (the optimizer's state exists from the first); the measured figure is the largest peak
resident set (VmHWM) of its rank processes over the whole run (start-up, steps, the last checkpoint, the HF
export), the predicted one `ligo-ds plan`'s total for the same flags with `--device cpu`. glibc's mmap
threshold is fixed (MALLOC_MMAP_THRESHOLD_=131072) so that the resident set follows live memory
(bench/fit_memory.py says why).
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
sys.path.insert(0, str(ROOT / "bench"))
from jobs import free_port  # noqa: E402

# GPT-2's layout and vocabulary, small enough for a CPU step in a second or two; its memory is mostly the
# vocabulary's (the embedding and the head's logits), which is what large-vocabulary models are like too.
GPT2 = dict(model_type="gpt2", n_layer=4, n_embd=512, n_head=8, n_positions=1024, vocab_size=50304)
# Llama's layout (RMSNorm, SwiGLU, RoPE, GQA, an untied head)
LLAMA = dict(
    model_type="llama",
    num_hidden_layers=4,
    hidden_size=512,
    num_attention_heads=8,
    num_key_value_heads=4,
    intermediate_size=1408,
    max_position_embeddings=1024,
    vocab_size=32000,
    tie_word_embeddings=False,
)
SOURCE = dict(model_type="gpt2", n_layer=3, n_embd=256, n_head=4, n_positions=1024, vocab_size=50304)
COMMON = ["--micro-batch", "2", "--seq-len", "128"]

# name -> (command, model, ranks, flags shared by the job and the plan)
CASES = {
    "zero1-1": ("pretrain", GPT2, 1, ["--ds-config", "zero1"]),
    "zero1-2": ("pretrain", GPT2, 2, ["--ds-config", "zero1"]),
    "zero2-2": ("pretrain", GPT2, 2, ["--ds-config", "zero2"]),
    "zero3-1": ("pretrain", GPT2, 1, ["--ds-config", "zero3"]),
    "zero3-2": ("pretrain", GPT2, 2, ["--ds-config", "zero3"]),
    "llama-zero3-2-full": ("pretrain", LLAMA, 2, ["--ds-config", "zero3", "--activation-checkpointing", "full"]),
    "llama-zero2-1-mb8": ("pretrain", LLAMA, 1, ["--ds-config", "zero2", "--micro-batch", "8", "--seq-len", "256"]),
    "fit-zero3-1": ("fit", GPT2, 1, ["--ds-config", "zero3"]),
    "fit-zero3-2": ("fit", GPT2, 2, ["--ds-config", "zero3"]),
}


def environment() -> dict:
    return {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "GLOO_SOCKET_IFNAME": "lo",
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(ROOT / ".torch_extensions")),
        "MALLOC_MMAP_THRESHOLD_": "131072",
        "PYTHONPATH": str(ROOT),
    }


def setup(work: Path) -> tuple[Path, Path]:
    """A token corpus and the source model of the fit cases (random weights)."""
    import torch

    from ligo_ds import ModelConfig, save_model
    from ligo_ds.data.prepare import PrepareOptions, prepare
    from ligo_ds.model.decoder import Decoder

    data, source = work / "data", work / "source"
    if not (data / "meta.json").is_file():
        corpus = work / "corpus"
        corpus.mkdir(parents=True, exist_ok=True)
        for i in range(40):
            (corpus / f"{i:03d}.txt").write_text(f"def f_{i}(a, b):\n    return a * {i} - b ** {i % 5}\n" * 40)
        prepare(PrepareOptions(source=str(corpus), out=str(data), vocab_size=320, val_fraction=0.1, num_proc=1))
    if not (source / "config.json").is_file():
        torch.manual_seed(0)
        save_model(Decoder(ModelConfig.from_hf(SOURCE)), source)
    return data, source


def job_argv(name: str, work: Path, data: Path, source: Path) -> tuple[list[str], Path]:
    command, model, ranks, flags = CASES[name]
    cfg = work / f"{name}.json"
    cfg.write_text(json.dumps(model))
    out = work / "runs" / name
    argv = ["-m", "ligo_ds", command, "--data", str(data), "--out", str(out), *COMMON, *flags]
    argv += ["--eval-samples", "2", "--eval-every", "100", "--save-every", "100", "--log-every", "1"]
    argv += ["--verify-data", "size"]
    if command == "pretrain":
        argv += ["--model", str(cfg), "--max-steps", "2", "--warmup-steps", "1"]
    else:
        argv += ["--source", str(source), "--target", str(cfg), "--steps", "1", "--operator-warmup", "1"]
        argv += ["--allow-tokenizer-mismatch"]
    if ranks == 1:
        return [sys.executable, *argv], out
    launcher = [str(Path(sys.executable).parent / "torchrun"), f"--nproc_per_node={ranks}"]
    return [*launcher, f"--master_port={free_port()}", *argv], out


def run_watched(argv: list[str], log: Path) -> float:
    """Run a job; the largest peak resident set (VmHWM) of its rank processes, whole run (GiB): start-up,
    steps, the final checkpoint and the HF export included."""
    from fit_memory import ranks_of, status_kb

    peak = 0
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, env=environment(), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            for pid in ranks_of(proc.pid):
                peak = max(peak, status_kb(pid, "VmHWM") or 0)
            time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"exit {proc.returncode}: {' '.join(argv)}\n{log.read_text()[-3000:]}")
    return peak * 1024 / 2**30


def predicted(name: str, work: Path, source: Path) -> tuple[float, dict]:
    """`ligo-ds plan --device cpu` for a case: (the phase's total in GiB, its terms in GiB)."""
    from ligo_ds.analysis.plan import GiB, Setup, fit_phase, load_zero, pretrain_phase
    from ligo_ds.model.config import ModelConfig

    command, model, ranks, flags = CASES[name]

    given = dict(zip((COMMON + flags)[::2], (COMMON + flags)[1::2]))  # flag -> value, the last one given

    def flag(key: str, default: str) -> str:
        return given.get(key, default)

    setup = Setup(
        world_size=ranks,
        zero=load_zero(flag("--ds-config", "zero2"), "--ds-config"),
        dtype="fp32",
        device="cpu",
        micro_batch=int(flag("--micro-batch", "8")),
        fit_micro_batch=int(flag("--micro-batch", "8")),
        seq_len=int(flag("--seq-len", "256")),
        checkpointing=flag("--activation-checkpointing", "none"),
        fit_checkpointing=flag("--activation-checkpointing", "full"),
        loss_chunk=1024,
        mfu=0.4,
        peak_flops=None,
    )
    tgt = ModelConfig.from_hf(model)
    phase = (
        pretrain_phase(tgt, setup)
        if command == "pretrain"
        else fit_phase(ModelConfig.from_file(source), tgt, setup, "paper")
    )
    return phase.device_total / GiB, {k: v / GiB for k, v in phase.device.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--work", help="directory for the data and runs (default: a temporary one)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    names = args.cases.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; expected some of {', '.join(CASES)}")
    work = Path(args.work or tempfile.mkdtemp(prefix="plan_bench_"))
    data, source = setup(work)
    rows = []
    for name in names:
        argv, out = job_argv(name, work, data, source)
        subprocess.run(["rm", "-rf", str(out)], check=True)
        start = time.time()
        peak = run_watched(argv, work / f"{name}.log")
        plan, terms = predicted(name, work, source)
        rows.append({"case": name, "predicted": plan, "measured": peak, "terms": terms, "s": time.time() - start})
        print(f"{name}: predicted {plan:.3f} GiB, measured {peak:.3f} GiB ({plan / peak - 1:+.0%})", flush=True)
    print("\n| case | command | ranks | predicted (GiB) | measured (GiB) | error | largest terms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        command, _, ranks, _ = CASES[r["case"]]
        top = sorted(r["terms"].items(), key=lambda kv: -kv[1])[:3]
        terms = ", ".join(f"{k} {v:.2f}" for k, v in top)
        print(
            f"| {r['case']} | {command} | {ranks} | {r['predicted']:.2f} | {r['measured']:.2f} | "
            f"{r['predicted'] / r['measured'] - 1:+.0%} | {terms} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
