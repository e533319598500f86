"""A run's set-up and its end, shared by pretraining and the fit: join the process group, resolve the
DeepSpeed config, claim the run directory (or confirm that this is a resume of the same run), find the
checkpoint to resume from, and write the final weights as an HF checkpoint from every rank.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.order import DATA_ORDER
from ..data.reading import TokenData
from ..distributed import checkpoint, launch
from ..distributed.ds_config import ds_config_path, resolve_ds_config, zero_stage
from ..distributed.launch import Dist
from ..errors import ConfigError
from ..model import hub, tokenizer
from ..model.config import ModelConfig
from ..model.hf_io import write_checkpoint
from ..options import PretrainOptions, Schedule, load_json, to_flat
from .metrics import device_name
from .rundir import RunDir, data_identity, versions, write_json_atomic


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


def run_identity(
    opts: PretrainOptions, model_cfg: ModelConfig, data: TokenData, world: int, stage: int, dtype: str
) -> dict:
    """What must not change when a run resumes (logging cadence and the device's peak may)."""
    hf = {k: v for k, v in model_cfg.hf_config.items() if k not in ("dtype", "torch_dtype", "transformers_version")}
    s, o = opts.schedule, opts.optimizer
    return {
        "model": f"{Path(opts.model).resolve()} (config sha {_sha(hf)})",
        "data": data_identity(getattr(data, "spec", data.dir), _sha(data.identity())),
        "data_order": DATA_ORDER,
        "seq_len": opts.data.seq_len,
        "global_batch": opts.loop.global_batch(world),
        "total_steps": opts.total_steps(world),
        "lr": s.lr,
        "min_lr": s.min_lr,
        "warmup_steps": s.warmup_steps,
        # Only a non-cosine schedule adds a key, so runs written before schedules had names still resume.
        **({"schedule": s.shape()} if s.shape() else {}),
        "weight_decay": o.weight_decay,
        "beta1": o.beta1,
        "beta2": o.beta2,
        "grad_clip": opts.loop.grad_clip,
        **({"branched_from": str(Path(opts.branch_from).resolve())} if opts.branch_from else {}),
        "seed": opts.loop.seed,
        "zero_stage": stage,
        "dtype": dtype,
    }


def hub_record() -> dict:
    """The Hub ids this run's options named, with the commit each resolved to (hub.py)."""
    resolved = hub.resolutions()
    return {"hub": resolved} if resolved else {}


def check_data_fits(
    model_cfg: ModelConfig, model: str | Path, data: TokenData, seq_len: int, role: str, allow_mismatch: bool
) -> None:
    """Refuse data a model cannot read: ids beyond its vocabulary, another tokenizer than its directory's
    own (`role`: the flag or argument that named the model), windows longer than its positions."""
    data.check_model(model_cfg.vocab_size)
    tokenizer.check_matches(data.dir, data.meta, model, role, allow_mismatch)
    if seq_len > model_cfg.max_positions:
        raise ConfigError(f"--seq-len {seq_len} exceeds the model's {model_cfg.max_positions} positions")


def check_inputs(opts: PretrainOptions, model_cfg: ModelConfig, data: TokenData, role: str = "--model") -> None:
    """Refuse data the model cannot train on. `role`: the flag that named the model (the fit's is --target)."""
    check_data_fits(model_cfg, opts.model, data, opts.data.seq_len, role, opts.data.allow_tokenizer_mismatch)


def check_schedule(opts: PretrainOptions) -> None:
    """A run given in tokens has its length in steps only once the number of ranks is known: check its warmup
    then, before any process group starts (one given in steps was checked with its options)."""
    if opts.schedule.max_tokens is not None:
        steps = opts.total_steps(launch.planned_world_size())
        opts.schedule.check_warmup(steps, lambda name: "--" + name.replace("_", "-"))


def ds_config_for(opts: PretrainOptions, d: Dist, flags: dict[str, str] | None = None) -> tuple[dict, str]:
    """(the DeepSpeed config this run trains with, its dtype name), or a ConfigError naming the conflict.

    `flags`: the command-line names of the values where they differ from pretrain's (the fit's lr is
    --operator-lr), so a conflict with the user's DeepSpeed config names the flag the user typed.
    """
    user_ds_path = ds_config_path(opts.deepspeed.ds_config)
    user_ds = load_json(user_ds_path, "ds config")
    on_gpu = d.device.type == "cuda"
    dtype = opts.deepspeed.dtype
    dtype_name = dtype if dtype != "auto" else ("bf16" if on_gpu else "fp32")
    ds_config = resolve_ds_config(
        user_ds,
        where=str(user_ds_path),
        micro_batch=opts.loop.micro_batch,
        grad_accum=opts.loop.grad_accum,
        world_size=d.world_size,
        grad_clip=opts.loop.grad_clip,
        bf16=dtype_name == "bf16",
        lr=opts.schedule.lr,
        weight_decay=opts.optimizer.weight_decay,
        betas=(opts.optimizer.beta1, opts.optimizer.beta2),
        on_gpu=on_gpu,
        flags=flags,
    )
    return ds_config, dtype_name


def start(
    opts: PretrainOptions,
    model_cfg: ModelConfig,
    data: TokenData,
    *,
    extra_identity: dict | None = None,
    extra_record: dict | None = None,
    flags: dict[str, str] | None = None,
) -> Session:
    """Check the inputs, join the process group and claim opts.out; `flags`: see ds_config_for."""
    check_inputs(opts, model_cfg, data, (flags or {}).get("model", "--model"))
    check_schedule(opts)
    d = launch.init()
    if opts.data.verify_data == "checksum":  # each rank hashes its share of the shards
        launch.on_every_rank(lambda: data.verify(d.rank, d.world_size))
    ds_config, dtype_name = ds_config_for(opts, d, flags)
    identity = {
        **run_identity(opts, model_cfg, data, d.world_size, zero_stage(ds_config), dtype_name),
        **(extra_identity or {}),
    }
    run_dir = RunDir(opts.out)
    record = {
        "options": to_flat(opts),
        "model_config": model_cfg.to_hf(),
        "versions": versions(),
        "launcher": d.launcher,
        "world_size": d.world_size,
        "device": device_name(d.device),
        **hub_record(),
        **(extra_record or {}),
    }
    resuming = launch.on_rank0(d, lambda: run_dir.claim(identity, record))
    if d.is_main:
        write_json_atomic(run_dir.ds_config, ds_config)
    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    return Session(d, ds_config, dtype, run_dir, resuming, identity)


def plan_resume(s: Session) -> str | None:
    """The checkpoint tag to resume from, checked complete; None for a fresh start. Call before building
    the engine: a checkpoint written by another number of ranks is converted to DeepSpeed's universal
    layout and the engine is told to load that (the data position is a global sample count, so it
    carries over as long as the global batch is the same, which the run identity enforces)."""
    tag = checkpoint.latest_tag(s.run_dir.checkpoints) if s.resuming else None
    if tag is None:
        return None
    return _loadable(s, s.run_dir.checkpoints, tag)


def _loadable(s: Session, ckpt_dir: Path, tag: str) -> str:
    """`tag` in `ckpt_dir` checked complete, converted to the universal layout when another number of
    ranks wrote it (and the engine told to load that)."""
    manifest = checkpoint.read_manifest(ckpt_dir, tag)
    if manifest["world_size"] == s.d.world_size:
        return tag
    if s.d.is_main:
        print(
            f"checkpoint {tag} was written by {manifest['world_size']} ranks, resuming on {s.d.world_size}: "
            "converting it to a universal checkpoint",
            file=sys.stderr,
        )
    s.ds_config.setdefault("checkpoint", {})["load_universal"] = True
    return checkpoint.to_universal(ckpt_dir, tag, s.d.rank)


# What may differ between a run and the run it branched from: its length and the schedule after the
# branch point (check_branch holds the lr continuous).
BRANCH_MAY_DIFFER = ("total_steps", "min_lr", "schedule", "branched_from")


def plan_branch(s: Session, opts: PretrainOptions) -> tuple[Path, str]:
    """--branch-from RUN/checkpoints/TAG for a run starting fresh: (checkpoint directory, tag to load), after
    checking the other run is this one up to its length and schedule, and that the lr is continuous."""
    from .schedule import check_branch

    given = opts.branch_from
    ckpt = Path(given)
    run = ckpt.parent.parent
    if ckpt.parent.name != "checkpoints" or not (run / "config.json").is_file() or not ckpt.is_dir():
        raise ConfigError(
            f"--branch-from {given!r}: expected a checkpoint of a ligo_ds run, RUN_DIR/checkpoints/TAG "
            f"(a run's tags are listed in its checkpoints/ directory)"
        )
    theirs = json.loads((run / "config.json").read_text()).get("identity") or {}
    diffs = [
        f"{k}: {theirs.get(k)!r} there, {s.identity.get(k)!r} here"
        for k in sorted(set(theirs) | set(s.identity))
        if k not in BRANCH_MAY_DIFFER and theirs.get(k) != s.identity.get(k)
    ]
    if diffs:
        raise ConfigError(
            f"--branch-from {given!r}: that run differs from this one in more than its length and schedule: "
            f"{'; '.join(diffs)}"
        )
    if not re.fullmatch(r"step\d+", ckpt.name):
        raise ConfigError(f"--branch-from {given!r}: {ckpt.name!r} is not a checkpoint tag (stepN)")
    step = int(ckpt.name.removeprefix("step"))  # the trainer names each checkpoint by its step
    theirs_schedule = Schedule(
        max_steps=theirs["total_steps"],
        lr=theirs["lr"],
        min_lr=theirs["min_lr"],
        warmup_steps=theirs["warmup_steps"],
        **(theirs.get("schedule") or {}),
    )
    check_branch(step, theirs["total_steps"], theirs_schedule, s.identity["total_steps"], opts.schedule)
    return ckpt.parent, _loadable(s, ckpt.parent, ckpt.name)


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
        write_checkpoint(model_cfg, tensors, out, dtype=dtype, extra=tokenizer.export_files(data.dir, data.eos_id))
    elif collective:
        for _ in tensors:
            pass
    launch.barrier()
    return out
