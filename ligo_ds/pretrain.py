"""Pretraining under DeepSpeed: `run` (set up, resume) -> `fit` (the loop) -> export.

Used for the small model, the scratch baseline and the grown model alike. The batch for optimizer
step s on rank r, micro-step m, is global samples  S + m*W*b + r*b + [0, b)  with S the samples
consumed before step s, W the world size and b the micro-batch: each rank reads its own share and the
position in the data is the single integer S, saved in every checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed
from .config import ModelConfig
from .data import SampleOrder, TokenData, window_batch
from .errors import ConfigError
from .faults import crash_point
from .flops import peak_flops, train_flops_per_token
from .hf_io import CheckpointReader, hf_to_ours, tied_names, write_checkpoint
from .metrics import MetricsLog
from .model import Decoder
from .rundir import RunDir, data_identity, versions, write_json_atomic
from .train_config import PretrainConfig, ds_config_path, load_json, resolve_ds_config


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    samples: int = 0  # global training windows consumed: the position in the data
    tokens: int = 0
    flops: float = 0.0  # cumulative training FLOPs (flops.py), including any carried in (an operator fit)
    train_seconds: float = 0.0  # wall time inside training steps, summed over restarts


class StopRequest:
    """A request to checkpoint and stop: SIGTERM or SIGUSR1 to a rank, or the file `stop_file` appearing.

    The file is what a Slurm batch script's trap writes (launchers such as torchrun and the deepspeed
    runner do not pass signals on to the ranks reliably). Ranks agree at logging steps: one all-reduce
    of a flag, at points where the loop synchronises anyway.
    """

    def __init__(self, stop_file: Path, device: torch.device):
        self.stop_file, self.device, self.flag = stop_file, device, False
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGUSR1):
                signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.flag = True

    def agreed(self) -> bool:
        mine = torch.tensor(float(self.flag or self.stop_file.exists()), device=self.device)
        return distributed.all_reduce_sum(mine).item() > 0

    def consume(self, is_main: bool) -> None:
        if is_main:
            self.stop_file.unlink(missing_ok=True)


def lr_at(step: int, total: int, cfg: PretrainConfig) -> float:
    """Linear warmup to `lr` over warmup_steps, then cosine decay to the floor at `total`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.floor_lr + 0.5 * (cfg.lr - cfg.floor_lr) * (1 + math.cos(math.pi * progress))


def _sha(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def run_identity(cfg: PretrainConfig, model_cfg: ModelConfig, data: TokenData, world: int, stage: int,
                 dtype: str) -> dict:
    """What must not change when a run resumes."""
    hf = {k: v for k, v in model_cfg.hf_config.items() if k not in ("dtype", "torch_dtype", "transformers_version")}
    return {
        "model": f"{Path(cfg.model).resolve()} (config sha {_sha(hf)})",
        "data": data_identity(data.dir, _sha(data.meta)),
        "seq_len": cfg.seq_len,
        "global_batch": cfg.micro_batch * cfg.grad_accum * world,
        "total_steps": cfg.total_steps(world),
        **{k: getattr(cfg, k) for k in ("lr", "min_lr", "warmup_steps", "weight_decay", "beta1", "beta2",
                                         "grad_clip")},
        "seed": cfg.seed,
        "zero_stage": stage,
        "dtype": dtype,
    }


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (embeddings included, as nanoGPT), none on norms and biases."""
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        (decay if len(distributed.full_shape(p)) >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _check_inputs(cfg: PretrainConfig, model_cfg: ModelConfig, data: TokenData) -> None:
    data.check_model(model_cfg.vocab_size)
    if cfg.seq_len > model_cfg.max_positions:
        raise ConfigError(f"--seq-len {cfg.seq_len} exceeds the model's {model_cfg.max_positions} positions")


def on_rank0(d: distributed.Dist, fn):
    """Run `fn` on rank 0 and give every rank its result, or raise its ConfigError on every rank."""
    outcome = None
    if d.is_main:
        try:
            outcome = ("ok", fn())
        except ConfigError as e:
            outcome = ("error", str(e))
    outcome = distributed.broadcast_object(outcome)
    if outcome[0] == "error":
        raise ConfigError(outcome[1])
    return outcome[1]


@dataclass
class Session:
    """A process group joined, the DeepSpeed config resolved and the run directory claimed."""

    d: distributed.Dist
    ds_config: dict
    dtype: torch.dtype
    run_dir: RunDir
    resuming: bool


def ds_config_for(cfg: PretrainConfig, d: distributed.Dist,
                  flags: dict[str, str] | None = None) -> tuple[dict, str]:
    """(the DeepSpeed config this run trains with, its dtype name), or a ConfigError naming the conflict.

    `flags`: the command-line names of cfg's values where they differ from pretrain's (the fit's lr is
    --operator-lr), so a conflict with the user's DeepSpeed config names the flag the user typed.
    """
    user_ds_path = ds_config_path(cfg.ds_config)
    user_ds = load_json(user_ds_path, "ds config")
    on_gpu = d.device.type == "cuda"
    dtype_name = cfg.dtype if cfg.dtype != "auto" else ("bf16" if on_gpu else "fp32")
    ds_config = resolve_ds_config(
        user_ds, where=str(user_ds_path), micro_batch=cfg.micro_batch, grad_accum=cfg.grad_accum,
        world_size=d.world_size, grad_clip=cfg.grad_clip, bf16=dtype_name == "bf16", lr=cfg.lr,
        weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2), on_gpu=on_gpu, flags=flags)
    return ds_config, dtype_name


def start(cfg: PretrainConfig, model_cfg: ModelConfig, data: TokenData, *, extra_identity: dict | None = None,
          extra_record: dict | None = None, flags: dict[str, str] | None = None) -> Session:
    """`flags`: see ds_config_for."""
    _check_inputs(cfg, model_cfg, data)
    d = distributed.init()
    ds_config, dtype_name = ds_config_for(cfg, d, flags)
    identity = {**run_identity(cfg, model_cfg, data, d.world_size, distributed.zero_stage(ds_config), dtype_name),
                **(extra_identity or {})}
    run_dir = RunDir(cfg.out)
    record = {"options": cfg.to_dict(), "model_config": model_cfg.to_hf(), "versions": versions(),
              "launcher": d.launcher, "world_size": d.world_size, "device": distributed.device_name(d.device),
              **(extra_record or {})}
    resuming = on_rank0(d, lambda: run_dir.claim(identity, record))
    if d.is_main:
        write_json_atomic(run_dir.ds_config, ds_config)
    return Session(d, ds_config, torch.bfloat16 if dtype_name == "bf16" else torch.float32, run_dir, resuming)


def plan_resume(s: Session) -> str | None:
    """The checkpoint tag to resume from, checked complete; None for a fresh start. Call before building
    the engine: a checkpoint written by another number of ranks is converted to DeepSpeed's universal
    layout and the engine is told to load that (the data position is a global sample count, so it
    carries over as long as the global batch is the same, which the run identity enforces)."""
    tag = distributed.latest_tag(s.run_dir.checkpoints) if s.resuming else None
    if tag is None:
        return None
    manifest = distributed.read_manifest(s.run_dir.checkpoints, tag)
    if manifest["world_size"] == s.d.world_size:
        return tag
    if s.d.is_main:
        print(f"checkpoint {tag} was written by {manifest['world_size']} ranks, resuming on {s.d.world_size}: "
              "converting it to a universal checkpoint", file=sys.stderr)
    s.ds_config.setdefault("checkpoint", {})["load_universal"] = True
    return distributed.to_universal(s.run_dir.checkpoints, tag, s.d.rank)


def resume(engine, s: Session, tag: str | None) -> TrainState | None:
    """Load checkpoint `tag` (from plan_resume); restore RNG; drop metrics rows logged after it."""
    if tag is None:
        if s.resuming and s.d.is_main:
            s.run_dir.truncate_metrics(-1)  # died before its first checkpoint: start the log again
        return None
    client = distributed.load_checkpoint(engine, s.run_dir.checkpoints, tag)
    random.setstate(client["rng"]["python"])
    np.random.set_state(client["rng"]["numpy"])
    torch.set_rng_state(client["rng"]["torch"])
    if s.d.is_main:
        s.run_dir.truncate_metrics(client["train_state"]["step"])
        print(f"resuming {s.run_dir.root} from checkpoint {tag} (step {client['train_state']['step']})",
              file=sys.stderr)
    return TrainState(**client["train_state"])


WeightSource = Callable[[str, torch.Size], torch.Tensor]


def run(cfg: PretrainConfig, *, initial_flops: float = 0.0, initial_seconds: float = 0.0,
        init_weights: WeightSource | None = None, extra_identity: dict | None = None,
        stop_file: Path | None = None) -> Path | None:
    """Train (or resume) the run in cfg.out; returns the HF export directory, or None when it stopped
    early on request (SIGTERM/SIGUSR1 or `stop_file`, default RUN_DIR/STOP) after saving a checkpoint.

    Fresh runs start from `init_weights(name, shape)` when given (the grown model, computed on every
    rank), else from cfg.model's HF weights when it is a directory, else from a random init.
    """
    model_cfg = ModelConfig.from_file(cfg.model)
    data = TokenData(cfg.data)
    s = start(cfg, model_cfg, data, extra_identity=extra_identity)
    torch.manual_seed(cfg.seed)
    model = distributed.build_model(lambda: Decoder(model_cfg), s.ds_config, s.dtype)
    tag = plan_resume(s)
    if tag is None:
        if init_weights is None and Path(cfg.model).is_dir():
            init_weights = hf_weight_source(Path(cfg.model), model_cfg)
        if init_weights is not None:
            distributed.load_weights(model, init_weights, tied_names(model_cfg))
    engine = distributed.make_engine(model, param_groups(model, cfg.weight_decay), s.ds_config)
    state = resume(engine, s, tag) or TrainState(flops=initial_flops, train_seconds=initial_seconds)
    stop = StopRequest(Path(stop_file or s.run_dir.root / "STOP"), s.d.device)
    _, stopped = fit(engine, cfg, model_cfg, data, s.run_dir, s.d, state, stop=stop)
    if stopped:
        return None
    return export_hf(engine, model_cfg, s.run_dir, s.d, data, s.dtype)


def hf_weight_source(directory: Path, model_cfg: ModelConfig) -> WeightSource:
    reader = CheckpointReader(directory)
    return lambda name, shape: hf_to_ours(model_cfg, name, shape, reader.get)


@torch.no_grad()
def evaluate(engine, val: np.ndarray, cfg: PretrainConfig, d: distributed.Dist) -> float:
    """Mean loss over the first eval_samples validation windows, split across ranks.

    The set is the same at every evaluation and for every world size. Ranks with fewer windows run
    padded batches of weight zero: under ZeRO-3 every rank must take part in every forward.
    """
    T = cfg.seq_len
    n = min(cfg.eval_samples, (len(val) - 1) // T)
    if n < 1:
        raise ConfigError(f"validation split has {len(val)} tokens, fewer than one --seq-len {T} window")
    mine = list(range(d.rank, n, d.world_size))
    batches = math.ceil(math.ceil(n / d.world_size) / cfg.micro_batch)
    totals = torch.zeros(2, dtype=torch.float64, device=d.device)
    engine.eval()
    for b in range(batches):
        idx = mine[b * cfg.micro_batch:(b + 1) * cfg.micro_batch]
        real = bool(idx)
        ids, targets = window_batch(val, np.asarray(idx or [0], dtype=np.int64) * T, T)
        logits = engine(ids.to(d.device))
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.to(d.device).flatten(), reduction="sum")
        crash_point("eval")
        if real:
            totals += torch.stack([loss.double(), torch.tensor(targets.numel(), dtype=torch.float64, device=d.device)])
    engine.train()
    distributed.all_reduce_sum(totals)
    return (totals[0] / totals[1]).item()


def fit(engine, cfg: PretrainConfig, model_cfg: ModelConfig, data: TokenData, run_dir: RunDir,
        d: distributed.Dist, state: TrainState, *, extra_flops_per_step: float = 0.0,
        extra_metrics: Callable[[], dict] | None = None, stop: StopRequest | None = None) -> tuple[TrainState, bool]:
    """The training loop; every long stretch ends in a checkpoint, so a rerun continues exactly.

    `extra_flops_per_step` adds work that is not the model's own forward and backward (an operator
    producing the weights); `extra_metrics()` adds columns to each logged row (called on every rank).
    Returns the state and whether the run stopped early on request (after saving a checkpoint).
    """
    from tqdm import tqdm

    train, val = data.tokens("train"), data.tokens("val")
    order = SampleOrder(len(train), cfg.seq_len, cfg.seed)
    total = cfg.total_steps(d.world_size)
    b, W, T = cfg.micro_batch, d.world_size, cfg.seq_len
    per_step = b * cfg.grad_accum * W
    flops_per_token = train_flops_per_token(model_cfg, T)
    peak = peak_flops(distributed.device_name(d.device), cfg.peak_tflops)
    log = MetricsLog(run_dir.metrics, run_dir.tb, d.is_main)
    # Debugging aid: LIGO_DS_SAMPLE_LOG=PREFIX makes each rank append "step first count" for every batch it
    # reads to PREFIX.rankN, so the data order across restarts and world sizes can be audited.
    trace_prefix = os.environ.get("LIGO_DS_SAMPLE_LOG")
    trace = open(f"{trace_prefix}.rank{d.rank}", "a") if trace_prefix else None
    bar = tqdm(total=total, initial=state.step, disable=not d.is_main, desc="pretrain", unit="step",
               dynamic_ncols=True)

    if state.step == 0:  # FLOPs and seconds carried in (a grown run's fit) count from the first row on
        log.write({"step": 0, "samples": 0, "tokens": 0, "flops": state.flops,
                   "train_seconds": round(state.train_seconds, 4), "val_loss": evaluate(engine, val, cfg, d)})
    loss_acc = torch.zeros((), dtype=torch.float64, device=d.device)
    interval_steps, interval_tokens, interval_seconds = 0, 0, 0.0
    while state.step < total:
        start = time.perf_counter()
        lr = lr_at(state.step, total, cfg)
        distributed.set_lr(engine, lr)
        for m in range(cfg.grad_accum):
            first = state.samples + m * W * b + d.rank * b
            ids, targets = window_batch(train, order.starts(first, b), T)
            if trace:
                trace.write(f"{state.step} {first} {b}\n")
                trace.flush()
            loss = engine(ids.to(d.device, non_blocking=True), targets.to(d.device, non_blocking=True))
            engine.backward(loss)
            crash_point("step")
            engine.step()
            loss_acc += loss.detach().double()
        state.step += 1
        state.samples += per_step
        state.tokens += per_step * T
        state.flops += per_step * T * flops_per_token + extra_flops_per_step
        elapsed = time.perf_counter() - start
        state.train_seconds += elapsed
        interval_steps += 1
        interval_tokens += per_step * T
        interval_seconds += elapsed
        bar.update(1)

        last = state.step == total
        if state.step % cfg.log_every == 0 or last:
            mean_loss = distributed.all_reduce_sum(loss_acc).item() / (interval_steps * cfg.grad_accum * W)
            loss_acc.zero_()
            tokens_per_s = interval_tokens / max(interval_seconds, 1e-9)
            row = {"step": state.step, "samples": state.samples, "tokens": state.tokens, "flops": state.flops,
                   "train_seconds": round(state.train_seconds, 4), "loss": mean_loss, "lr": lr,
                   "grad_norm": distributed.grad_norm(engine), "tokens_per_s": tokens_per_s,
                   "mfu": None if peak is None else tokens_per_s * flops_per_token / (peak * W),
                   "peak_mem_gb": distributed.peak_memory_bytes(d.device) / 2**30,
                   **(extra_metrics() if extra_metrics else {})}
            if state.step % cfg.eval_every == 0 or last:
                row["val_loss"] = evaluate(engine, val, cfg, d)
            log.write(row)
            bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
            interval_steps, interval_tokens, interval_seconds = 0, 0, 0.0
        elif state.step % cfg.eval_every == 0:
            log.write({"step": state.step, "samples": state.samples, "tokens": state.tokens, "flops": state.flops,
                       "train_seconds": round(state.train_seconds, 4), "val_loss": evaluate(engine, val, cfg, d)})
        saved = state.step % cfg.save_every == 0 or last
        if saved:
            save(engine, run_dir, state, d)
        if stop is not None and not last and state.step % cfg.log_every == 0 and stop.agreed():
            if not saved:
                save(engine, run_dir, state, d)
            stop.consume(d.is_main)
            bar.close()
            log.close()
            if d.is_main:
                print(f"stopped on request at step {state.step} of {total}: checkpoint saved in "
                      f"{run_dir.checkpoints}; rerun the same command to continue", file=sys.stderr)
            return state, True
    bar.close()
    log.close()
    return state, False


def save(engine, run_dir: RunDir, state: TrainState, d: distributed.Dist) -> None:
    client = {"train_state": asdict(state),
              "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
              **distributed.universal_info()}
    distributed.save_checkpoint(engine, run_dir.checkpoints, f"step{state.step}", client, d.rank)


def export_dir_extras(data: TokenData, hf_dir: Path) -> None:
    """What makes an HF export usable on its own: the tokenizer it was trained with."""
    shutil.copy(data.dir / data.meta["tokenizer"], hf_dir / "tokenizer.json")


def export_hf(engine, model_cfg: ModelConfig, run_dir: RunDir, d: distributed.Dist, data: TokenData,
              dtype: torch.dtype) -> Path:
    """Stream the trained weights to RUN_DIR/hf one module at a time (gathered per module under ZeRO-3)."""
    write_hf_from_all_ranks(model_cfg, distributed.iter_full_state(engine.module, d.rank), run_dir.hf, d, dtype)
    if d.is_main:
        export_dir_extras(data, run_dir.hf)
    distributed.barrier()
    return run_dir.hf


def write_hf_from_all_ranks(model_cfg: ModelConfig, tensors, out: Path, d: distributed.Dist,
                            dtype: torch.dtype) -> None:
    """Rank 0 writes the HF checkpoint while the other ranks drive the same iterator, whose per-module
    ZeRO-3 gathers are collective."""
    if d.is_main:
        write_checkpoint(model_cfg, tensors, out, dtype=dtype)
    else:
        for _ in tensors:
            pass
