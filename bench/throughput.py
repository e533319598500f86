"""Pretraining throughput: ligo_ds against an HF model handed to DeepSpeed, and a LiGO fit step against
a training step of the large model.

    python bench/throughput.py --preset gpu     # GPT-2 124M/350M (and Llama 1B, GQA) on one H100/H200
    python bench/throughput.py --preset cpu     # a tiny GPT-2 on 1 and 2 CPU ranks
    python bench/throughput.py --preset tiny    # seconds; what the test suite runs

First it measures the device's matrix-product peak (bf16 8192^3 on a GPU, fp32 on the CPU) and reports
MFU against that. Every cell is a real job under torchrun: `ligo-ds pretrain` for ligo_ds, and
bench/hf_deepspeed.py (transformers' model, same DeepSpeed config, data, batch and loss) for the
baseline; the figure is the median tokens/s after warm-up. The last table compares `ligo-ds fit`'s step
with `ligo-ds pretrain`'s step of the target model at the same batch. --json writes all rows.
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
sys.path.insert(0, str(ROOT))
from ligo_ds.options import to_args  # noqa: E402

GPT2_124M = dict(model_type="gpt2", n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50304)
GPT2_350M = dict(model_type="gpt2", n_layer=24, n_embd=1024, n_head=16, n_positions=1024, vocab_size=50304)
LLAMA_1B = dict(
    model_type="llama",
    num_hidden_layers=16,
    hidden_size=2048,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=8192,
    max_position_embeddings=2048,
    vocab_size=50304,
    tie_word_embeddings=True,
)
CPU_SMALL = dict(model_type="gpt2", n_layer=2, n_embd=128, n_head=4, n_positions=256, vocab_size=8192)
CPU_LARGE = dict(model_type="gpt2", n_layer=4, n_embd=256, n_head=8, n_positions=256, vocab_size=8192)
TINY_SMALL = dict(model_type="gpt2", n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=8192)
TINY_LARGE = dict(model_type="gpt2", n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=8192)

# models: name -> (HF config, micro-batch); fit: (source config, target config, micro-batch)
PRESETS = {
    "gpu": dict(
        models={"gpt2-124M": (GPT2_124M, 32), "gpt2-350M": (GPT2_350M, 16), "llama-1B": (LLAMA_1B, 8)},
        seq_len=1024,
        steps=40,
        stages=("zero1", "zero2", "zero3"),
        ranks=(1,),
        fit=(GPT2_124M, GPT2_350M, 16),
        fit_steps=20,
    ),
    "cpu": dict(
        models={"gpt2-4L/256": (CPU_LARGE, 8)},
        seq_len=128,
        steps=30,
        stages=("zero1", "zero2", "zero3"),
        ranks=(1, 2),
        fit=(CPU_SMALL, CPU_LARGE, 8),
        fit_steps=10,
    ),
    "tiny": dict(
        models={"gpt2-2L/64": (TINY_LARGE, 2)},
        seq_len=32,
        steps=6,
        stages=("zero3",),  # one stage: the tiny preset checks the script, not the numbers
        ranks=(1,),
        fit=(TINY_SMALL, TINY_LARGE, 2),
        fit_steps=4,
    ),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_peak() -> tuple[float, str]:
    """Matrix-product FLOP/s this device reaches: bf16 8192^3 on a GPU, fp32 1024^3 on the CPU."""
    import torch

    on_gpu = torch.cuda.is_available()
    n, dtype, device = (8192, torch.bfloat16, "cuda") if on_gpu else (1024, torch.float32, "cpu")
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    if on_gpu:
        torch.cuda.synchronize()
    reps = 20 if on_gpu else 5
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if on_gpu:
        torch.cuda.synchronize()
    flops = 2 * n**3 * reps / (time.perf_counter() - start)
    return flops, (torch.cuda.get_device_name() if on_gpu else "cpu") + f" ({dtype}, {n}^3)"


def torchrun(nproc: int, args: list[str], log: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={free_port()}",
        *args,
    ]
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        result = subprocess.run(
            cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)} (see {log})")


def median_tokens_per_s(run: Path) -> tuple[float, float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if "tokens_per_s" in r][1:] or [r for r in rows if "tokens_per_s" in r]
    return statistics.median(r["tokens_per_s"] for r in timed), max(r["peak_mem_gb"] for r in timed)


def pretrain_args(model: Path, data: Path, out: Path, stage: str, micro: int, seq: int, steps: int, peak: float):
    cadence = to_args(log_every=2, eval_every=steps, eval_samples=2, save_every=10 * steps, warmup_steps=2)
    return [
        "-m",
        "ligo_ds",
        "pretrain",
        *to_args(
            model=model,
            data=data,
            out=out,
            ds_config=stage,
            max_steps=steps,
            micro_batch=micro,
            seq_len=seq,
            peak_tflops=peak / 1e12,
        ),
        *cadence,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--data", help="a prepared DATA_DIR (default: the stdlib corpus, prepared on first use)")
    parser.add_argument("--json", help="write every row here")
    args = parser.parse_args()
    p = PRESETS[args.preset]

    from ligo_ds import ModelConfig, load_model, save_model
    from ligo_ds.flops import train_flops_per_token

    peak, peak_what = measure_peak()
    rows, fit_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        log = work / "jobs.log"
        data = Path(args.data) if args.data else ROOT / "bench" / "runs" / "stdlib-data"
        if not (data / "meta.json").is_file():
            subprocess.run(
                [sys.executable, "-m", "ligo_ds", "prepare", "--out", str(data), "--force"],
                check=True,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )
        try:
            for name, (shape, micro) in p["models"].items():
                model = work / f"{name.replace('/', '_')}.json"
                model.write_text(json.dumps(shape))
                fpt = train_flops_per_token(ModelConfig.from_hf(shape), p["seq_len"])
                for stage in p["stages"]:
                    for ranks in p["ranks"]:
                        out = work / f"{model.stem}_{stage}_{ranks}"
                        torchrun(
                            ranks, pretrain_args(model, data, out, stage, micro, p["seq_len"], p["steps"], peak), log
                        )
                        ours, ours_mem = median_tokens_per_s(out)
                        hf_out = work / f"hf_{model.stem}_{stage}_{ranks}.json"
                        hf_args = to_args(
                            model=model,
                            data=data,
                            ds_config=stage,
                            micro_batch=micro,
                            seq_len=p["seq_len"],
                            steps=p["steps"],
                            out=hf_out,
                        )
                        torchrun(ranks, [str(ROOT / "bench" / "hf_deepspeed.py"), *hf_args], log)
                        hf = json.loads(hf_out.read_text())
                        rows.append(
                            {
                                "model": name,
                                "stage": stage,
                                "ranks": ranks,
                                "micro_batch": micro,
                                "ligo_tokens_per_s": ours,
                                "ligo_mfu": ours * fpt / (peak * ranks),
                                "ligo_peak_mem_gb": ours_mem,
                                "hf_tokens_per_s": hf["tokens_per_s"],
                                "hf_mfu": hf["tokens_per_s"] * fpt / (peak * ranks),
                                "hf_peak_mem_gb": hf["peak_mem_gb"],
                            }
                        )
                        print(
                            f"  {name} {stage} x{ranks}: ligo_ds {ours:,.0f} tok/s, HF {hf['tokens_per_s']:,.0f}",
                            file=sys.stderr,
                        )
            src_shape, tgt_shape, micro = p["fit"]
            (work / "target.json").write_text(json.dumps(tgt_shape))
            save_model(load_model(_write(work / "source.json", src_shape)), work / "source")
            for stage in p["stages"]:
                train = work / f"train_{stage}"
                torchrun(
                    1,
                    pretrain_args(work / "target.json", data, train, stage, micro, p["seq_len"], p["fit_steps"], peak),
                    log,
                )
                fit = work / f"fit_{stage}"
                fit_args = to_args(
                    source=work / "source",
                    target=work / "target.json",
                    data=data,
                    out=fit,
                    steps=p["fit_steps"],
                    ds_config=stage,
                    micro_batch=micro,
                    seq_len=p["seq_len"],
                    log_every=2,
                    eval_every=p["fit_steps"],
                    eval_samples=2,
                    operator_warmup=2,
                )
                torchrun(1, ["-m", "ligo_ds", "fit", *fit_args], log)
                t_train, _ = median_tokens_per_s(train)
                t_fit, _ = median_tokens_per_s(fit)
                fit_rows.append(
                    {
                        "stage": stage,
                        "train_tokens_per_s": t_train,
                        "fit_tokens_per_s": t_fit,
                        "fit_step_over_train_step": t_train / t_fit,
                    }
                )
        except SystemExit:
            print(log.read_text()[-5000:], file=sys.stderr)
            raise

    print(f"\npeak: {peak / 1e12:.2f} TFLOP/s measured on {peak_what}; sequence {p['seq_len']}, {p['steps']} steps")
    print(
        "| model | ZeRO | ranks | micro-batch | ligo_ds tokens/s | MFU | peak mem (GiB) | HF+DeepSpeed tokens/s "
        "| MFU | peak mem (GiB) | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['stage']} | {r['ranks']} | {r['micro_batch']} | {r['ligo_tokens_per_s']:,.0f} | "
            f"{100 * r['ligo_mfu']:.1f} % | {r['ligo_peak_mem_gb']:.2f} | {r['hf_tokens_per_s']:,.0f} | "
            f"{100 * r['hf_mfu']:.1f} % | {r['hf_peak_mem_gb']:.2f} | "
            f"{r['ligo_tokens_per_s'] / r['hf_tokens_per_s']:.2f}x |"
        )
    print("\nLiGO fit step against the target's training step, same batch, 1 rank:")
    print("| ZeRO | train tokens/s | fit tokens/s | fit step / train step |")
    print("|---|---|---|---|")
    for r in fit_rows:
        print(
            f"| {r['stage']} | {r['train_tokens_per_s']:,.0f} | {r['fit_tokens_per_s']:,.0f} | "
            f"{r['fit_step_over_train_step']:.2f}x |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"peak_flops": peak, "peak": peak_what, "rows": rows, "fit": fit_rows}, indent=2)
        )
    return 0


def _write(path: Path, value: dict) -> Path:
    path.write_text(json.dumps(value))
    return path


if __name__ == "__main__":
    sys.exit(main())
