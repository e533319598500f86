"""Running `ligo-ds` jobs for the benchmark scripts: each finished run records the command that made it,
so a rerun skips it only when the command matches; jobs run on a few slots at once, each pinned to a
device, with each job's output kept whole in the log."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ligo_ds.training.rundir import final_val_loss  # noqa: E402

JOB_RECORD = "savings_job.json"  # the command that made a finished run, written next to it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(nproc: int) -> list[str]:
    """What starts a job's ranks: plain python for one (ligo_ds starts a one-process group itself, and a
    launcher would only add its start-up), torchrun on a free port for more."""
    if nproc == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}"]


def flag(args: list[str] | tuple[str, ...], name: str) -> str | None:
    """The value given to `name` in a command's arguments, or None when the command lacks it."""
    return args[args.index(name) + 1] if name in args else None


def as_recorded(args: list[str] | tuple[str, ...], log: Path) -> list[str]:
    """A job's command as its record keeps it: the study's work dir (the log's folder) written as $WORK."""
    return [a.replace(str(log.parent), "$WORK") for a in args]


def made_by_command(out: Path) -> list[str] | None:
    """The recorded command of the run in `out`, or None when it has no record."""
    record = out / JOB_RECORD
    return json.loads(record.read_text())["args"] if record.is_file() else None


def run_state(args: list[str] | tuple[str, ...], done: Path, log: Path) -> str:
    """What the run dir of a job (its --out) holds: "made" (finished by this very command), "other"
    (finished by another command), "unrecorded" (finished, with no record) or "unfinished"."""
    if not done.is_file():
        return "unfinished"
    made_by = made_by_command(Path(flag(args, "--out")))
    return "unrecorded" if made_by is None else "made" if made_by == as_recorded(args, log) else "other"


_LOG_LOCK = threading.Lock()  # jobs.log is appended to by every job thread


def ligo(
    *args: str,
    log: Path,
    done: Path | None = None,
    device: str | None = None,
    job_log: Path | None = None,
    label: str | None = None,
) -> float:
    """Run one `ligo-ds` job, or skip it when it already finished (`done` exists) under the same command.

    The command is recorded in the run dir with the study's work dir (the log's folder) written as $WORK,
    so a moved study still resumes. A finished run made by another command (a changed preset) is an error,
    never a silent reuse; a finished run with no record is handed to `ligo-ds`, which checks its identity.
    `device` pins the job to one GPU (CUDA_VISIBLE_DEVICES). Its output streams into `log`, or, when other
    jobs run beside it, into `job_log` and then into `log` in one piece, so jobs.log never interleaves.
    The line printed when it ends names it by `label` (default: its run dir's name).
    """
    out = Path(flag(args, "--out")) if "--out" in args else None
    job = as_recorded(args, log)
    record = out / JOB_RECORD if out is not None and done is not None else None
    state = run_state(args, done, log) if record is not None else "unfinished"
    if state == "made":
        return 0.0
    if state == "other":
        raise SystemExit(
            f"{str(out)!r} holds a finished run made by a different command:\n  {' '.join(made_by_command(out))}\n"
            f"expected:\n  {' '.join(job)}\nmove it away or choose another --out"
        )
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
        result = subprocess.run(
            [sys.executable, "-m", "ligo_ds", *args], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env
        )
    if job_log is not None:
        with _LOG_LOCK, open(log, "a") as f:
            f.write(job_log.read_text())
    if result.returncode != 0:
        raise SystemExit(f"failed: ligo-ds {' '.join(args)} (see {job_log or log})")
    # A run stopped on request (SIGTERM, SIGUSR1: a preemption) checkpoints and exits 0 unfinished: the
    # study must not read its partial curve as a result, nor record it as made.
    if done is not None and not done.is_file():
        raise SystemExit(f"stopped before its end: ligo-ds {' '.join(args)} (see {job_log or log}); rerun to resume it")
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
                raise SystemExit(
                    f"--devices {','.join(devices)!r}: {bad} not among the {len(visible)} devices "
                    f"of CUDA_VISIBLE_DEVICES={seen}; expected ids 0-{len(visible) - 1}"
                )
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
            return ligo(
                *args,
                log=self.log,
                done=done,
                device=device,
                label=str(name),
                job_log=self.log.parent / "logs" / f"{'.'.join(name.parts)}.log",
            )
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
        raise SystemExit(
            f"{str(run)!r}: its metrics.jsonl holds no validation loss; expected a finished run that "
            "evaluated at least once (--eval-every)"
        )
    return loss
