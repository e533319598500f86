"""Starting real jobs from tests: every launcher, a free port each, a timeout around each, and a
process-group kill so no rank outlives its test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LIGO_DS_LAUNCHER")
        and not k.startswith(("SLURM_", "OMPI_", "PMIX_"))
    }
    env.update(
        DS_ACCELERATOR="cpu",
        GLOO_SOCKET_IFNAME="lo",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        TORCH_EXTENSIONS_DIR=str(ROOT / ".torch_extensions"),
        OMP_NUM_THREADS="1",
    )
    env.update(extra)
    return env


def command(launcher: str, nproc: int, args: list[str]) -> list[str]:
    """The argv that starts `ligo-ds ARGS` on `nproc` local ranks under `launcher`."""
    port = str(free_port())
    module = ["-m", "ligo_ds", *args]
    if launcher == "single":
        assert nproc == 1
        return [sys.executable, *module]
    if launcher == "torchrun":
        return [str(BIN / "torchrun"), f"--nproc_per_node={nproc}", f"--master_port={port}", *module]
    if launcher == "deepspeed":
        return [str(BIN / "deepspeed"), "--num_gpus", str(nproc), "--master_port", port, "--module", "ligo_ds", *args]
    if launcher == "mpirun":
        return [
            "mpirun",
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            str(nproc),
            "--bind-to",
            "none",
            "-x",
            f"MASTER_PORT={port}",
            sys.executable,
            *module,
        ]
    raise ValueError(launcher)


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a launcher and every process under it. torchrun starts its workers in sessions of their
    own, so killing the launcher's process group alone leaves the ranks running."""
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = parent.children(recursive=True) + [parent]
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def run(argv: list[str], timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env or job_env(),
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, _ = proc.communicate()
        raise AssertionError(f"timed out after {timeout} s: {' '.join(argv)}\n{out[-4000:]}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, None)


def ligo(launcher: str, nproc: int, args: list[str], timeout: float = 240, check: bool = True, **env):
    result = run(command(launcher, nproc, args), timeout=timeout, env=job_env(**env))
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}: {' '.join(result.args)}\n{result.stdout[-6000:]}")
    return result


def kill_when(launcher: str, nproc: int, args: list[str], ready, timeout: float = 240) -> None:
    """Start a job, SIGKILL its whole tree as soon as `ready()` is true, and insist it was still running."""
    import time

    proc = subprocess.Popen(
        command(launcher, nproc, args),
        env=job_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"the job ended (exit {proc.returncode}) before the kill point: {args}")
            if time.time() > deadline:
                raise AssertionError(f"kill point never reached: {args}")
            time.sleep(0.02)
    finally:
        kill_tree(proc.pid)
        proc.wait()
