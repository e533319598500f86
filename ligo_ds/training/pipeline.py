"""One run, whatever it trains: start -> build -> resume -> engine -> train -> export.

Pretraining (pretrain.py) and the operator fit (growth/fit.py) both run here; they pass only what differs,
as a `Job`: the model and how it is built and started, its parameter groups, work per step beyond the
model's own, metrics of its own, and the weights it exports.

    session.start     check the inputs, join the process group, resolve the DeepSpeed config, claim RUN_DIR
    job.build         the model, partitioned as it is built under ZeRO-3
    resume            the latest complete checkpoint, another run's (--branch-from), or a fresh start
    job.initialise    a fresh run's weights
    engine            DeepSpeed's, with the job's parameter groups
    Trainer           to the end, or to a stop request (after a checkpoint)
    session.write_hf  the final weights as an HF checkpoint, from every rank
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.reading import TokenData
from ..distributed import engine as ds_engine
from ..model.config import ModelConfig
from . import resume, session
from .session import RunSpec, Session
from .state import TrainState
from .stop import StopRequest
from .trainer import Trainer


class Job:
    """What a run trains, as the pipeline asks for it; the defaults are pretraining's where it has none."""

    cfg: ModelConfig  # the architecture trained: the data checks, the FLOPs, the HF export
    identity: dict  # run identity entries of its own (the model's, the fit's source and growth)
    record: dict  # config.json entries of its own

    def claimed(self, s: Session) -> None:
        """The run directory is claimed and the DeepSpeed config resolved; nothing is built yet."""

    def build(self, s: Session) -> nn.Module:
        raise NotImplementedError

    def initialise(self, model: nn.Module) -> None:
        """A fresh run's weights (a resumed or branched run loads a checkpoint instead)."""

    def param_groups(self, model: nn.Module) -> list[dict]:
        raise NotImplementedError

    def started(self, engine, s: Session) -> None:
        """The engine exists (collective: every rank calls it)."""

    def step_flops(self, s: Session) -> float:
        """FLOPs per optimizer step beyond the model's own forward and backward, all ranks together."""
        return 0.0

    def metrics(self, engine) -> Callable[[], dict] | None:
        """Columns of its own for each logged row (called on every rank)."""
        return None

    def tensors(self, engine, s: Session) -> Iterable[tuple[str, torch.Tensor]]:
        """The weights to export, (our name, full tensor); every rank drives the iterator."""
        raise NotImplementedError


@dataclass
class Outcome:
    hf: Path | None  # the exported HF checkpoint; None when the run stopped early on request
    state: TrainState  # where it ended (or stopped)
    engine: object  # DeepSpeed's engine, for a caller that goes on with the trained model (grow's hand-off)


def run(spec: RunSpec, job: Job, data: TokenData) -> Outcome:
    """Train (or resume) the run in spec.out; see the module's docstring for the steps."""
    s = session.start(spec, job.cfg, data, job.identity, job.record)
    job.claimed(s)
    model = job.build(s)
    tag = resume.latest(s)
    branch = resume.branch_point(s, spec) if tag is None and spec.branch_from else None
    if tag is None and branch is None:
        job.initialise(model)
    engine = ds_engine.make_engine(model, job.param_groups(model), s.ds_config)
    job.started(engine, s)
    trainer = Trainer(
        engine,
        s,
        spec.training,
        job.cfg,
        data,
        extra_flops_per_step=job.step_flops(s),
        extra_metrics=job.metrics(engine),
        peak_tflops=spec.deepspeed.peak_tflops,
    )
    fresh = TrainState(flops=spec.start_flops, train_seconds=spec.start_seconds)
    state = trainer.branch(*branch) if branch else trainer.resume(tag, fresh)
    stop = StopRequest(Path(spec.stop_file or s.run_dir.root / "STOP"), s.d.device)
    if trainer.train(state, stop):
        return Outcome(None, state, engine)
    hf = session.write_hf(job.cfg, job.tensors(engine, s), Path(spec.hf_out or s.run_dir.hf), s.d, s.dtype, data)
    return Outcome(hf, state, engine)
