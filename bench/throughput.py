"""Pretraining throughput: ligo_ds, across its compute options, against an HF model handed to DeepSpeed;
and a LiGO fit step against a training step of the large model.

    python bench/throughput.py --preset gpu     # GPT-2 350M (then 124M, Llama 1B) on one H100/H200
    python bench/throughput.py --preset cpu     # a small GPT-2 on 1 and 2 CPU ranks
    python bench/throughput.py --preset tiny    # seconds; what the test suite runs (through gpu_run.sh)

First it measures the device's matrix-product peak (bf16 8192^3 on a GPU, fp32 on the CPU) and reports
MFU against that. Every row is a real job: `ligo-ds pretrain` for ligo_ds, with torch.compile, activation
checkpointing and the chunked LM head + loss set per row, and bench/hf_deepspeed.py (transformers' model,
same DeepSpeed config, data, batch and loss) for the baseline; the figure is the median tokens/s after
warm-up. The fit table compares `ligo-ds fit`'s step with the target model's training step measured at
the same ZeRO stage, batch and compute options, and with the fastest training row at that stage.

A preset lists its jobs most important first. With --budget-s a job starts only while the longest job so
far would still end inside the budget; the rest are listed as skipped. A failed job becomes a row marked
failed (its output is in --log) and the others still run; the exit code is then 1. --json writes every row.

Past 300 lines on purpose: the presets and their job tables take a third, and the runner and the tables
it prints are one measurement read top to bottom; splitting them would only scatter one benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ligo_ds.model.compute import LOSS_CHUNK  # noqa: E402
from ligo_ds.options import to_args  # noqa: E402

from jobs import launcher  # noqa: E402  (bench/ is on sys.path when run as a script)

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


@dataclass(frozen=True)
class Compute:
    """ligo_ds's compute options of a row (its Compute option block): none changes what is computed
    beyond rounding, only speed and memory."""

    compile: bool = False
    checkpointing: str = "none"  # none | full | selective
    # The LM head + loss over LOSS_CHUNK tokens at a time (the default), or over the whole micro-batch at
    # once (--loss-chunk B*T). The package has no plain F.cross_entropy loss; one chunk is the nearest:
    # the whole batch's logits exist at once, though the gradient is still formed in the forward.
    chunked_loss: bool = True

    def args(self, tokens: int) -> list[str]:
        """Its flags, for a micro-batch of `tokens` tokens."""
        chunk = LOSS_CHUNK if self.chunked_loss else tokens
        flag = "--compile" if self.compile else "--no-compile"
        return [flag, *to_args(activation_checkpointing=self.checkpointing, loss_chunk=chunk)]


@dataclass(frozen=True)
class Job:
    """One row. kind: ligo_ds (`ligo-ds pretrain` of `model`), hf (bench/hf_deepspeed.py on the same
    config; `compute` unused) or fit (`ligo-ds fit` from the preset's fit source into `model`, in `order`)."""

    kind: str
    model: str
    stage: str
    compute: Compute = Compute()
    ranks: int = 1
    order: str = "paper"

    @property
    def name(self) -> str:
        c = self.compute
        options = "" if self.kind == "hf" else f"_c{int(c.compile)}_{c.checkpointing}_l{int(c.chunked_loss)}"
        order = f"_{self.order}" if self.kind == "fit" else ""
        return f"{self.kind}_{self.model.replace('/', '_')}_{self.stage}_x{self.ranks}{options}{order}"

    def train_twin(self) -> Job:
        """The pretraining row a fit compares with: the same target, stage, ranks and compute options."""
        return Job("ligo_ds", self.model, self.stage, self.compute, self.ranks)


@dataclass(frozen=True)
class Preset:
    models: dict  # name -> (HF config, micro-batch per rank)
    seq_len: int
    steps: int  # per pretraining row; the first logged interval (warm-up, compilation) is left out
    fit_steps: int
    fit_source: dict  # the HF config every fit grows from (random weights: the speed does not depend on them)
    jobs: tuple[Job, ...]  # most important first: a budget cuts the end of the list

    def __post_init__(self):
        for job in self.jobs:
            if job.model not in self.models:
                raise ValueError(f"job {job.name}: model {job.model!r} not among {sorted(self.models)}")
            if job.kind == "fit" and job.train_twin() not in self.jobs[: self.jobs.index(job)]:
                raise ValueError(f"job {job.name}: its training row {job.train_twin().name} must come before it")


def _sweep(model: str, stage: str, *computes: Compute, ranks: int = 1) -> list[Job]:
    """The HF baseline, then ligo_ds with each of `computes`, at one model, ZeRO stage and rank count."""
    return [Job("hf", model, stage, ranks=ranks), *(Job("ligo_ds", model, stage, c, ranks) for c in computes)]


COMPILED = Compute(compile=True)
COMPILED_FULL = Compute(compile=True, checkpointing="full")

PRESETS = {
    # One H100/H200. The goals' rows come first: 350M against HF under ZeRO-1 and ZeRO-3, and the fit
    # against the training step with the fit's own options (a ZeRO-3 fit checkpoints every block). Then
    # each option's effect as a pair of rows that differ in it alone: compile, selective checkpointing and
    # the chunked loss at ZeRO-1, full checkpointing at ZeRO-3; then ZeRO-2, the fit's other order, 124M
    # and Llama 1B, as the budget allows. Estimated on an H200 (shared/reference/gpu.md's 350M rates, the
    # first GPU run's ~20 s of start-up, evaluation and export a job): a 350M row 30-40 s, 30 steps of it
    # 5 s; a block's first compilation 30 s more; the fit 60-80 s. gpu_run.sh's 330 s hold the goals' six
    # rows, and the rest runs as far as a longer --budget-s reaches.
    "gpu": Preset(
        models={"gpt2-350M": (GPT2_350M, 16), "gpt2-124M": (GPT2_124M, 32), "llama-1B": (LLAMA_1B, 8)},
        seq_len=1024,
        steps=30,
        fit_steps=20,
        fit_source=GPT2_124M,
        jobs=(
            *_sweep("gpt2-350M", "zero1", COMPILED),
            *_sweep("gpt2-350M", "zero3", COMPILED, COMPILED_FULL),
            Job("fit", "gpt2-350M", "zero3", COMPILED_FULL),
            Job("ligo_ds", "gpt2-350M", "zero1", Compute()),
            Job("ligo_ds", "gpt2-350M", "zero1", Compute(compile=True, checkpointing="selective")),
            Job("ligo_ds", "gpt2-350M", "zero1", Compute(compile=True, chunked_loss=False)),
            Job("ligo_ds", "gpt2-350M", "zero3", Compute()),
            *_sweep("gpt2-350M", "zero2", COMPILED),
            Job("fit", "gpt2-350M", "zero3", COMPILED_FULL, order="official"),
            *_sweep("gpt2-124M", "zero1", COMPILED),
            *_sweep("llama-1B", "zero1", COMPILED),
        ),
    ),
    # The 2-core CPU machine: every stage on 1 and 2 ranks, then the compute options at ZeRO-2, 1 rank.
    "cpu": Preset(
        models={"gpt2-4L/256": (CPU_LARGE, 8)},
        seq_len=128,
        steps=30,
        fit_steps=10,
        fit_source=CPU_SMALL,
        jobs=(
            *(
                job
                for s in ("zero1", "zero2", "zero3")
                for r in (1, 2)
                for job in _sweep("gpt2-4L/256", s, Compute(), ranks=r)
            ),
            *(
                Job("ligo_ds", "gpt2-4L/256", "zero2", c)
                for c in (
                    Compute(compile=True),
                    Compute(checkpointing="selective"),
                    Compute(checkpointing="full"),
                    Compute(chunked_loss=False),
                )
            ),
            Job("ligo_ds", "gpt2-4L/256", "zero3", Compute(checkpointing="full")),
            Job("fit", "gpt2-4L/256", "zero3", Compute(checkpointing="full")),
        ),
    ),
    # Seconds: checks the script, not the numbers. Its one ligo_ds row is not the default (full
    # checkpointing, one loss chunk), so that every option reaches the command lines, the fit's too;
    # compile is left to the cpu and gpu presets (a first compilation takes half a minute on a CPU).
    "tiny": Preset(
        models={"gpt2-2L/64": (TINY_LARGE, 2)},
        seq_len=32,
        steps=6,
        fit_steps=4,
        fit_source=TINY_SMALL,
        jobs=(
            *_sweep("gpt2-2L/64", "zero3", Compute(checkpointing="full", chunked_loss=False)),
            Job("fit", "gpt2-2L/64", "zero3", Compute(checkpointing="full", chunked_loss=False)),
        ),
    ),
}


class JobFailed(Exception):
    pass


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


def launch(nproc: int, args: list[str], log: Path, timeout: float | None) -> None:
    """One job under jobs.launcher (the HF baseline, too, starts a one-process group itself). Its output
    goes to `log`."""
    cmd = [*launcher(nproc), *args]
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        # Its own process group, so that a job past its time, or left when this script is stopped (SIGTERM
        # from gpu_run.sh's guard, Ctrl-C), is ended with every process it started (torchrun's workers,
        # inductor's compile workers).
        proc = subprocess.Popen(
            cmd,
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=os.setpgrp,
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if code is None:
        raise JobFailed(f"still running {timeout:.0f} s after it started, past the budget; killed")
    if code != 0:
        raise JobFailed(f"exit code {code}: {' '.join(cmd)}")


def median_tokens_per_s(run: Path) -> tuple[float, float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if "tokens_per_s" in r][1:] or [r for r in rows if "tokens_per_s" in r]
    return statistics.median(r["tokens_per_s"] for r in timed), max(r["peak_mem_gb"] for r in timed)


def cadence(steps: int) -> list[str]:
    # One evaluation of 2 windows and the final checkpoint: neither is timed, but both cost wall time.
    return to_args(log_every=2, eval_every=steps, eval_samples=2, save_every=10 * steps)


class Bench:
    """Runs a preset's jobs in one work directory, deleting each run once read (a 350M run's checkpoint is
    about 6 GB, a 1B one's 16 GB: kept, they would fill a GPU machine's disk)."""

    def __init__(self, p: Preset, data: Path, work: Path, log: Path, peak: float):
        self.p, self.data, self.work, self.log, self.peak = p, data, work, log, peak
        self.source: Path | None = None  # the fit's source checkpoint, written on first use

    def model_file(self, name: str) -> Path:
        path = self.work / f"{name.replace('/', '_')}.json"
        if not path.is_file():
            path.write_text(json.dumps(self.p.models[name][0]))
        return path

    def run(self, job: Job, timeout: float | None) -> tuple[float, float]:
        """(tokens/s over all ranks, peak memory in GiB of rank 0) of one job."""
        p, micro = self.p, self.p.models[job.model][1]
        model, out = self.model_file(job.model), self.work / job.name
        common = to_args(data=self.data, ds_config=job.stage, micro_batch=micro, seq_len=p.seq_len)
        compute = job.compute.args(micro * p.seq_len)
        try:
            if job.kind == "hf":
                args = to_args(model=model, steps=p.steps, out=out.with_suffix(".json"))
                launch(job.ranks, [str(ROOT / "bench" / "hf_deepspeed.py"), *args, *common], self.log, timeout)
                result = json.loads(out.with_suffix(".json").read_text())
                return result["tokens_per_s"], result["peak_mem_gb"]
            if job.kind == "ligo_ds":
                args = to_args(model=model, out=out, max_steps=p.steps, warmup_steps=2, peak_tflops=self.peak / 1e12)
                launch(
                    job.ranks,
                    ["-m", "ligo_ds", "pretrain", *args, *common, *compute, *cadence(p.steps)],
                    self.log,
                    timeout,
                )
                return median_tokens_per_s(out)
            assert job.kind == "fit", job.kind
            args = to_args(
                source=self.fit_source(), target=model, out=out, steps=p.fit_steps, order=job.order, operator_warmup=2
            )
            launch(
                job.ranks, ["-m", "ligo_ds", "fit", *args, *common, *compute, *cadence(p.fit_steps)], self.log, timeout
            )
            return median_tokens_per_s(out)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def fit_source(self) -> Path:
        if self.source is None:
            from ligo_ds import load_model, save_model

            config = self.work / "fit_source.json"
            config.write_text(json.dumps(self.p.fit_source))
            self.source = save_model(load_model(config), self.work / "fit_source")
        return self.source


def run_preset(p: Preset, bench: Bench, budget: float | None) -> tuple[dict[Job, dict], list[Job]]:
    """Every job of `p` in order while the budget lasts: ({job: its result}, the jobs skipped). A result
    holds tokens_per_s, peak_mem_gb and mfu (fits have none: their step is the operator's production plus
    the target's step), or failed; and seconds, the job's wall time."""
    from ligo_ds import ModelConfig
    from ligo_ds.training.flops import train_flops_per_token

    results, skipped, longest, start = {}, [], 0.0, time.perf_counter()
    for job in p.jobs:
        left = None if budget is None else budget - (time.perf_counter() - start)
        if left is not None and longest > left:
            skipped.append(job)
            print(
                f"  {job.name}: skipped, {left:.0f} s of the budget left, longest job {longest:.0f} s", file=sys.stderr
            )
            continue
        began, result = time.perf_counter(), {}
        try:
            tokens_per_s, mem = bench.run(job, None if left is None else left + 30)
        except JobFailed as e:
            result["failed"] = str(e)
            print(f"  {job.name}: FAILED, {e} (see {bench.log})", file=sys.stderr)
        else:
            result.update(tokens_per_s=tokens_per_s, peak_mem_gb=mem)
            if job.kind != "fit":
                fpt = train_flops_per_token(ModelConfig.from_hf(p.models[job.model][0]), p.seq_len)
                result["mfu"] = tokens_per_s * fpt / (bench.peak * job.ranks)
            print(f"  {job.name}: {tokens_per_s:,.0f} tokens/s", file=sys.stderr)
        result["seconds"] = time.perf_counter() - began
        longest = max(longest, result["seconds"])
        results[job] = result
    return results, skipped


def _options(job: Job) -> list[str]:
    """The compile, checkpointing and LM head + loss cells of a row."""
    if job.kind == "hf":
        return ["-", "-", "whole batch, F.cross_entropy"]
    c = job.compute
    return ["yes" if c.compile else "no", c.checkpointing, f"chunks of {LOSS_CHUNK}" if c.chunked_loss else "one chunk"]


def tables(p: Preset, results: dict[Job, dict], skipped: list[Job]) -> str:
    """The pretraining table (a row per job; HF first at each model, stage and rank count) and the fit table."""
    lines = [
        "| model | ZeRO | ranks | micro-batch | implementation | compile | checkpointing | LM head + loss "
        "| tokens/s | MFU | peak mem (GiB) | against HF | job (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    train = sorted((j for j in results if j.kind != "fit"), key=lambda j: (j.model, j.stage, j.ranks, j.kind != "hf"))
    for job in train:
        r = results[job]
        what = "HF + DeepSpeed" if job.kind == "hf" else "ligo_ds"
        cells = [job.model, job.stage, job.ranks, p.models[job.model][1], what, *_options(job)]
        if "failed" in r:
            cells += ["failed", "-", "-", "-"]
        else:
            hf = results.get(Job("hf", job.model, job.stage, ranks=job.ranks), {}).get("tokens_per_s")
            against = f"{r['tokens_per_s'] / hf:.2f}x" if hf and job.kind != "hf" else "-"
            cells += [f"{r['tokens_per_s']:,.0f}", f"{100 * r['mfu']:.1f} %", f"{r['peak_mem_gb']:.2f}", against]
        lines.append("| " + " | ".join(map(str, [*cells, f"{r['seconds']:.0f}"])) + " |")
    fits = [j for j in results if j.kind == "fit"]
    if fits:
        lines += [
            "",
            "LiGO fit step against the target's training step, same ZeRO stage and batch:",
            "| target | ZeRO | order | compile | checkpointing | LM head + loss | fit tokens/s | training tokens/s, "
            "same options | fit step / training step | fastest training row | fit step / fastest training step |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for job in fits:
        fit = results[job].get("tokens_per_s")
        cells = [job.model, job.stage, job.order, *_options(job), f"{fit:,.0f}" if fit else "failed"]
        twin = results.get(job.train_twin(), {}).get("tokens_per_s")
        cells += [f"{twin:,.0f}", f"{twin / fit:.2f}x" if fit else "-"] if twin else ["-", "-"]
        same_stage = [
            (results[j]["tokens_per_s"], j)
            for j in train
            if (j.kind, j.model, j.stage, j.ranks) == ("ligo_ds", job.model, job.stage, job.ranks)
            and "failed" not in results[j]
        ]
        if same_stage:
            best, best_job = max(same_stage, key=lambda t: t[0])
            cells += [f"{best:,.0f} ({', '.join(_options(best_job))})", f"{best / fit:.2f}x" if fit else "-"]
        else:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    if skipped:
        lines += ["", "skipped (budget): " + ", ".join(j.name for j in skipped)]
    return "\n".join(lines)


def record(p: Preset, results: dict[Job, dict], skipped: list[Job]) -> dict:
    """What --json writes: a flat row per job, its options and its result."""
    rows = []
    for job, result in results.items():
        row = dict(name=job.name, kind=job.kind, model=job.model, stage=job.stage, ranks=job.ranks)
        row.update(micro_batch=p.models[job.model][1])
        if job.kind != "hf":
            row.update(asdict(job.compute))
        if job.kind == "fit":
            row.update(order=job.order, fit_steps=p.fit_steps, train_row=job.train_twin().name)
        rows.append({**row, **result})
    return dict(seq_len=p.seq_len, steps=p.steps, rows=rows, skipped=[j.name for j in skipped])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--data", help="a prepared DATA_DIR (default: the stdlib corpus, prepared on first use)")
    parser.add_argument("--json", help="write every row here")
    parser.add_argument("--log", help="append every job's output here (default: a temporary file, shown on failure)")
    parser.add_argument("--budget-s", type=float, help="start no job that the longest so far says would end past this")
    args = parser.parse_args()
    p = PRESETS[args.preset]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # so that `launch` ends its job
    if args.budget_s is not None and args.budget_s <= 0:
        raise SystemExit(f"--budget-s {args.budget_s}: expected a positive number of seconds")
    data = Path(args.data) if args.data else ROOT / "bench" / "runs" / "stdlib-data"
    if args.data and not (data / "meta.json").is_file():
        raise SystemExit(f"--data {args.data!r}: no meta.json there; expected a directory made by `ligo-ds prepare`")
    if not (data / "meta.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "ligo_ds", "prepare", "--out", str(data), "--force"],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )

    peak, peak_what = measure_peak()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(args.log).resolve() if args.log else Path(tmp) / "jobs.log"
        results, skipped = run_preset(p, Bench(p, data.resolve(), Path(tmp), log, peak), args.budget_s)
        failed = [job.name for job, r in results.items() if "failed" in r]
        if failed and not args.log:
            print(log.read_text()[-5000:], file=sys.stderr)

    print(f"\npeak: {peak / 1e12:.2f} TFLOP/s measured on {peak_what}; sequence {p.seq_len}, {p.steps} steps a row")
    print(tables(p, results, skipped))
    if args.json:
        measured = dict(peak_flops=peak, peak=peak_what, budget_s=args.budget_s)
        Path(args.json).write_text(json.dumps({**measured, **record(p, results, skipped)}, indent=2))
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
