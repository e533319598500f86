"""A run's set-up and its end, whatever it trains: what the run is (`RunSpec`), the checks of its inputs,
the process group, the DeepSpeed config, the run identity and the claim of the run directory (or the
confirmation that this is a resume of the same run); at the end, the final weights as an HF checkpoint
written from every rank. Where a run starts from (a checkpoint, another run's) is resume.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.order import DATA_ORDER
from ..data.prepare import PrepareOptions
from ..data.reading import Data, TokenData
from ..distributed import launch
from ..distributed.ds_config import (
    DeepSpeed,
    Optimizer,
    check_schema,
    resolve_ds_config,
    validate_with_deepspeed,
    zero_stage,
)
from ..distributed.launch import Dist
from ..errors import ConfigError
from ..model import hub, tokenizer
from ..model.compute import Compute
from ..model.config import ModelConfig
from ..model.hf_save import write_checkpoint
from ..options import flag_of, identity_of, values_of
from .loop import Training
from .metrics import device_name
from .rundir import RunDir, absolute_paths, data_identity, versions, write_json_atomic


@dataclass(frozen=True)
class RunSpec:
    """One training run as the pipeline takes it (pipeline.py): where it writes, the model's config, what
    the trainer runs with and how the engine is built. Pretraining makes one from its options; the fit
    from its own, with the operator's schedule and decay."""

    out: str
    model: str  # the config (or HF directory) of the architecture trained: pretraining's model, the fit's target
    training: Training
    optimizer: Optimizer
    deepspeed: DeepSpeed
    compute: Compute
    # The flags that named `model`, `out` (and `branch_from`) in the command, for the messages.
    flags: Mapping[str, str]
    branch_from: str | None = None
    stop_file: Path | None = None  # default RUN_DIR/STOP
    hf_out: Path | None = None  # default RUN_DIR/hf
    start_flops: float = 0.0  # work carried in from before the run (grow's fit), counted from its first row
    start_seconds: float = 0.0

    def options(self) -> dict:
        """The options the run trains with, by name, as config.json records them (what `pretrain` takes)."""
        t = self.training
        return {
            "model": self.model,
            "out": self.out,
            **values_of(t.data),
            **values_of(t.loop),
            **values_of(t.schedule),
            "branch_from": self.branch_from,
            **values_of(self.optimizer),
            **values_of(t.cadence),
            **values_of(self.deepspeed),
            **values_of(self.compute),
            **values_of(t.health),
        }


@dataclass
class Session:
    """A process group joined, the DeepSpeed config resolved and the run directory claimed."""

    d: Dist
    ds_config: dict
    dtype: torch.dtype
    run_dir: RunDir
    resuming: bool
    identity: dict  # what the run directory was claimed with (RunDir.claim)


def _sha(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def model_identity(path: str | Path, cfg: ModelConfig) -> str:
    """How a run's identity names the model it trains: its path, and a hash of its config."""
    hf = {k: v for k, v in cfg.hf_config.items() if k not in ("dtype", "torch_dtype", "transformers_version")}
    return f"{Path(path).resolve()} (config sha {_sha(hf)})"


def run_identity(spec: RunSpec, data: TokenData, world: int, stage: int, dtype: str) -> dict:
    """What must not change when a run resumes, from the options declared part of it (declare.option's
    identity): the data, the global batch, the length and schedule, the optimizer, the ZeRO stage and dtype.
    The model's entry is its job's (the option that names it declares it)."""
    t = spec.training
    return {
        **identity_of(t.data, data=data_identity(getattr(data, "spec", data.dir), _sha(data.identity()))),
        "data_order": DATA_ORDER,
        **identity_of(t.loop, global_batch=t.loop.global_batch(world)),
        # Only a non-cosine schedule adds a key, so runs written before schedules had names still resume.
        **identity_of(t.schedule, total_steps=t.total_steps(world), schedule=t.schedule.shape() or None),
        **identity_of(spec.optimizer),
        **identity_of(spec.deepspeed, zero_stage=stage, dtype=dtype),
    }


def hub_record() -> dict:
    """The Hub ids this run's options named, with the commit each resolved to (model/hub.py)."""
    resolved = hub.resolutions()
    return {"hub": resolved} if resolved else {}


def check_tokenizer(data: TokenData, opts: Data, model: str | Path, role: str) -> None:
    """Refuse data made with another tokenizer than `model`'s own, when the model directory has one (`role`:
    the flag or argument that named the model) and the Data block `opts` does not allow it."""
    found = None if opts.allow_tokenizer_mismatch else tokenizer.mismatch(data.dir, data.meta, model, role)
    if found is not None:
        ours, theirs = found
        raise ConfigError(
            f"the data in {str(data.dir)!r} was tokenized with another tokenizer (fingerprint {ours}) than the "
            f"{role} model {str(model)!r} has (fingerprint {theirs}); prepare the data with "
            f"{flag_of(PrepareOptions, 'tokenizer')} {model}, or pass {opts.flag('allow_tokenizer_mismatch')} to "
            "train on it anyway"
        )


def check_data_fits(model_cfg: ModelConfig, model: str | Path, data: TokenData, opts: Data, role: str) -> None:
    """Refuse data a model cannot read: ids beyond its vocabulary, another tokenizer than its directory's
    own (`role`: the flag or argument that named the model), windows longer than its positions. `opts`:
    the Data block (its seq_len and allow_tokenizer_mismatch)."""
    data.check_model(model_cfg.vocab_size)
    check_tokenizer(data, opts, model, role)
    if opts.seq_len > model_cfg.max_positions:
        raise ConfigError(
            f"{opts.flag('seq_len')} {opts.seq_len} exceeds the model's {model_cfg.max_positions} positions"
        )


def check_schedule(training: Training) -> None:
    """A run given in tokens has its length in steps only once the number of ranks is known: check its warmup
    then, before any process group starts (one given in steps was checked with its options)."""
    from .schedule import check_fits

    if training.schedule.max_tokens is not None:
        check_fits(training.total_steps(launch.planned_world_size()), training.schedule)


def ds_config_for(spec: RunSpec, d: Dist) -> tuple[dict, str]:
    """(the DeepSpeed config this run trains with, its dtype name), or a ConfigError naming the conflict and
    the flag (as this run's command spells it) that set our side of it."""
    t, opt, ds = spec.training, spec.optimizer, spec.deepspeed
    on_gpu = d.device.type == "cuda"
    dtype_name = ds.dtype_on(d.device.type)
    flags = {
        **{k: t.loop.flag(k) for k in ("micro_batch", "grad_accum", "grad_clip")},
        **{k: t.schedule.flag(k) for k in ("lr", "min_lr", "warmup_steps")},
        "weight_decay": opt.flag("weight_decay"),
        "betas": f"{opt.flag('beta1')}/{opt.flag('beta2')}",
        "dtype": ds.flag("dtype"),
        "max_bad_steps": t.health.flag("max_bad_steps"),
    }
    user = ds.user_config()
    check_schema(user, str(ds.path()))  # before anything reads its sections
    ds_config = resolve_ds_config(
        user,
        where=str(ds.path()),
        micro_batch=t.loop.micro_batch,
        grad_accum=t.loop.grad_accum,
        world_size=d.world_size,
        grad_clip=t.loop.grad_clip,
        bf16=dtype_name == "bf16",
        lr=t.schedule.lr,
        weight_decay=opt.weight_decay,
        betas=(opt.beta1, opt.beta2),
        on_gpu=on_gpu,
        flags=flags,
    )
    validate_with_deepspeed(ds_config, str(ds.path()))
    return ds_config, dtype_name


def start(spec: RunSpec, cfg: ModelConfig, data: TokenData, identity: dict, record: dict) -> Session:
    """Check the inputs, join the process group and claim spec.out; `identity` and `record`: what the job
    adds to the run's identity and to its config.json."""
    check_data_fits(cfg, spec.model, data, spec.training.data, spec.flags["model"])
    check_schedule(spec.training)
    d = launch.init()
    if spec.training.data.verify_data == "checksum":  # each rank hashes its share of the shards
        launch.on_every_rank(lambda: data.verify(d.rank, d.world_size))
    ds_config, dtype_name = ds_config_for(spec, d)
    identity = {**run_identity(spec, data, d.world_size, zero_stage(ds_config), dtype_name), **identity}
    run_dir = RunDir(spec.out)
    record = {
        "options": absolute_paths(spec.options()),
        "cwd": os.getcwd(),
        "model_config": cfg.to_hf(),
        "versions": versions(),
        "launcher": d.launcher,
        "world_size": d.world_size,
        "device": device_name(d.device),
        **hub_record(),
        **record,
    }
    resuming = launch.on_rank0(d, lambda: run_dir.claim(identity, record, spec.flags["out"]))
    if d.is_main:
        write_json_atomic(run_dir.ds_config, ds_config)
    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    return Session(d, ds_config, dtype, run_dir, resuming, identity)


def write_hf(
    model_cfg: ModelConfig,
    tensors: Iterable[tuple[str, torch.Tensor]],
    out: Path,
    d: Dist,
    dtype: torch.dtype,
    data: TokenData,
    *,
    collective: bool = True,
) -> Path:
    """Write an HF checkpoint directory with the tokenizer the run trained with (tokenizer files and
    generation_config.json, eos being the data's document separator), from rank 0.

    `collective`: the other ranks drive the same iterator (ZeRO-3 gathers one module at a time, which every
    rank must take part in); otherwise only rank 0 reads it. Every rank returns once the files are there.
    """
    if d.is_main:
        # No guard: `out` is the run's own hf/ inside the run directory the run has claimed, and a refusal
        # on rank 0 alone would leave the other ranks waiting in the gather below.
        write_checkpoint(
            model_cfg, tensors, out, dtype=dtype, extra=tokenizer.export_files(data.dir, data.eos_id), guard=False
        )
    elif collective:
        for _ in tensors:
            pass
    launch.barrier()
    return out
