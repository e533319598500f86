"""Weights into and out of a model that ZeRO-3 may have partitioned, one tensor or one module at a time,
so that no rank ever holds the whole model."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist


def is_partitioned(param: torch.nn.Parameter) -> bool:
    return hasattr(param, "ds_id")


def full_shape(param: torch.nn.Parameter) -> torch.Size:
    return param.ds_shape if is_partitioned(param) else param.shape


def local_shard(param: torch.nn.Parameter) -> torch.Tensor:
    """What this rank stores of `param`: its ZeRO-3 partition, or the whole tensor."""
    return param.ds_tensor if is_partitioned(param) else param.data


@contextlib.contextmanager
def gathered(params: list[torch.nn.Parameter], modifier_rank: int | None = None):
    """Full tensors of (possibly partitioned) params inside the block; writes by `modifier_rank` persist."""
    if params and any(is_partitioned(p) for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
            yield
    else:
        yield


def _write_own_partition(param: torch.nn.Parameter, full: torch.Tensor) -> None:
    """Keep this rank's slice of `full`: ZeRO-3 holds flat slice [r*n, (r+1)*n) of the zero-padded
    parameter on rank r of the parameter's group (DeepSpeed's partition_parameters._partition_param)."""
    part = param.ds_tensor
    n = part.numel()
    start = dist.get_rank(group=param.ds_process_group) * n
    piece = full.reshape(-1)[start : start + n]
    part.zero_()
    part[: piece.numel()].copy_(piece)
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


def _modules_with_params(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    for prefix, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            yield prefix, module


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
