"""Pretraining: the decoder built (partitioned under ZeRO-3), started from its weights, trained by the run
pipeline and exported. Used for the small model, the scratch baseline and the grown model alike
(`ligo-ds pretrain`, and grow's training phase)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.reading import Data
from ..distributed import engine as ds_engine
from ..distributed import partition
from ..distributed.ds_config import DeepSpeed, Optimizer
from ..model.compute import Compute
from ..model.config import ModelConfig
from ..model.decoder import Decoder
from ..model.families import tied_names
from ..model.hf_load import SourceWeights
from ..options import Command, block, flag_name, identity_of, option
from . import pipeline
from .cadence import Cadence
from .health import Health
from .loop import Loop, Training
from .pipeline import Job
from .schedule import Schedule
from .session import RunSpec, Session, model_identity

WeightSource = Callable[[str, torch.Size], torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class PretrainOptions(Command):
    """A training run of the decoder."""

    model: str = option(
        help="HF config.json (train from scratch) or HF checkpoint directory (continue pretraining it)",
        metavar="CONFIG_OR_DIR",
        hub="model",
        identity="model",  # its path and config (session.model_identity)
    )
    out: str = option(
        help="RUN_DIR; rerunning the same command on it resumes from its latest checkpoint",
        metavar="RUN_DIR",
        identity=False,
    )
    data: Data = block(Data)
    loop: Loop = block(Loop)
    schedule: Schedule = block(Schedule)
    branch_from: str | None = option(
        None,
        "start from another run's checkpoint (weights, optimizer state, data position) and train it to this "
        f"run's length: RUN_DIR/checkpoints/TAG from the stable phase of a {flag_name('schedule')} wsd run, the "
        "same run up to its length and schedule",
        metavar="CHECKPOINT",
        identity="branched_from",
    )
    optimizer: Optimizer = block(Optimizer)
    cadence: Cadence = block(Cadence)
    deepspeed: DeepSpeed = block(DeepSpeed)
    compute: Compute = block(Compute)
    health: Health = block(Health)

    def training(self) -> Training:
        return Training(self.data, self.loop, self.schedule, self.cadence, self.health)

    def total_steps(self, world_size: int) -> int:
        return self.training().total_steps(world_size)

    def spec(self, **more) -> RunSpec:
        """The run as the pipeline takes it; `more`: RunSpec's start and end settings (grow's)."""
        return RunSpec(
            out=self.out,
            model=self.model,
            training=self.training(),
            optimizer=self.optimizer,
            deepspeed=self.deepspeed,
            compute=self.compute,
            flags={name: self.flag(name) for name in ("model", "out", "branch_from")},
            branch_from=self.branch_from,
            **more,
        )


def hf_weight_source(directory: Path) -> WeightSource:
    """An HF checkpoint's weights one tensor at a time, in any layout load_model reads (a base-model file's
    names without the class prefix included), checked against its config first."""
    weights = SourceWeights(directory)
    return lambda name, shape: weights[name]


class DecoderJob(Job):
    """The decoder of `opts.model`, started from `init_weights(name, shape)` when given (grow's grown model,
    computed on every rank), else from the model's HF weights when it is a directory, else at random."""

    def __init__(self, opts: PretrainOptions, cfg: ModelConfig, init_weights: WeightSource | None, identity: dict):
        self.opts, self.cfg, self.init_weights = opts, cfg, init_weights
        branched = str(Path(opts.branch_from).resolve()) if opts.branch_from else None
        self.identity = {**identity_of(opts, model=model_identity(opts.model, cfg), branched_from=branched), **identity}
        self.record = {}

    def build(self, s: Session) -> torch.nn.Module:
        torch.manual_seed(self.opts.loop.seed)
        c = self.opts.compute
        model = ds_engine.build_model(
            lambda: Decoder(self.cfg, c.activation_checkpointing, c.loss_chunk), s.ds_config, s.dtype
        )
        if c.activation_checkpointing != "none" or c.compile:
            # a block's recomputed or compiled forward must not contain ZeRO-3's per-submodule hooks
            ds_engine.gather_whole(list(model.blocks), s.ds_config)
        if c.compile:
            model.compile_blocks()
        return model

    def initialise(self, model: torch.nn.Module) -> None:
        init = self.init_weights
        if init is None and Path(self.opts.model).is_dir():
            init = hf_weight_source(Path(self.opts.model))
        if init is not None:
            partition.load_weights(model, init, tied_names(self.cfg))

    def param_groups(self, model: torch.nn.Module) -> list[dict]:
        return ds_engine.param_groups(model, self.opts.optimizer.weight_decay)

    def tensors(self, engine, s: Session):
        return partition.iter_full_state(engine.module, s.d.rank)


def pretrain(
    opts: PretrainOptions,
    *,
    start_flops: float = 0.0,
    start_seconds: float = 0.0,
    init_weights: WeightSource | None = None,
    identity: dict | None = None,
    stop_file: Path | None = None,
) -> Path | None:
    """Train (or resume) the run in opts.out; returns the HF export directory, or None when it stopped
    early on request (SIGTERM/SIGUSR1 or `stop_file`, default RUN_DIR/STOP) after saving a checkpoint.

    `start_flops` and `start_seconds` are carried in from earlier work (the operator fit); `identity`
    adds to the run's identity (what a grown model came from).
    """
    cfg = ModelConfig.from_file(opts.model)
    opts = dataclasses.replace(opts, data=opts.data.for_model(cfg.max_positions))
    data = opts.data.open()
    job = DecoderJob(opts, cfg, init_weights, identity or {})
    spec = opts.spec(start_flops=start_flops, start_seconds=start_seconds, stop_file=stop_file)
    return pipeline.run(spec, job, data).hf
