"""What growth saves: scratch vs LiGO vs the classic heuristics, one command, one table, one plot.

    python bench/savings.py --preset cpu      # both families on the stdlib corpus, 51-70 min on 2 cores (by host)
    python bench/savings.py --preset gpu      # larger models, one H100/H200, 4 jobs sharing it
    python bench/savings.py --preset gpu --jobs 8 --devices 0,1,2,3,4,5,6,7   # a node of 8 GPUs
    python bench/savings.py --preset tiny     # seconds; what the test suite runs

Per family (a GPT-2 pair and a Llama pair with GQA): pretrain the small model for the large model's
steps and batch at a few learning rates, each held at its peak after warmup (no decay: see `study`), and
grow the best; train the large model from scratch at a few learning rates (the best is the baseline, so
neither end of the comparison is a weak model);
then grow the small model with each heuristic (an operator special case written with `fit --steps 0`)
and with LiGO (the fitted operator), and train every grown model with the same data order, batch,
schedule and token budget as scratch. `ligo-ds report` then writes report.md / report.csv /
loss_vs_flops.png per family.
Every job is a real `ligo-ds` command; rerunning the script resumes what is unfinished.
With --jobs N, up to N jobs run at once (the families side by side, and within a family the two sweeps,
then the grown runs), each pinned to a device of --devices in turn. Small models leave a GPU mostly idle
between kernels (start-up, evaluation, Python), so jobs sharing one finish sooner than one after another;
their wall times are then times of shared runs, which the time columns of the report say nothing
reliable about. FLOPs, the study's measure, are unaffected. On a CPU it gains nothing: the jobs share its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ligo_ds.rundir import final_val_loss  # noqa: E402


@dataclass(frozen=True)
class Preset:
    families: dict  # name -> (small HF config, large HF config)
    small_steps: int
    large_steps: int
    # LiGO's operator steps, about 4 % of a large run's: on CPU 15 steps save a point more than 30 with every
    # seed tried and 60 steps a point less, because training gives back what a longer fit gains while the
    # fit's FLOPs stay counted (bench/README.md, items 22-23).
    fit_steps: int
    seq_len: int
    micro_batch: int
    scratch_lrs: tuple
    # The small model's peak lrs; the lowest final loss is grown. A mis-tuned small model gives growth a
    # weak start: on CPU the GPT-2 small model ends 0.24 nats lower at 2e-3 than at 4e-3 (bench/README.md, item 13).
    small_lrs: tuple
    warmup: int
    eval_every: int
    eval_samples: int
    operator_lr: float = 1e-3
    # LiGO's fit batch per rank (default micro_batch). An eighth fits worse but costs far less, and the
    # grown runs end as low (bench/README.md, items 12 and 18).
    fit_micro_batch: int | None = None
    ds_config: str = "zero2"
    jobs: int = 1  # jobs at once (--jobs): 1 keeps the time columns clean, more finish sooner on a GPU
    corpus: str = "stdlib"  # or "site-packages": bench/code_corpus.py, for budgets that would repeat stdlib
    data_args: tuple = ()


def _gpt2(layers, width, heads, positions, vocab):
    return dict(model_type="gpt2", n_layer=layers, n_embd=width, n_head=heads, n_positions=positions, vocab_size=vocab)


def _llama(layers, width, heads, kv, ffn, positions, vocab):
    return dict(model_type="llama", num_hidden_layers=layers, hidden_size=width, num_attention_heads=heads,
                num_key_value_heads=kv, intermediate_size=ffn, max_position_embeddings=positions, vocab_size=vocab,
                tie_word_embeddings=True)


PRESETS = {
    "tiny": Preset(
        families={"gpt2": (_gpt2(1, 32, 2, 64, 320), _gpt2(2, 64, 4, 64, 320)),
                  "llama": (_llama(1, 32, 2, 1, 64, 64, 320), _llama(2, 64, 4, 2, 128, 64, 320))},
        small_steps=8, large_steps=8, fit_steps=2, seq_len=32, micro_batch=4, scratch_lrs=(3e-3,), small_lrs=(3e-3,),
        warmup=2, eval_every=4, eval_samples=4, fit_micro_batch=1, data_args=("--vocab-size", "320")),
    "cpu": Preset(
        families={"gpt2": (_gpt2(2, 128, 4, 256, 8192), _gpt2(4, 256, 8, 256, 8192)),
                  "llama": (_llama(2, 128, 4, 2, 352, 256, 8192), _llama(4, 256, 8, 4, 704, 256, 8192))},
        small_steps=400, large_steps=400, fit_steps=15, seq_len=128, micro_batch=16, scratch_lrs=(1e-3, 2e-3, 4e-3),
        small_lrs=(1e-3, 2e-3, 4e-3), warmup=30, eval_every=25, eval_samples=64, fit_micro_batch=2),
    "gpu": Preset(
        families={"gpt2": (_gpt2(6, 384, 6, 512, 8192), _gpt2(12, 768, 12, 512, 8192)),
                  "llama": (_llama(6, 384, 6, 2, 1024, 512, 8192), _llama(12, 768, 12, 4, 2048, 512, 8192))},
        small_steps=500, large_steps=500, fit_steps=20, seq_len=512, micro_batch=32,
        scratch_lrs=(3e-4, 6e-4, 1.2e-3), small_lrs=(2.4e-3,), warmup=50, eval_every=50, eval_samples=128,
        fit_micro_batch=4, corpus="site-packages", jobs=4),
}

# Grown runs: name -> (fit steps, growth options). The heuristics are operator special cases, not fitted;
# width grows the function-preserving Net2Net / bert2BERT way in each, depth by stacking (StackBERT,
# G_stack), interpolation, or zero-initialised new layers (Net2Net deepening, function preserving).
# LiGO fits the operator from the official code's initialisation (random width mixes, stacked depth),
# the best of the initialisations tried, in the official code's order (mix over depth, then widen per
# target layer), which costs less per fit step than the paper's (bench/README.md, items 6 and 18).
# Every grown run keeps `grow`'s default init noise (0.01): without it copied units stay identical.
def grown_runs(p: Preset) -> dict[str, tuple[int, list[str]]]:
    return {
        "net2net_stack": (0, ["--width-init", "net2net", "--depth-init", "stack"]),
        "net2net_interpolate": (0, ["--width-init", "net2net", "--depth-init", "interpolate"]),
        "net2net_zero": (0, ["--width-init", "net2net", "--depth-init", "zero"]),
        "ligo": (p.fit_steps, ["--width-init", "random", "--depth-init", "stack", "--order", "official"]),
    }


JOB_RECORD = "savings_job.json"  # the command that made a finished run, written next to it


def flag(args: list[str] | tuple[str, ...], name: str) -> str | None:
    """The value given to `name` in a command's arguments, or None when the command lacks it."""
    return args[args.index(name) + 1] if name in args else None


_LOG_LOCK = threading.Lock()  # jobs.log is appended to by every job thread


def ligo(*args: str, log: Path, done: Path | None = None, device: str | None = None,
         job_log: Path | None = None, label: str | None = None) -> float:
    """Run one `ligo-ds` job, or skip it when it already finished (`done` exists) under the same command.

    The command is recorded in the run dir with the study's work dir (the log's folder) written as $WORK,
    so a moved study still resumes. A finished run made by another command (a changed preset) is an error,
    never a silent reuse; a finished run with no record is handed to `ligo-ds`, which checks its identity.
    `device` pins the job to one GPU (CUDA_VISIBLE_DEVICES). Its output streams into `log`, or, when other
    jobs run beside it, into `job_log` and then into `log` in one piece, so jobs.log never interleaves.
    The line printed when it ends names it by `label` (default: its run dir's name).
    """
    out = Path(flag(args, "--out")) if "--out" in args else None
    job = [a.replace(str(log.parent), "$WORK") for a in args]
    record = out / JOB_RECORD if out is not None and done is not None else None
    if record is not None and done.is_file() and record.is_file():
        made_by = json.loads(record.read_text())["args"]
        if made_by == job:
            return 0.0
        raise SystemExit(f"{str(out)!r} holds a finished run made by a different command:\n  {' '.join(made_by)}\n"
                         f"expected:\n  {' '.join(job)}\nmove it away or choose another --out")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    header = f"\n$ ligo-ds {' '.join(args)}\n" + (f"# on device {device}\n" if device is not None else "")
    start = time.perf_counter()
    if job_log is not None:
        job_log.parent.mkdir(parents=True, exist_ok=True)
    # Only a job that runs alone streams into jobs.log itself, so that write needs no lock.
    with open(job_log or log, "w" if job_log else "a") as f:
        f.write(header)
        f.flush()
        result = subprocess.run([sys.executable, "-m", "ligo_ds", *args], stdout=f, stderr=subprocess.STDOUT,
                                cwd=ROOT, env=env)
    if job_log is not None:
        with _LOG_LOCK, open(log, "a") as f:
            f.write(job_log.read_text())
    if result.returncode != 0:
        raise SystemExit(f"failed: ligo-ds {' '.join(args)} (see {job_log or log})")
    if record is not None:
        record.write_text(json.dumps({"args": job}, indent=1))
    seconds = time.perf_counter() - start
    print(f"  {args[0]} {label or (out.name if out else '')}: {seconds:.0f} s", file=sys.stderr, flush=True)
    return seconds


class Jobs:
    """Runs `ligo-ds` jobs on `jobs` slots at once, slot i on device devices[i % len(devices)].

    After a job fails no queued job starts (the running ones finish: they are resumable), and the failure
    reaches whoever waits on that job's future.
    """

    def __init__(self, jobs: int, devices: list[str] | None, log: Path):
        if jobs < 1:
            raise SystemExit(f"--jobs {jobs}: expected at least 1")
        if devices is not None and (not devices or any(not d.strip() for d in devices)):
            raise SystemExit(f"--devices {','.join(devices)!r}: expected comma-separated device ids such as 0,1")
        devices = None if devices is None else [d.strip() for d in devices]
        self.jobs, self.log = jobs, log
        # Device ids count the devices this script sees: under CUDA_VISIBLE_DEVICES=2,3 (a Slurm allocation,
        # say) device 0 is GPU 2.
        seen = os.environ.get("CUDA_VISIBLE_DEVICES")
        if devices is not None and seen:
            visible = seen.split(",")
            bad = [d for d in devices if not d.isdigit() or int(d) >= len(visible)]
            if bad:
                raise SystemExit(f"--devices {','.join(devices)!r}: {bad} not among the {len(visible)} devices "
                                 f"of CUDA_VISIBLE_DEVICES={seen}; expected ids 0-{len(visible) - 1}")
            devices = [visible[int(d)] for d in devices]
        self.slots: queue.Queue = queue.Queue()
        for i in range(jobs):
            self.slots.put(devices[i % len(devices)] if devices else None)
        self.failed = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=jobs)

    def submit(self, *args: str, done: Path | None = None) -> Future:
        return self.pool.submit(self._run, args, done)

    def _run(self, args: tuple[str, ...], done: Path | None) -> float:
        if self.failed.is_set():
            raise SystemExit(f"not started after another job failed: ligo-ds {' '.join(args)}")
        device = self.slots.get()
        try:
            if self.jobs == 1:
                return ligo(*args, log=self.log, done=done, device=device)
            # Families run side by side, so a job is named by its path: gpt2/runs/ligo, logged in
            # logs/gpt2.runs.ligo.log.
            out = Path(flag(args, "--out"))
            name = out.relative_to(self.log.parent) if out.is_relative_to(self.log.parent) else Path(out.name)
            return ligo(*args, log=self.log, done=done, device=device, label=str(name),
                        job_log=self.log.parent / "logs" / f"{'.'.join(name.parts)}.log")
        except BaseException:
            self.failed.set()
            raise
        finally:
            self.slots.put(device)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def final_val(run: Path) -> float:
    loss = final_val_loss(run / "metrics.jsonl")
    if loss is None:
        raise SystemExit(f"{str(run)!r}: its metrics.jsonl holds no validation loss; expected a finished run that "
                         "evaluated at least once (--eval-every)")
    return loss


def best_of(sweep: list[tuple[float, float, Path]], what: str, family: str) -> tuple[float, float, Path]:
    """The (final val, lr, run) with the lowest loss, saying so, and warning when it is the sweep's edge."""
    best = min(sweep)
    lrs = [lr for _, lr, _ in sweep]
    print(f"  {family}: {what} final val by lr: " + ", ".join(f"{lr:g}: {v:.4f}" for v, lr, _ in sweep)
          + f" -> lr {best[1]:g}", file=sys.stderr)
    if len(lrs) > 2 and best[1] in (min(lrs), max(lrs)):
        print(f"  {family}: warning: the best {what} lr {best[1]:g} is at the edge of the sweep "
              f"{[f'{lr:g}' for lr in lrs]}; that model may be a weak one", file=sys.stderr)
    return best


def study(p: Preset, family: str, data: Path, work: Path, jobs: Jobs) -> Path:
    small_cfg, large_cfg = p.families[family]
    fam = work / family
    fam.mkdir(parents=True, exist_ok=True)
    (fam / "small.json").write_text(json.dumps(small_cfg))
    (fam / "large.json").write_text(json.dumps(large_cfg))
    common = ["--data", str(data), "--seq-len", str(p.seq_len), "--micro-batch", str(p.micro_batch),
              "--warmup-steps", str(p.warmup), "--eval-every", str(p.eval_every), "--eval-samples",
              str(p.eval_samples), "--log-every", str(p.eval_every), "--save-every", str(10 * p.large_steps),
              "--ds-config", p.ds_config, "--seed", "1234"]
    runs = fam / "runs"
    # The small model keeps its peak lr after warmup (no decay), as a checkpoint meant for growth is taken
    # before annealing: an annealed model loses ~0.14 nats when the grown run warms back up to the scratch
    # peak, with or without growth (bench/README.md, items 8-9).
    # The two sweeps are independent, so they are queued together; the grown runs need both winners.
    smalls, scratch = [], []
    for lr in p.small_lrs:
        out = runs / f"small_lr{lr:g}"
        smalls.append((lr, out, jobs.submit("pretrain", "--model", str(fam / "small.json"), "--out", str(out), "--lr",
                                            str(lr), "--min-lr", str(lr), "--max-steps", str(p.small_steps), *common,
                                            done=out / "hf" / "config.json")))
    for lr in p.scratch_lrs:
        out = runs / f"scratch_lr{lr:g}"
        scratch.append((lr, out, jobs.submit("pretrain", "--model", str(fam / "large.json"), "--out", str(out),
                                             "--lr", str(lr), "--max-steps", str(p.large_steps), *common,
                                             done=out / "hf" / "config.json")))
    for _, _, job in [*smalls, *scratch]:
        job.result()
    small_val, _, small = best_of([(final_val(out), lr, out) for lr, out, _ in smalls], "small model", family)
    best_val, best_lr, _ = best_of([(final_val(out), lr, out) for lr, out, _ in scratch], "scratch", family)
    if small_val <= best_val:
        print(f"  {family}: warning: the small model alone ({small_val:.4f}) already reaches the "
              f"scratch target ({best_val:.4f}), so every growth saving is trivial here (the report says so too)",
              file=sys.stderr)
    grown = []
    for name, (steps, options) in grown_runs(p).items():
        out = runs / name
        if steps and p.fit_micro_batch is not None:
            options = [*options, "--fit-micro-batch", str(p.fit_micro_batch)]
        grown.append((out, jobs.submit(
            "grow", "--source", str(small / "hf"), "--target", str(fam / "large.json"), "--out", str(out),
            "--fit-steps", str(steps), *options, "--operator-lr", str(p.operator_lr), "--operator-warmup",
            str(max(1, steps // 10)), "--lr", str(best_lr), "--max-steps", str(p.large_steps), *common,
            done=out / "train" / "hf" / "config.json")))
    for _, job in grown:
        job.result()
    report = fam / "report"
    jobs.submit("report", *[str(out) for _, out, _ in scratch], *[str(out) for out, _ in grown], "--out",
                str(report)).result()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--out", default=str(ROOT / "bench" / "runs"))
    parser.add_argument("--families", default="gpt2,llama")
    parser.add_argument("--source", help="corpus for `ligo-ds prepare` (default: the preset's, stdlib or "
                        "site-packages sources)")
    parser.add_argument("--data", help="an already prepared DATA_DIR (`ligo-ds prepare`) instead of --source")
    parser.add_argument("--jobs", type=int, help="jobs at once (default: the preset's; gpu 4, others 1)")
    parser.add_argument("--devices", help="comma-separated GPU ids the jobs are spread over, e.g. 0,1,2,3, "
                        "counted among the devices this script sees (default: every job sees them all)")
    args = parser.parse_args()
    p = PRESETS[args.preset]
    work = Path(args.out) / args.preset
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
            reports = [study(p, family, data, work, jobs) for family in families]
        else:
            with ThreadPoolExecutor(max_workers=len(families)) as side_by_side:
                futures = [side_by_side.submit(study, p, family, data, work, jobs) for family in families]
                reports = [f.result() for f in futures]
    finally:
        jobs.close()
    for family, report in zip(families, reports):
        print(f"\n## {family} ({args.preset} preset)\n")
        print((report / "report.md").read_text())
        print(f"plot: {report / 'loss_vs_flops.png'}")
    if jobs.jobs > 1:
        print(f"\nnote: {jobs.jobs} jobs ran at once, so the time columns time shared runs; compare FLOPs "
              "(or rerun with --jobs 1 to time)")
    print(f"\nwhole study: {time.perf_counter() - start:.0f} s; job log: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
