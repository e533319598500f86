"""Fitting the LiGO operator on the large model's own language-modelling loss (`ligo-ds fit`, and grow's
first phase).

Only the operator's coefficients train; the source weights are frozen parameters. Under ZeRO-3 both are
partitioned across ranks (each rank holds about 1/N of them and of the optimizer state), and the large
model's weights are produced block by block inside its forward, with activation checkpointing. The loop,
run directory, checkpoints, auto-resume and metrics are the run pipeline's (training/pipeline.py): the fit
is a `Job` of it, whose metrics add how far each operator group moved from its initialisation.

`--steps 0` writes the initialisation alone: the classic heuristics (stacking, interpolation, Net2Net)
as an ordinary grown model, with no DeepSpeed engine.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..data.reading import Data, TokenData
from ..distributed import launch
from ..distributed.ds_config import DeepSpeed, Optimizer, zero_stage
from ..errors import ConfigError
from ..model.compute import Compute
from ..model.config import ModelConfig
from ..model.hf_load import SourceWeights
from ..options import Block, Command, above, at_least, block, from_values, option, to_flat
from ..training import pipeline, session
from ..training.cadence import Cadence
from ..training.health import Health
from ..training.loop import Loop, Training
from ..training.rundir import RunDir, absolute_paths, source_record, versions
from ..training.schedule import Schedule
from ..training.session import RunSpec
from .fit_job import FitJob, FitSetup
from .grown import iter_grown_state
from .operator import LiGOOperator, meta_operator
from .spec import Growth, GrowthSpec


@dataclass(frozen=True, kw_only=True)
class OperatorFit(Block):
    """Fitting the operator: only its coefficients train, with their own schedule and decay."""

    steps: int = option(
        100, "operator gradient steps; 0 writes the initialisation alone (the heuristics)", check=at_least(0)
    )
    operator_lr: float = option(1e-3, "operator peak learning rate", check=above(0))
    operator_min_lr: float | None = option(
        None, "operator cosine floor", shown_default="operator-lr / 10", check=at_least(0)
    )
    operator_warmup: int | None = option(
        None, "operator warmup steps", shown_default="a tenth of the fit, at most 100", check=at_least(0)
    )
    operator_weight_decay: float = option(
        0.0, "AdamW decay on the operator (decay pulls new channels towards zero)", check=at_least(0)
    )

    def check(self) -> None:
        flag = self.flag
        if self.operator_min_lr is not None and self.operator_min_lr > self.operator_lr:
            raise ConfigError(
                f"learning rates must satisfy 0 <= {flag('operator_min_lr')} ({self.operator_min_lr}) "
                f"<= {flag('operator_lr')} ({self.operator_lr})"
            )
        if self.steps > 0 and self.operator_warmup is not None and self.operator_warmup > self.steps:
            raise ConfigError(
                f"{flag('operator_warmup')} {self.operator_warmup} is longer than the fit ({flag('steps')} "
                f"{self.steps}): the operator's learning rate would never reach its peak"
            )

    def schedule(self) -> Schedule:
        """The fit's schedule as the trainer takes it (a fit of 0 steps runs no loop), each value still named
        by the flag that set it."""
        return Schedule(
            max_steps=max(1, self.steps),
            lr=self.operator_lr,
            min_lr=self.operator_min_lr,
            # a fit of 0 steps warms up nothing; None: the schedule's default (a tenth, at most 100)
            warmup_steps=None if self.operator_warmup is None else min(self.operator_warmup, max(1, self.steps)),
            flags={
                "max_steps": self.flag("steps"),
                "lr": self.flag("operator_lr"),
                "min_lr": self.flag("operator_min_lr"),
                "warmup_steps": self.flag("operator_warmup"),
            },
        )

    def optimizer(self) -> Optimizer:
        return Optimizer(
            weight_decay=self.operator_weight_decay, flags={"weight_decay": self.flag("operator_weight_decay")}
        )


@dataclass(frozen=True, kw_only=True)
class FitOptions(Command):
    growth: Growth = block(Growth)
    out: str = option(help="RUN_DIR; rerunning the same command resumes the fit", metavar="RUN_DIR", identity=False)
    fit: OperatorFit = block(OperatorFit)
    data: Data = block(Data)
    loop: Loop = block(Loop)
    cadence: Cadence = block(Cadence, eval_every=25, save_every=50, log_every=5)
    deepspeed: DeepSpeed = block(DeepSpeed, ds_config="zero3")
    # full: a block's weights are produced again in the backward instead of kept, one block's alive at a time
    compute: Compute = block(Compute, activation_checkpointing="full")
    health: Health = block(Health)

    def spec(self) -> GrowthSpec:
        """The operator's specification; its random draws follow the run's seed."""
        return self.growth.spec(seed=self.loop.seed)

    def training(self) -> Training:
        """The fit's loop as the trainer takes it: the operator's schedule."""
        return Training(self.data, self.loop, self.fit.schedule(), self.cadence, self.health)

    def run_spec(self, hf_out: Path | None, stop_file: Path | None) -> RunSpec:
        """The fit as the run pipeline takes it: the target's shape, the operator's schedule and decay."""
        return RunSpec(
            out=self.out,
            model=self.growth.target,
            training=self.training(),
            optimizer=self.fit.optimizer(),
            deepspeed=self.deepspeed,
            compute=self.compute,
            flags={"model": self.growth.flag("target"), "out": self.flag("out")},
            stop_file=stop_file,
            hf_out=hf_out,
        )


def build_operator(opts: FitOptions) -> LiGOOperator:
    """The operator from the source checkpoint, unpartitioned (--steps 0, and export)."""
    source = SourceWeights(opts.growth.source)
    return LiGOOperator(source, source.cfg, ModelConfig.from_file(opts.growth.target), opts.spec())


def check_compute(opts: FitOptions) -> None:
    """Refuse selective checkpointing in a ZeRO-3 fit. A block's region recomputed in the backward holds
    the production of its weights, whose operator modules ZeRO-3 gathers and releases by hooks inside
    that region; selective checkpointing replays the region op for op, and the hooks' ops differ between
    the forward and the replay (DeepSpeed 0.19.8, torch 2.13: "aten.empty.memory_format encountered during
    backward but not found in storage"). Pretraining has no such hooks inside a block (gather_whole)."""
    c, ds = opts.compute, opts.deepspeed
    if c.activation_checkpointing != "selective":
        return
    if zero_stage(ds.user_config()) == 3:
        raise ConfigError(
            f"{c.flag('activation_checkpointing')} selective cannot run in a fit under ZeRO-3 "
            f"({ds.flag('ds_config')} {ds.ds_config}): ZeRO-3 gathers the operator's weights inside each "
            "block's recomputed region; use full or none, or ZeRO-1/2"
        )


@dataclass
class FitResult:
    hf: Path  # the grown model as an HF checkpoint
    flops: float  # the fit's cumulative FLOPs (0 for --steps 0)
    seconds: float  # the fit's wall time inside training steps
    operator: LiGOOperator | None  # the fitted operator, still partitioned, when kept for a hand-off
    stopped: bool = False  # stopped early on request, after a checkpoint; nothing was written


def fit(
    opts: FitOptions, *, hf_out: str | Path | None = None, keep_operator: bool = False, stop_file: Path | None = None
) -> FitResult:
    """Fit (or resume fitting) the operator; write the grown model to `hf_out` (default RUN_DIR/hf)."""
    target = ModelConfig.from_file(opts.growth.target)
    opts = dataclasses.replace(opts, data=opts.data.for_model(target.max_positions))
    data = opts.data.open()
    spec = opts.spec()
    # The source's weights were trained on its tokenizer's ids (the target, a config, checks at session.start)
    g = opts.growth
    session.check_tokenizer(data, opts.data, g.source, g.flag("source"))
    # Before anything is claimed or written: a NaN in the source makes every produced weight NaN, which the
    # fit would report as divergence, and a fit of 0 steps would write out.
    if Path(g.source).is_file():
        raise ConfigError(
            f"{g.flag('source')} {g.source!r} is a config file; expected a trained model's checkpoint directory (its "
            "weights are what grows)"
        )
    SourceWeights(g.source).check_finite()
    if opts.fit.steps == 0:
        # No operator is kept: a hand-off reads the grown model back from disk, tensor by tensor, on every rank.
        return FitResult(_initialisation_only(opts, target, data, hf_out), 0.0, 0.0, None)
    check_compute(opts)
    setup = FitSetup(g, opts.loop, opts.compute, opts.data.seq_len, opts.fit.steps, opts.fit.operator_weight_decay)
    job = FitJob(setup, target, ModelConfig.from_file(g.source), spec, to_flat(opts))
    hf = Path(hf_out) if hf_out is not None else None
    outcome = pipeline.run(opts.run_spec(hf, stop_file), job, data)
    state = outcome.state
    if outcome.hf is None:
        return FitResult(hf or RunDir(opts.out).hf, state.flops, state.train_seconds, None, stopped=True)
    operator = outcome.engine.module.operator if keep_operator else None
    return FitResult(outcome.hf, state.flops, state.train_seconds, operator)


def _initialisation_only(opts: FitOptions, target: ModelConfig, data: TokenData, hf_out: str | Path | None) -> Path:
    """A fit of 0 steps: no engine; rank 0 builds the initialised operator and writes its model (the heuristics)."""
    d = launch.init()
    g, spec = opts.growth, opts.spec()
    run_dir = RunDir(opts.out)
    shapes = meta_operator(ModelConfig.from_file(g.source), target, spec)
    identity = {
        "target": str(Path(g.target).resolve()),
        "data": str(data.dir.resolve()),
        "source": str(Path(g.source).resolve()),
        "growth": asdict(spec),
        "fit_steps": opts.fit.steps,
    }
    record = {
        "fit": absolute_paths(to_flat(opts)),
        "cwd": os.getcwd(),
        **source_record(g.source),
        "model_config": target.to_hf(),
        "versions": versions(),
        "operator_params": shapes.param_counts(),
        **session.hub_record(),
    }
    launch.on_rank0(d, lambda: run_dir.claim(identity, record, opts.flag("out")))
    hf = Path(hf_out or run_dir.hf)
    tensors = iter_grown_state(build_operator(opts)) if d.is_main else iter(())
    return session.write_hf(target, tensors, hf, d, torch.float32, data, collective=False)


def grown_tensors(fit_record: dict, state: dict[str, torch.Tensor]) -> Iterable[tuple[str, torch.Tensor]]:
    """The grown model's tensors from a fit checkpoint's operator coefficients (`state`, full fp32) and the
    source model its record (config.json's "fit") names: what `export` writes for a fit run."""
    operator = build_operator(from_values(FitOptions, fit_record, "the fit run's record"))
    prefix = "operator."
    coefficients = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    trainable = {n for n, p in operator.named_parameters() if p.requires_grad}
    missing = sorted(trainable - set(coefficients))
    if missing:
        raise ConfigError(f"the fit checkpoint lacks operator coefficients {', '.join(missing[:4])}")
    operator.load_state_dict(coefficients, strict=False)
    return iter_grown_state(operator)
