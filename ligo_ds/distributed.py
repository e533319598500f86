"""The DeepSpeed boundary: the one module that imports deepspeed.

Everything else takes an engine or a plain model. What lives here:
- `init()`: ranks from whichever launcher started us (deepspeed, torchrun, mpirun, srun, or none);
- `build_model()`: our decoder, partitioned from the start under ZeRO-3 (deepspeed.zero.Init);
- `load_weights()` / `iter_full_state()`: weights into and out of a possibly partitioned model,
  one module at a time, so no rank holds the whole model;
- `make_engine()`, checkpoint save/load with a `latest` pointer written only when every rank is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from .errors import ConfigError
from .faults import crash_point

# A JIT-compiled op (deepspeed_shm_comm on CPU) is built on first init; keep its cache per user, not in
# a default directory that concurrent jobs with other flags rebuild under each other.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "ligo_ds" / "torch_extensions"))

import deepspeed  # noqa: E402
from deepspeed.accelerator import get_accelerator  # noqa: E402


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


def init() -> Dist:
    """Join (or create) the process group. Idempotent."""
    launcher = _env_from_launcher()
    accel = get_accelerator()
    on_gpu = accel.device_name() == "cuda"
    if not dist.is_initialized():
        port = int(os.environ.get("MASTER_PORT", 29500))
        deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", auto_mpi_discovery=True,
                                   distributed_port=port, verbose=False)
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", 0)))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", world)))
    if on_gpu:
        accel.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        # Ranks on one machine share its cores; oversubscribed intra-op threads slow every rank down.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
        device = torch.device("cpu")
    return Dist(rank, world, local_rank, local_world, device, launcher)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, src: int = 0):
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# ---- models ---------------------------------------------------------------------------------------

def zero_stage(ds_config: dict) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


def build_model(make: Callable[[], torch.nn.Module], ds_config: dict, dtype: torch.dtype) -> torch.nn.Module:
    """Construct a model; under ZeRO-3 partitioned as it is built, so no rank ever holds all of it."""
    if zero_stage(ds_config) != 3:
        return make().to(dtype)
    # zero.Init takes its dtype from the config's bf16/fp16 sections, which we always write. An explicit
    # dtype is not passed: DeepSpeed 0.19.8 ignores dtype=float32 wherever the accelerator lacks fp16
    # (CPUs without AVX512-FP16/AMX-FP16, GPUs below sm_70) and builds in bf16, so an fp32 run would
    # start from bf16-rounded weights. The check below turns any such drift into an error instead of a
    # quietly less exact run.
    with deepspeed.zero.Init(config_dict_or_path=ds_config):
        model = make()
    built = {(p.ds_tensor if is_partitioned(p) else p).dtype for p in model.parameters()}
    if built - {dtype, torch.float32}:  # fp32 is allowed beside bf16: modules DeepSpeed keeps in fp32
        raise RuntimeError(f"ZeRO-3 built parameters in {sorted(map(str, built))} for a {dtype} run; the DeepSpeed "
                           f"config's bf16 section ({ds_config.get('bf16')}) must match the run's dtype")
    return model


def is_partitioned(param: torch.nn.Parameter) -> bool:
    return hasattr(param, "ds_id")


def full_shape(param: torch.nn.Parameter) -> torch.Size:
    return param.ds_shape if is_partitioned(param) else param.shape


@contextlib.contextmanager
def gathered(params: list[torch.nn.Parameter], modifier_rank: int | None = None):
    """Full tensors of (possibly partitioned) params inside the block; writes by `modifier_rank` persist."""
    if params and any(is_partitioned(p) for p in params):
        with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
            yield
    else:
        yield


def _modules_with_params(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    for prefix, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            yield prefix, module


def _write_own_partition(param: torch.nn.Parameter, full: torch.Tensor) -> None:
    """Keep this rank's slice of `full`: ZeRO-3 holds flat slice [r*n, (r+1)*n) of the zero-padded
    parameter on rank r of the parameter's group (partition_parameters.py, _partition_param)."""
    part = param.ds_tensor
    n = part.numel()
    start = dist.get_rank(group=param.ds_process_group) * n
    piece = full.reshape(-1)[start:start + n]
    part.zero_()
    part[:piece.numel()].copy_(piece)
    if param.ds_status.name == "AVAILABLE":  # a persistent parameter also keeps its full copy
        param.data.copy_(full.reshape(param.data.shape))


@torch.no_grad()
def load_weights(model: torch.nn.Module, get: Callable[[str, torch.Size], torch.Tensor], skip: set[str]) -> None:
    """Set every parameter to `get(name, full shape)`, one parameter at a time.

    Every rank calls `get` and, under ZeRO-3, keeps only its own partition: no communication, and no
    rank holds more than one full tensor of the model at a time. Tied parameters are set once.
    """
    for name, p in model.named_parameters():
        if name in skip:
            continue
        full = get(name, full_shape(p)).to(p.dtype)
        if is_partitioned(p):
            _write_own_partition(p, full)
        else:
            p.copy_(full)


def local_shard(param: torch.nn.Parameter) -> torch.Tensor:
    """What this rank stores of `param`: its ZeRO-3 partition, or the whole tensor."""
    return param.ds_tensor if is_partitioned(param) else param.data


@torch.no_grad()
def iter_full_state(model: torch.nn.Module, rank: int) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor on CPU) one module at a time; every rank must drive it, only rank 0 gets items.

    Tied parameters are yielded under their first name only.
    """
    seen: set[int] = set()
    for prefix, module in _modules_with_params(model):
        params = [(n, p) for n, p in module.named_parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for _, p in params)
        with gathered([p for _, p in params]):
            if rank == 0:
                for name, p in params:
                    yield (f"{prefix}.{name}" if prefix else name), p.detach().to("cpu", copy=True)


# ---- engine ---------------------------------------------------------------------------------------

# One TORCH_CUDA_ARCH_LIST entry as torch reads it: "9.0", "8.6+PTX", or arch-specific "9.0a" / "10.0f".
_ARCH = re.compile(r"(\d+)\.(\d+)([af]?)(\+PTX)?")


def deepspeed_arch_list(value: str) -> str:
    """TORCH_CUDA_ARCH_LIST rewritten so DeepSpeed 0.19.8's op builder can parse it.

    The builder reads each entry's minor version with int(), so the arch-specific entries torch accepts
    ("9.0a", set by some CUDA images, an H200's among them; README, environment variables) stop its
    fused Adam's JIT build with "invalid literal for int()". The suffix selects instructions (wgmma,
    tcgen05) that Adam's kernels do not use, so building for the base arch gives the same kernel.
    Entries that are no arch number at all (named arches such as "Hopper") are refused by name, since
    we cannot say what they would build."""
    out = []
    for token in value.replace(" ", ";").split(";"):
        if not token:
            continue
        m = _ARCH.fullmatch(token.strip())
        if m is None:
            raise ConfigError(f"TORCH_CUDA_ARCH_LIST={value!r}: entry {token!r} is not a compute capability "
                              "like 9.0 or 8.6+PTX, which DeepSpeed needs to build its fused Adam")
        major, minor, _, ptx = m.groups()
        arch = f"{major}.{minor}{ptx or ''}"
        if arch not in out:
            out.append(arch)
    return ";".join(out)


@contextlib.contextmanager
def arch_list_for_deepspeed(rank: int, on_cuda: bool):
    """While DeepSpeed builds its CUDA ops, give it an arch list it can parse; restore the user's after."""
    value = os.environ.get("TORCH_CUDA_ARCH_LIST")
    fixed = deepspeed_arch_list(value) if value is not None and on_cuda else value
    if fixed == value:
        yield
        return
    if rank == 0:
        print(f"TORCH_CUDA_ARCH_LIST={value!r} has entries DeepSpeed's op builder cannot parse; its CUDA ops "
              f"are built for {fixed!r} (restored afterwards)", flush=True)
    os.environ["TORCH_CUDA_ARCH_LIST"] = fixed
    try:
        yield
    finally:
        os.environ["TORCH_CUDA_ARCH_LIST"] = value


def make_engine(model: torch.nn.Module, param_groups: list[dict], ds_config: dict):
    rank = dist.get_rank() if dist.is_initialized() else 0
    with arch_list_for_deepspeed(rank, on_cuda=get_accelerator().device_name() == "cuda"):
        engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=param_groups, config=ds_config)
    return engine


def partition_report(engine) -> list[dict]:
    """Per rank: elements of parameters held (all, and trainable) and of optimizer state (the fp32
    master partition and Adam's two moments). Collective; every rank gets the list."""
    model = engine.module
    unique = {id(p): p for p in model.parameters()}.values()
    # Where each ZeRO stage keeps this rank's fp32 master partition (3: stage3.py; 1/2: stage_1_and_2.py).
    for attr in ("fp32_partitioned_groups_flat", "single_partition_of_fp32_groups"):
        if hasattr(engine.optimizer, attr):
            master = sum(t.numel() for t in getattr(engine.optimizer, attr))
            break
    else:
        inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
        master = sum(p.numel() for group in inner.param_groups for p in group["params"])
    mine = {
        "rank": dist.get_rank() if dist.is_initialized() else 0,
        "params_local": sum(local_shard(p).numel() for p in unique),
        "params_full": sum(full_shape(p).numel() for p in unique),
        "trainable_local": sum(local_shard(p).numel() for p in unique if p.requires_grad),
        "optimizer_local": 3 * master,
    }
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [mine]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out


def set_lr(engine, lr: float) -> None:
    for group in engine.optimizer.param_groups:
        group["lr"] = lr


def _unshare_steps(engine) -> None:
    """Give every optimizer state its own `step`. DeepSpeed 0.19.8's universal-checkpoint loader for ZeRO-3
    assigns one step tensor to all param groups; torch's AdamW increments it in place once per group, so
    the bias correction would run ahead by a step per group and step."""
    inner = getattr(engine.optimizer, "optimizer", None)
    for state in getattr(inner, "state", {}).values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


def _restore_weight_decay(engine, per_group: list[float]) -> None:
    """Re-apply each param group's weight decay. DeepSpeed 0.19.8's universal-checkpoint loader for ZeRO-3
    (stage3.py, load_hp_checkpoint_state_from_checkpoint_dir_stage3) copies the first group's settings onto
    every group, which would put decay on the norms and biases."""
    groups = engine.optimizer.param_groups
    assert len(groups) == len(per_group), (len(groups), len(per_group))
    for group, decay in zip(groups, per_group):
        group["weight_decay"] = decay


def grad_norm(engine) -> float | None:
    norm = engine.get_global_grad_norm()
    return None if norm is None else float(norm)


def save_checkpoint(engine, ckpt_dir: Path, tag: str, client_state: dict, rank: int) -> None:
    """Save every rank's shard, then, once all are on disk, point `latest` at `tag` (atomically).

    DeepSpeed's own `latest` is written without syncing the files it points to; ours moves only after
    every rank has fsynced its files and passed a barrier, so a crash never leaves it at a partial tag.
    """
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    crash_point("checkpoint")  # a no-op unless a reliability test asks
    os.sync()
    barrier()
    if rank == 0:
        # The manifest: which files make this checkpoint complete, and the world that wrote it.
        files = {str(p.relative_to(ckpt_dir / tag)): p.stat().st_size
                 for p in sorted((ckpt_dir / tag).rglob("*")) if p.is_file() and p.name != MANIFEST}
        manifest = {"tag": tag, "world_size": dist.get_world_size() if dist.is_initialized() else 1,
                    "zero_stage": engine.zero_optimization_stage(), "files": files}
        _write_synced(ckpt_dir / tag / MANIFEST, json.dumps(manifest, indent=1))
        tmp = ckpt_dir / f".latest.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(tag)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, ckpt_dir / "latest")
        fd = os.open(ckpt_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    barrier()


MANIFEST = "ligo_manifest.json"


def _write_synced(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(ckpt_dir: Path, tag: str) -> dict:
    """The manifest of a checkpoint, after checking every file it lists is there with its size."""
    path = ckpt_dir / tag / MANIFEST
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(ckpt_dir / tag)!r} has no {MANIFEST}: it was not completed by ligo_ds "
                          "(or was damaged); restore it or remove the directory and the `latest` pointer")
    manifest = json.loads(path.read_text())
    problems = []
    for name, size in manifest["files"].items():
        f = ckpt_dir / tag / name
        if not f.is_file():
            problems.append(f"missing {name}")
        elif f.stat().st_size != size:
            problems.append(f"{name} has {f.stat().st_size} bytes, {size} were written")
    if problems:
        raise ConfigError(f"checkpoint {str(ckpt_dir / tag)!r} is incomplete: {'; '.join(problems)}. Restore the "
                          "files, or point checkpoints/latest at an earlier complete tag")
    return manifest


def latest_tag(ckpt_dir: Path) -> str | None:
    path = ckpt_dir / "latest"
    return path.read_text().strip() if path.is_file() else None


def universal_info() -> dict:
    """What ds_to_universal asserts a checkpoint's client state holds."""
    from deepspeed.checkpoint.constants import (UNIVERSAL_CHECKPOINT_INFO, UNIVERSAL_CHECKPOINT_VERSION_KEY,
                                                UNIVERSAL_CHECKPOINT_VERSION_VALUE)

    return {UNIVERSAL_CHECKPOINT_INFO: {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE}}


def to_universal(ckpt_dir: Path, tag: str, rank: int) -> str:
    """Convert checkpoint `tag` to DeepSpeed's world-size-independent layout (once; rank 0 converts,
    everyone waits) and return the converted tag. The same conversion by hand:
        python -m deepspeed.checkpoint.ds_to_universal --input_folder RUN/checkpoints/TAG \
            --output_folder RUN/checkpoints/TAG_universal
    """
    out = f"{tag}_universal"
    done = ckpt_dir / out / "ligo_converted"
    failure = None
    if rank == 0 and not done.is_file():
        import shutil
        import sys

        shutil.rmtree(ckpt_dir / out, ignore_errors=True)
        result = subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                                 str(ckpt_dir / tag), "--output_folder", str(ckpt_dir / out), "--num_extract_workers",
                                 "1", "--num_merge_workers", "1"], capture_output=True, text=True)
        if result.returncode != 0:
            failure = f"converting {str(ckpt_dir / tag)!r} to a universal checkpoint failed:\n{result.stdout[-3000:]}" \
                      f"{result.stderr[-3000:]}"
        else:
            _write_synced(done, tag)
    failure = broadcast_object(failure)
    if failure:
        raise ConfigError(failure)
    return out


def load_checkpoint(engine, ckpt_dir: Path, tag: str) -> dict:
    """Load `tag` into `engine`; returns the client state. Param-group weight decay is ours and is kept
    (see _restore_weight_decay), and every optimizer state gets its own step (see _unshare_steps)."""
    decays = [group["weight_decay"] for group in engine.optimizer.param_groups]
    load_path, client_state = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    _restore_weight_decay(engine, decays)
    _unshare_steps(engine)
    if load_path is None:
        raise ConfigError(f"checkpoint {str(ckpt_dir / tag)!r} named by {str(ckpt_dir / 'latest')!r} "
                          "could not be loaded (missing or incomplete files)")
    return client_state


def fp32_state_from_checkpoint(ckpt_dir: Path, tag: str) -> dict[str, torch.Tensor]:
    """Full fp32 weights from ZeRO shards on disk, assembled in CPU memory (any stage)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    if not (ckpt_dir / tag).is_dir():
        raise ConfigError(f"no checkpoint {tag!r} in {str(ckpt_dir)!r}")
    return get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
