"""Ranks from whichever launcher started us (deepspeed, torchrun, mpirun, srun, or none), the process
group, and the few collectives the rest of ligo_ds uses."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist

from ..errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    launcher: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_slurm_host() -> str:
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodelist:
        return "127.0.0.1"
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def _env_from_launcher() -> str:
    """Once per process: the first call fills the environment, later calls (grow's second phase) reuse it."""
    if "LIGO_DS_LAUNCHER" not in os.environ:
        os.environ["LIGO_DS_LAUNCHER"] = _detect_launcher()
    return os.environ["LIGO_DS_LAUNCHER"]


def _detect_launcher() -> str:
    """Fill RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* from the launcher's own variables; name the launcher.

    torchrun and the deepspeed runner set RANK themselves. mpirun sets OMPI_COMM_WORLD_*: we map them and
    let deepspeed's mpi4py discovery find the master address (it broadcasts rank 0's address, which is
    right on several nodes). Plain srun sets SLURM_PROCID/SLURM_LOCALID/SLURM_NTASKS.
    """
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        env.setdefault("LOCAL_RANK", "0")
        return "deepspeed" if "DEEPSPEED_LAUNCHER" in env or "CROSS_RANK" in env else "torchrun"
    if "OMPI_COMM_WORLD_RANK" in env:
        return "mpirun"  # deepspeed.init_distributed(auto_mpi_discovery=True) fills the rest
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        env["RANK"], env["WORLD_SIZE"] = env["SLURM_PROCID"], env["SLURM_NTASKS"]
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
        env.setdefault("LOCAL_WORLD_SIZE", env.get("SLURM_NTASKS_PER_NODE", "").split("(")[0] or env["SLURM_NTASKS"])
        env.setdefault("MASTER_ADDR", _first_slurm_host())
        env.setdefault("MASTER_PORT", str(29500 + int(env.get("SLURM_JOB_ID", "0")) % 2000))
        return "srun"
    env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", str(_free_port()))
    return "single"


def planned_world_size() -> int:
    """The number of ranks the launcher started, read from its variables before any process group exists."""
    _env_from_launcher()
    return int(os.environ.get("WORLD_SIZE") or os.environ["OMPI_COMM_WORLD_SIZE"])


def init() -> Dist:
    """Join (or create) the process group. Idempotent."""
    # DeepSpeed JIT-builds an op on first init (deepspeed_shm_comm on CPU); keep its cache per user, not in
    # a default directory that concurrent jobs with other flags rebuild under each other.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "ligo_ds" / "torch_extensions"))
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    launcher = _env_from_launcher()
    accel = get_accelerator()
    on_gpu = accel.device_name() == "cuda"
    if not dist.is_initialized():
        port = int(os.environ.get("MASTER_PORT", 29500))
        deepspeed.init_distributed(
            dist_backend="nccl" if on_gpu else "gloo", auto_mpi_discovery=True, distributed_port=port, verbose=False
        )
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", 0)))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", world)))
    if on_gpu:
        accel.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        # Ranks on one machine share its cores; oversubscribed intra-op threads slow every rank down. The
        # cores are those this process may run on (a Slurm or cgroup allocation), not all the machine's.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // max(1, local_world)))
        device = torch.device("cpu")
    return Dist(rank, world, local_rank, local_world, device, launcher)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: T, src: int = 0) -> T:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: T) -> list[T]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def on_every_rank(fn: Callable[[], list[str]]) -> None:
    """Run `fn` (each rank its share of a check; it returns problems as messages) and raise the first
    problem any rank found on every rank, so every rank ends with the same one-line error."""
    problems = [p for found in all_gather_object(fn()) for p in found]
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)


def on_rank0(d: Dist, fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 and give every rank its result, or raise its ConfigError on every rank, so that
    a refused run ends every rank with the same one-line error."""
    outcome = None
    if d.is_main:
        try:
            outcome = ("ok", fn())
        except ConfigError as e:
            outcome = ("error", str(e))
    outcome = broadcast_object(outcome)
    if outcome[0] == "error":
        raise ConfigError(outcome[1])
    return outcome[1]
