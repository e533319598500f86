"""Growing in one job (`ligo-ds grow`): fit the operator, hand the grown model to DeepSpeed pretraining,
train it on.

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

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.reading import Data
from ..distributed import launch
from ..distributed.ds_config import DeepSpeed, Optimizer
from ..errors import ConfigError
from ..faults import crash_point
from ..folders import hold
from ..model.compute import CHECKPOINTING, Compute
from ..model.config import ModelConfig
from ..model.hf_save import check_replaceable
from ..options import Block, Command, at_least, block, derive, flag_name, flat_identity, option
from ..training import session
from ..training.cadence import Cadence
from ..training.health import Health
from ..training.loop import Loop
from ..training.pretrain import PretrainOptions, pretrain
from ..training.rundir import read_metrics
from ..training.schedule import Schedule
from .fit import FitOptions, OperatorFit, fit
from .spec import Growth


@dataclass(frozen=True, kw_only=True)
class FitPhase(Block):
    """How the fit runs where it differs from the training it comes with (grow; plan's fit row)."""

    # A smaller fit batch makes the fit cheaper; the operator still produces every weight on every step, so
    # its own cost does not shrink.
    fit_micro_batch: int | None = option(
        None, "sequences per rank per fit step", shown_default=flag_name("micro_batch"), check=at_least(1)
    )
    # The fit keeps its own default: its blocks' weights are produced from the operator, and checkpointing
    # them is what keeps one block's weights alive at a time (--activation-checkpointing is the training's).
    fit_activation_checkpointing: str = option(
        "full", f"{flag_name('activation_checkpointing')} of the fit", choices=CHECKPOINTING, identity=False
    )


@dataclass(frozen=True, kw_only=True)
class GrowOptions(Command):
    growth: Growth = block(Growth)
    out: str = option(
        help="RUN_DIR: fit/, grown/, train/; rerunning the same command resumes in whichever phase it stopped",
        metavar="RUN_DIR",
        identity=False,
    )
    fit: OperatorFit = block(OperatorFit, names={"steps": "fit_steps"})
    phase: FitPhase = block(FitPhase)
    data: Data = block(Data)
    loop: Loop = block(Loop)
    schedule: Schedule = block(Schedule)
    optimizer: Optimizer = block(Optimizer)
    cadence: Cadence = block(Cadence)
    deepspeed: DeepSpeed = block(DeepSpeed, ds_config="zero3")
    compute: Compute = block(Compute)
    health: Health = block(Health)

    def fit_phase(self) -> FitOptions:
        """RUN_DIR/fit. Its cadence is capped at its length, so a short fit still logs, evaluates and saves;
        each option keeps the flag grow took it from (--fit-steps, --fit-micro-batch when given)."""
        steps = max(1, self.fit.steps)
        cadence = derive(
            self.cadence,
            eval_every=min(self.cadence.eval_every, steps),
            save_every=min(self.cadence.save_every, steps),
            log_every=min(self.cadence.log_every, steps),
            keep_every=None,  # counted in the training phase's steps; the fit keeps its --keep-last newest
        )
        p = self.phase
        loop = self.loop
        if p.fit_micro_batch is not None:
            loop = derive(loop, micro_batch=p.fit_micro_batch, flags={"micro_batch": p.flag("fit_micro_batch")})
        compute = derive(
            self.compute,
            activation_checkpointing=p.fit_activation_checkpointing,
            flags={"activation_checkpointing": p.flag("fit_activation_checkpointing")},
        )
        return FitOptions(
            growth=self.growth,
            out=str(Path(self.out) / "fit"),
            fit=self.fit,
            data=self.data,
            loop=loop,
            cadence=cadence,
            deepspeed=self.deepspeed,
            compute=compute,
            health=derive(self.health, skip_data=None),  # --skip-data counts the training phase's samples
        )

    def train_phase(self) -> PretrainOptions:
        """RUN_DIR/train: pretraining of the grown model in RUN_DIR/grown."""
        return PretrainOptions(
            model=str(Path(self.out) / "grown"),
            out=str(Path(self.out) / "train"),
            data=self.data,
            loop=self.loop,
            schedule=self.schedule,
            optimizer=self.optimizer,
            cadence=self.cadence,
            deepspeed=self.deepspeed,
            compute=self.compute,
            health=self.health,
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


RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints")  # what a pretrain or fit RUN_DIR holds at its top


def claim_grow_dir(out: Path, what: str) -> None:
    """Take RUN_DIR's lock. grow writes only its phases (fit/, grown/, train/) into RUN_DIR, so other files
    there (the batch job's log and hostfile, a user's notes) stay as they are; a folder that is itself a
    pretrain or fit run is refused (its files would read as a different run than the grow's), as is a
    grown/ that holds anything but a checkpoint ligo_ds wrote."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"{what} {str(out)!r} is not a folder")
    run_files = [name for name in RUN_FILES if (out / name).exists()]
    if run_files:
        raise ConfigError(
            f"{what} {str(out)!r} holds a pretrain or fit run ({', '.join(run_files)}); a grow RUN_DIR holds fit/, "
            "grown/ and train/: choose another folder"
        )
    if (out / "grown").exists():
        check_replaceable(out / "grown")
    hold(out, what)


def grow(opts: GrowOptions) -> Path | None:
    """Returns the trained model's HF directory, or None when a phase stopped early on request
    (RUN_DIR/STOP, SIGTERM or SIGUSR1) after checkpointing."""
    out = Path(opts.out)
    target = ModelConfig.from_file(opts.growth.target)
    opts = dataclasses.replace(opts, data=opts.data.for_model(target.max_positions))  # both phases' length
    launch.on_rank0(launch.init(), lambda: claim_grow_dir(out, opts.flag("out")))
    fit_opts, train_opts = opts.fit_phase(), opts.train_phase()
    train_dir = Path(train_opts.out)
    grown = out / "grown"
    # What the grown model came from: the fit's options that are part of a run's identity.
    identity = {"grown_from": flat_identity(fit_opts)}
    if (train_dir / "checkpoints" / "latest").is_file():
        if not (grown / "config.json").is_file():
            raise ConfigError(
                f"{str(train_dir)!r} has checkpoints but {str(grown)!r} is missing; the run directory is damaged"
            )
        flops, seconds = _fit_totals(out / "fit")
        return pretrain(train_opts, start_flops=flops, start_seconds=seconds, identity=identity, stop_file=out / "STOP")
    session.check_schedule(train_opts.training())
    # The training phase's DeepSpeed config is checked now (the fit checks its own as it starts): a conflict
    # found only after the fit would waste it.
    session.ds_config_for(train_opts.spec(), launch.init())
    result = fit(fit_opts, hf_out=grown, keep_operator=True, stop_file=out / "STOP")
    if result.stopped:
        return None
    crash_point("handoff")
    init = _grown_weights(result.operator) if result.operator is not None else None
    hf = pretrain(
        train_opts,
        start_flops=result.flops,
        start_seconds=result.seconds,
        init_weights=init,
        identity=identity,
        stop_file=out / "STOP",
    )
    launch.barrier()
    return hf
