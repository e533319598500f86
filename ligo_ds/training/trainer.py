"""The training loop, used by pretraining and by the operator fit. It takes a built engine and the training
blocks (loop.Training); the run pipeline (pipeline.py) builds the engine. Its parts are components, each
owning its state: checkpoints (checkpointing.py), evaluation (evaluation.py), health and rollbacks
(recovery.py), the metrics and progress (progress.py), a stop request (stop.py).

The batch for optimizer step s on rank r, micro-step m, is global samples  S + m*W*b + r*b + [0, b)
with S the samples consumed before step s, W the world size and b the micro-batch: each rank reads its
own share, and the position in the data is the single integer S, saved in every checkpoint. Every long
stretch ends in a checkpoint, so a rerun continues exactly.

A step whose loss or gradient norm is non-finite anywhere is not applied (recovery.py); the ranks agree on
it through the one all-reduce every step makes of its loss. Only good steps count as steps, log, evaluate
or save, so nothing is ever saved from a non-finite state.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..data.reading import TokenData
from ..distributed import engine as ds_engine
from ..distributed import launch
from ..faults import crash_point, loss_factor
from ..model.config import ModelConfig
from .cadence import due
from .checkpointing import Checkpoints
from .evaluation import Evaluator
from .flops import peak_flops, train_flops_per_token
from .loop import Training
from .metrics import device_name
from .progress import Columns, Progress
from .recovery import Recovery
from .samples import Sampler
from .schedule import lr_at
from .session import Session
from .state import Interval, StepResult, TrainState
from .stop import StopRequest


class Trainer:
    """Trains `engine` on `data` as `training` says, from a TrainState to the end of the run or a stop request.

    `extra_flops_per_step` adds work that is not the model's own forward and backward (an operator
    producing the weights); `extra_metrics()` adds columns to each logged row (called on every rank);
    `peak_tflops` is the device's peak for MFU where the built-in table lacks it.
    """

    def __init__(
        self,
        engine,
        session: Session,
        training: Training,
        model_cfg: ModelConfig,
        data: TokenData,
        *,
        extra_flops_per_step: float = 0.0,
        extra_metrics: Callable[[], dict] | None = None,
        peak_tflops: float | None = None,
    ):
        self.engine, self.s, self.t = engine, session, training
        self.d = d = session.d
        self.extra_flops_per_step = extra_flops_per_step
        self.total = training.total_steps(d.world_size)
        self.batches = data.training(training.data.seq_len, training.loop.seed)
        self.flops_per_token = train_flops_per_token(model_cfg, training.data.seq_len)
        self.checkpoints = Checkpoints(engine, session.run_dir, d, training.cadence)
        self.evaluator = Evaluator(
            engine, data, training.data.seq_len, training.loop.micro_batch, training.cadence.eval_samples, d
        )
        cadence = training.cadence
        self.sampler = None
        if cadence.sample_prompts is not None:
            flag = cadence.flag("sample_prompts")
            limit = model_cfg.max_positions
            self.sampler = Sampler(engine, data, cadence.sample_prompts, flag, cadence.sample_tokens, limit, d)
        global_batch = training.loop.global_batch(d.world_size)
        self.recovery = Recovery(training.health, global_batch, session.run_dir, d, self.checkpoints)
        peak = peak_flops(device_name(d.device), peak_tflops)
        self.columns = Columns(engine, d, self.flops_per_token, peak, data, self.batches.consumed, extra_metrics)
        self.fresh = True  # no checkpoint loaded: the run's first row (and a spike guard's checkpoint) is due

    # ---- where the run starts ------------------------------------------------------------------
    def resume(self, tag: str | None, fresh: TrainState) -> TrainState:
        """Load checkpoint `tag` (resume.latest) and drop metrics rows logged after it; with no tag, `fresh`
        (and a log started anew if an earlier try died before its first checkpoint)."""
        self.fresh = tag is None
        if tag is None:
            if self.s.resuming and self.d.is_main:
                self.s.run_dir.truncate_metrics(-1)
            return fresh
        return self.checkpoints.restore(tag)

    def branch(self, ckpt_dir: Path, tag: str) -> TrainState:
        """Start this run from another run's checkpoint (resume.branch_point)."""
        self.fresh = True  # the first row and, with --spike-rollback, a checkpoint at the branch point
        return self.checkpoints.branch(ckpt_dir, tag, self.s.resuming)

    # ---- the loop ------------------------------------------------------------------------------
    def train(self, state: TrainState, stop: StopRequest) -> bool:
        """Run to the end, or to a stop request (after a checkpoint); returns whether it stopped early."""
        progress = Progress(self.s.run_dir, self.d, self.total, state.step)
        try:
            stopped = self._loop(state, stop, progress)
        finally:
            self.batches.close()
            progress.close()
        if stopped and self.d.is_main:
            print(
                f"stopped on request at step {state.step} of {self.total}: checkpoint {self.checkpoints.latest()} "
                f"in {self.checkpoints.dir}; rerun the same command to continue",
                file=sys.stderr,
            )
        return stopped

    def _loop(self, state: TrainState, stop: StopRequest, p: Progress) -> bool:
        cadence, recovery = self.t.cadence, self.recovery
        recovery.check_position(state)
        if self.fresh:  # FLOPs and seconds carried in (a grown run's fit) count from the first row on
            p.log.write({**state.position(), **self._evaluate()})
            if self.t.health.spike_rollback:  # a spike before the first regular checkpoint rolls back to the start
                self.checkpoints.save(state)
        interval, save_due = Interval(), False
        while state.step < self.total:
            recovery.apply_skips(state, p.log)
            result = self._step(state, interval, p)
            if not recovery.accept(state, result, p.log):
                continue
            p.bar.update(1)
            last = state.step == self.total
            if recovery.spiked(state, result.loss, last, p.log):
                recovery.rollback(state, p.log)
                p.moved_to(state.step)
                continue
            row = state.position()
            if due(state.step, cadence.log_every, last):
                row.update(self.columns.row(interval, result.lr, state.samples))
                p.show(row)
            if due(state.step, cadence.eval_every, last):
                row.update(self._evaluate())
            if len(row) > len(state.position()):
                p.log.write(row)
            save_due = save_due or due(state.step, cadence.save_every, last)
            saved = save_due and not recovery.holding
            if saved:
                self.checkpoints.save(state)
                save_due = False
            if not last and state.step % cadence.log_every == 0 and stop.agreed():
                self._stop(state, stop, saved)
                return True
        return False

    def _evaluate(self) -> dict:
        """The evaluation columns of a row: val_loss, and with --sample-prompts the texts."""
        out = {"val_loss": self.evaluator.evaluate()}
        if self.sampler is not None:
            out["generated"] = self.sampler.sample()
        return out

    def _stop(self, state: TrainState, stop: StopRequest, saved: bool) -> None:
        """Checkpoint for a stop request, unless this step saved already or a rollback may still follow."""
        holding = self.recovery.holding
        if not saved and not holding:
            self.checkpoints.save(state)
        stop.consume(self.d.is_main)
        if holding and self.d.is_main:
            print(f"the loss is above its spike threshold at step {state.step}: not saved", file=sys.stderr)

    def _step(self, state: TrainState, interval: Interval, p: Progress) -> StepResult:
        """One optimizer step over grad_accum micro-batches; advances `state` and `interval`. A step whose
        loss is non-finite on any rank, or whose gradient norm is, was not applied (DeepSpeed skipped it):
        it moves the position and counts its compute, but is no step."""
        d, engine, loop = self.d, self.engine, self.t.loop
        T, b, W, accum = self.t.data.seq_len, loop.micro_batch, d.world_size, loop.grad_accum
        per_step = b * accum * W
        started = time.perf_counter()
        lr = lr_at(state.step, self.total, self.t.schedule)
        ds_engine.set_lr(engine, lr)
        skipped_before = ds_engine.steps_skipped(engine)
        factor = loss_factor(state.samples, d.rank)  # None unless a health test injects a fault
        loss_sum = torch.zeros((), dtype=torch.float64, device=d.device)
        for m in range(accum):
            first = state.samples + m * W * b + d.rank * b
            ids, targets = self.batches.read(first, b, stride=W * b)  # and starts reading the next one
            p.read(state.step, first, b)
            loss = engine(ids.to(d.device, non_blocking=True), targets.to(d.device, non_blocking=True))
            if factor is not None:
                loss = loss * factor
            engine.backward(loss)
            crash_point("step")
            engine.step()
            loss_sum += loss.detach().double()
        # The one collective of every step: the loss summed over ranks, and how many ranks saw it NaN or infinite.
        finite = torch.isfinite(loss_sum)
        flags = torch.stack([torch.where(finite, loss_sum, 0.0), loss_sum.isnan().double(), loss_sum.isinf().double()])
        total, nans, infs = launch.all_reduce_sum(flags).tolist()
        nonfinite = nans + infs
        applied = ds_engine.steps_skipped(engine) == skipped_before
        if nonfinite and applied:
            raise RuntimeError(
                f"DeepSpeed applied step {state.step + 1} although its loss was non-finite on {int(nonfinite)} "
                "ranks; its skip-on-overflow check must be on (distributed/ds_config.py)"
            )
        elapsed = time.perf_counter() - started
        state.samples += per_step
        state.flops += per_step * T * self.flops_per_token + self.extra_flops_per_step
        state.train_seconds += elapsed
        interval.add(per_step * T, elapsed)
        if not applied:
            loss = math.nan if nans else math.inf if infs else total / (accum * W)
            return StepResult(lr, loss, ds_engine.grad_norm(engine), int(nonfinite), False)
        state.step += 1
        state.tokens += per_step * T
        mean = total / (accum * W)
        interval.add_loss(mean)
        return StepResult(lr, mean, None, 0, True)
