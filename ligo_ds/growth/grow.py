"""`ligo-ds grow`: fit the operator, hand the grown model to DeepSpeed pretraining, train it on.

    RUN_DIR/fit/      the operator fit (checkpoints, metrics, partition.json)
    RUN_DIR/grown/    the grown model as an HF checkpoint
    RUN_DIR/train/    pretraining of the grown model (checkpoints, metrics, hf/)

Hand-off: in the same process the fitted operator produces the target's weights one tensor at a time
on every rank, and each rank keeps only its own ZeRO-3 partition of them (partition.load_weights), so
no rank ever holds the whole target. Rerunning the command resumes in whichever phase it stopped: a
finished fit is not redone, and once pretraining has a checkpoint the operator is not needed at all
(a restart between the two loads RUN_DIR/grown/ the same per-partition way). The pretraining metrics
count FLOPs from the start of the fit, so a grown run compares with a scratch run on one axis.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch

from ..distributed import launch
from ..errors import ConfigError
from ..faults import crash_point
from ..options import Compute, GrowOptions, Health, to_flat
from ..training import pretrain, session
from ..training.rundir import read_metrics
from . import fit

# What a fit's resume may change without changing the grown model: how often it logs, evaluates and saves,
# and a waiver that checks nothing about the weights.
_CADENCE = (
    "eval_every",
    "eval_samples",
    "save_every",
    "log_every",
    "peak_tflops",
    "allow_tokenizer_mismatch",
    "verify_data",
    # what a run does when training goes wrong: policies, not the weights' recipe
    *(f.name for f in fields(Health)),
    # how the forward and backward run: the same numbers within float rounding
    *(f.name for f in fields(Compute)),
)


def _grown_weights(operator):
    """(name, shape) -> tensor for the target model, produced block by block (one block cached)."""
    cache: dict = {"block": None, "tensors": None}
    globals_ = {}
    depth = operator.depth()

    def get(name: str, shape: torch.Size) -> torch.Tensor:
        with torch.no_grad():
            if not name.startswith("blocks."):
                if not globals_:
                    globals_.update(operator.global_weights())
                return globals_[name]
            _, index, rest = name.split(".", 2)
            if cache["block"] != int(index):
                cache["block"], cache["tensors"] = int(index), operator.block(int(index), depth)
            return cache["tensors"][rest]

    return get


def _fit_totals(fit_dir: Path) -> tuple[float, float]:
    """(FLOPs, seconds) the finished fit spent, from its metrics."""
    rows = read_metrics(fit_dir / "metrics.jsonl") if (fit_dir / "metrics.jsonl").is_file() else []
    return (rows[-1]["flops"], rows[-1]["train_seconds"]) if rows else (0.0, 0.0)


def run(opts: GrowOptions) -> Path | None:
    """Returns the trained model's HF directory, or None when a phase stopped early on request
    (RUN_DIR/STOP, SIGTERM or SIGUSR1) after checkpointing."""
    out = Path(opts.out)
    fit_opts, train_opts = opts.fit_phase(), opts.train_phase()
    train_dir = Path(train_opts.out)
    grown = out / "grown"
    # What the grown model came from; logging and saving cadence may change on a resume.
    identity = {"grown_from": {k: v for k, v in to_flat(fit_opts).items() if k not in _CADENCE}}
    if (train_dir / "checkpoints" / "latest").is_file():
        if not (grown / "config.json").is_file():
            raise ConfigError(
                f"{str(train_dir)!r} has checkpoints but {str(grown)!r} is missing; the run directory is damaged"
            )
        flops, seconds = _fit_totals(out / "fit")
        return pretrain.run(
            train_opts, initial_flops=flops, initial_seconds=seconds, extra_identity=identity, stop_file=out / "STOP"
        )
    session.check_schedule(train_opts)
    # The training phase's DeepSpeed config is checked now (the fit checks its own as it starts): a conflict
    # found only after the fit would waste it.
    session.ds_config_for(train_opts, launch.init())
    result = fit.run(
        fit_opts,
        hf_out=grown,
        keep_operator=True,
        stop_file=out / "STOP",
        micro_batch_flag=opts.fit_micro_batch_flag(),
        checkpointing_flag="--fit-activation-checkpointing",
    )
    if result.stopped:
        return None
    crash_point("handoff")
    init = _grown_weights(result.operator) if result.operator is not None else None
    hf = pretrain.run(
        train_opts,
        initial_flops=result.flops,
        initial_seconds=result.seconds,
        init_weights=init,
        extra_identity=identity,
        stop_file=out / "STOP",
    )
    launch.barrier()
    return hf
