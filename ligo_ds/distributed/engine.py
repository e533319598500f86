"""Models built under ZeRO, the DeepSpeed engine, and what a training step reads from it."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable

import torch
import torch.distributed as dist

from ..errors import ConfigError
from .ds_config import zero_stage
from .partition import full_shape, is_partitioned, local_shard


def build_model(make: Callable[[], torch.nn.Module], ds_config: dict, dtype: torch.dtype) -> torch.nn.Module:
    """Construct a model; under ZeRO-3 partitioned as it is built, so no rank ever holds all of it."""
    if zero_stage(ds_config) != 3:
        return make().to(dtype)
    import deepspeed

    # zero.Init takes its dtype from the config's bf16/fp16 sections, which we always write. An explicit
    # dtype is not passed: DeepSpeed 0.19.8 ignores dtype=float32 wherever the accelerator lacks fp16
    # (CPUs without AVX512-FP16/AMX-FP16, GPUs below sm_70) and builds in bf16, so an fp32 run would
    # start from bf16-rounded weights. The check below turns any such drift into an error instead of a
    # quietly less exact run.
    with deepspeed.zero.Init(config_dict_or_path=ds_config):
        model = make()
    built = {(p.ds_tensor if is_partitioned(p) else p).dtype for p in model.parameters()}
    if built - {dtype, torch.float32}:  # fp32 is allowed beside bf16: modules DeepSpeed keeps in fp32
        raise RuntimeError(
            f"ZeRO-3 built parameters in {sorted(map(str, built))} for a {dtype} run; the DeepSpeed "
            f"config's bf16 section ({ds_config.get('bf16')}) must match the run's dtype"
        )
    return model


def gather_whole(modules: list[torch.nn.Module], ds_config: dict) -> None:
    """Under ZeRO-3, gather each of `modules` whole, by hooks around its own call, instead of by hooks around
    each of its submodules' calls (a ZeRO-3 "leaf module"). Then nothing of ZeRO-3 runs inside the module's
    forward: what selective checkpointing recomputes there is the model's ops alone, and torch.compile
    sees a forward without graph breaks. Call it before make_engine, which registers the hooks."""
    if zero_stage(ds_config) != 3:
        return
    from deepspeed.utils import set_z3_leaf_module

    for module in modules:
        set_z3_leaf_module(module, True)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (embeddings included, as nanoGPT), none on norms and biases."""
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        (decay if len(full_shape(p)) >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# One TORCH_CUDA_ARCH_LIST entry as torch reads it: "9.0", "8.6+PTX", or arch-specific "9.0a" / "10.0f".
_ARCH = re.compile(r"(\d+)\.(\d+)([af]?)(\+PTX)?")


def deepspeed_arch_list(value: str) -> str:
    """TORCH_CUDA_ARCH_LIST rewritten so DeepSpeed 0.19.8's op builder can parse it.

    The builder reads each entry's minor version with int(), so the arch-specific entries torch accepts
    ("9.0a", set by some CUDA images, an H200's among them) stop its fused Adam's JIT build with "invalid
    literal for int()". The suffix selects instructions (wgmma, tcgen05) that Adam's kernels do not use,
    so building for the base arch gives the same kernel. Entries that are no arch number at all (named
    arches such as "Hopper") are refused by name, since we cannot say what they would build."""
    out = []
    for token in value.replace(" ", ";").split(";"):
        if not token:
            continue
        m = _ARCH.fullmatch(token.strip())
        if m is None:
            raise ConfigError(
                f"TORCH_CUDA_ARCH_LIST={value!r}: entry {token!r} is not a compute capability "
                "like 9.0 or 8.6+PTX, which DeepSpeed needs to build its fused Adam"
            )
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
        print(
            f"TORCH_CUDA_ARCH_LIST={value!r} has entries DeepSpeed's op builder cannot parse; its CUDA ops "
            f"are built for {fixed!r} (restored afterwards)",
            flush=True,
        )
    os.environ["TORCH_CUDA_ARCH_LIST"] = fixed
    try:
        yield
    finally:
        os.environ["TORCH_CUDA_ARCH_LIST"] = value


def make_engine(model: torch.nn.Module, groups: list[dict], ds_config: dict):
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    rank = dist.get_rank() if dist.is_initialized() else 0
    with arch_list_for_deepspeed(rank, on_cuda=get_accelerator().device_name() == "cuda"):
        engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=ds_config)
    return engine


def set_lr(engine, lr: float) -> None:
    for group in engine.optimizer.param_groups:
        group["lr"] = lr


def steps_skipped(engine) -> int:
    """Optimizer steps DeepSpeed has skipped so far because the gradient norm was NaN or infinite (the
    check is all-reduced, so every rank counts the same steps)."""
    return engine.skipped_steps


def grad_norm(engine) -> float | None:
    norm = engine.get_global_grad_norm()
    return None if norm is None else float(norm)


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
