"""The training loop, used by pretraining and by the operator fit: its state, evaluation, checkpoints,
resume and stop requests. It takes a built engine; the commands (pretrain.py, fit.py) build it.

The batch for optimizer step s on rank r, micro-step m, is global samples  S + m*W*b + r*b + [0, b)
with S the samples consumed before step s, W the world size and b the micro-batch: each rank reads its
own share, and the position in the data is the single integer S, saved in every checkpoint. Every long
stretch ends in a checkpoint, so a rerun continues exactly.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .data import TokenData
from .distributed import checkpoint, launch
from .distributed import engine as ds_engine
from .evaluate import num_windows, window_totals
from .faults import crash_point
from .flops import peak_flops, train_flops_per_token
from .metrics import MetricsLog, device_name, peak_memory_bytes
from .model_config import ModelConfig
from .options import PretrainOptions
from .schedule import lr_at
from .session import Session


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    samples: int = 0  # global training windows consumed: the position in the data
    tokens: int = 0
    flops: float = 0.0  # cumulative training FLOPs (flops.py), including any carried in (an operator fit)
    train_seconds: float = 0.0  # wall time inside training steps, summed over restarts

    def position(self) -> dict:
        """The columns every metrics row starts with."""
        return {
            "step": self.step,
            "samples": self.samples,
            "tokens": self.tokens,
            "flops": self.flops,
            "train_seconds": round(self.train_seconds, 4),
        }


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
        return launch.all_reduce_sum(mine).item() > 0

    def consume(self, is_main: bool) -> None:
        if is_main:
            self.stop_file.unlink(missing_ok=True)


class Trainer:
    """Trains `engine` on `data` as `opts` say, from a TrainState to the end of the run or a stop request.

    `extra_flops_per_step` adds work that is not the model's own forward and backward (an operator
    producing the weights); `extra_metrics()` adds columns to each logged row (called on every rank).
    """

    def __init__(
        self,
        engine,
        session: Session,
        opts: PretrainOptions,
        model_cfg: ModelConfig,
        data: TokenData,
        *,
        extra_flops_per_step: float = 0.0,
        extra_metrics: Callable[[], dict] | None = None,
    ):
        self.engine, self.s, self.opts, self.data = engine, session, opts, data
        self.d = session.d
        self.extra_flops_per_step, self.extra_metrics = extra_flops_per_step, extra_metrics
        self.total = opts.total_steps(self.d.world_size)
        self.batches = data.training(opts.data.seq_len, opts.loop.seed)
        self.source_names = _source_names(data)
        self.flops_per_token = train_flops_per_token(model_cfg, opts.data.seq_len)
        self.peak = peak_flops(device_name(self.d.device), opts.deepspeed.peak_tflops)

    # ---- state ---------------------------------------------------------------------------------
    def resume(self, tag: str | None, fresh: TrainState) -> TrainState:
        """Load checkpoint `tag` (from session.plan_resume), restore the RNGs and drop metrics rows logged
        after it; with no tag, `fresh` (and a log started anew if an earlier try died before its first
        checkpoint)."""
        s = self.s
        if tag is None:
            if s.resuming and self.d.is_main:
                s.run_dir.truncate_metrics(-1)
            return fresh
        client = checkpoint.load_checkpoint(self.engine, s.run_dir.checkpoints, tag)
        random.setstate(client["rng"]["python"])
        np.random.set_state(client["rng"]["numpy"])
        torch.set_rng_state(client["rng"]["torch"])
        step = client["train_state"]["step"]
        if self.d.is_main:
            s.run_dir.truncate_metrics(step)
            print(f"resuming {s.run_dir.root} from checkpoint {tag} (step {step})", file=sys.stderr)
        return TrainState(**client["train_state"])

    def save(self, state: TrainState) -> None:
        client = {
            "train_state": asdict(state),
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
            **checkpoint.universal_info(),
        }
        checkpoint.save_checkpoint(self.engine, self.s.run_dir.checkpoints, f"step{state.step}", client, self.d.rank)

    # ---- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the first eval_samples validation windows, split across ranks (evaluate.py)."""
        d, engine = self.d, self.engine
        val = self.data.validation()
        T, b = self.opts.data.seq_len, self.opts.loop.micro_batch
        n = num_windows(len(val), T, self.opts.cadence.eval_samples)
        engine.eval()
        totals = window_totals(engine, val, T, b, n, d.rank, d.world_size, d.device)
        engine.train()
        launch.all_reduce_sum(totals)
        return (totals[0] / totals[1]).item()

    # ---- the loop ------------------------------------------------------------------------------
    def train(self, state: TrainState, stop: StopRequest) -> bool:
        """Run to the end, or to a stop request (after a checkpoint); returns whether it stopped early."""
        from tqdm import tqdm

        run_dir = self.s.run_dir
        log = MetricsLog(run_dir.metrics, run_dir.tb, self.d.is_main)
        # LIGO_DS_SAMPLE_LOG=PREFIX: each rank appends "step first count" for every batch it reads to
        # PREFIX.rankN, so the data order across restarts and world sizes can be audited.
        trace_prefix = os.environ.get("LIGO_DS_SAMPLE_LOG")
        trace = open(f"{trace_prefix}.rank{self.d.rank}", "a") if trace_prefix else None
        bar = tqdm(
            total=self.total,
            initial=state.step,
            disable=not self.d.is_main,
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )
        try:
            stopped = self._loop(state, stop, log, trace, bar)
        finally:
            self.batches.close()
            bar.close()
            log.close()
            if trace is not None:
                trace.close()
        if stopped and self.d.is_main:
            print(
                f"stopped on request at step {state.step} of {self.total}: checkpoint saved in "
                f"{run_dir.checkpoints}; rerun the same command to continue",
                file=sys.stderr,
            )
        return stopped

    def _loop(self, state: TrainState, stop: StopRequest, log: MetricsLog, trace, bar) -> bool:
        cadence = self.opts.cadence
        if state.step == 0:  # FLOPs and seconds carried in (a grown run's fit) count from the first row on
            log.write({**state.position(), "val_loss": self.evaluate()})
        interval = _Interval(torch.zeros((), dtype=torch.float64, device=self.d.device))
        while state.step < self.total:
            lr = self._step(state, interval, trace)
            bar.update(1)
            last = state.step == self.total
            row = state.position()
            if state.step % cadence.log_every == 0 or last:
                row.update(self._training_columns(interval, lr))
                if self.batches.consumed is not None:  # a mixture: each source's share so far
                    consumed = self.batches.consumed(state.samples).values()
                    row.update({f"tokens/{n}": t for n, t in zip(self.source_names, consumed, strict=True)})
                bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:,.0f}")
            if state.step % cadence.eval_every == 0 or last:
                row["val_loss"] = self.evaluate()
            if len(row) > len(state.position()):
                log.write(row)
            saved = state.step % cadence.save_every == 0 or last
            if saved:
                self.save(state)
            if not last and state.step % cadence.log_every == 0 and stop.agreed():
                if not saved:
                    self.save(state)
                stop.consume(self.d.is_main)
                return True
        return False

    def _step(self, state: TrainState, interval: _Interval, trace) -> float:
        """One optimizer step over grad_accum micro-batches; advances `state` and `interval`, returns the lr."""
        opts, d, engine = self.opts, self.d, self.engine
        T, b, W, accum = opts.data.seq_len, opts.loop.micro_batch, d.world_size, opts.loop.grad_accum
        per_step = b * accum * W
        started = time.perf_counter()
        lr = lr_at(state.step, self.total, opts.schedule)
        ds_engine.set_lr(engine, lr)
        for m in range(accum):
            first = state.samples + m * W * b + d.rank * b
            ids, targets = self.batches.read(first, b, stride=W * b)  # and starts reading the next one
            if trace:
                trace.write(f"{state.step} {first} {b}\n")
                trace.flush()
            loss = engine(ids.to(d.device, non_blocking=True), targets.to(d.device, non_blocking=True))
            engine.backward(loss)
            crash_point("step")
            engine.step()
            interval.loss_sum += loss.detach().double()
        elapsed = time.perf_counter() - started
        state.step += 1
        state.samples += per_step
        state.tokens += per_step * T
        state.flops += per_step * T * self.flops_per_token + self.extra_flops_per_step
        state.train_seconds += elapsed
        interval.add(per_step * T, elapsed)
        return lr

    def _training_columns(self, interval: _Interval, lr: float) -> dict:
        """A logged row's training columns, averaged over the steps since the last one; resets `interval`.
        Collective: the loss is summed over ranks (and extra_metrics may gather too)."""
        W, accum = self.d.world_size, self.opts.loop.grad_accum
        mean_loss = launch.all_reduce_sum(interval.loss_sum).item() / (interval.steps * accum * W)
        tokens_per_s = interval.tokens / max(interval.seconds, 1e-9)
        interval.reset()
        return {
            "loss": mean_loss,
            "lr": lr,
            "grad_norm": ds_engine.grad_norm(self.engine),
            "tokens_per_s": tokens_per_s,
            "mfu": None if self.peak is None else tokens_per_s * self.flops_per_token / (self.peak * W),
            "peak_mem_gb": peak_memory_bytes(self.d.device) / 2**30,
            **(self.extra_metrics() if self.extra_metrics else {}),
        }


@dataclass
class _Interval:
    """What a metrics row averages over: the steps since the last logged row."""

    loss_sum: torch.Tensor  # summed over micro-batches, a float64 scalar on the device
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def add(self, tokens: int, seconds: float) -> None:
        self.steps += 1
        self.tokens += tokens
        self.seconds += seconds

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.steps, self.tokens, self.seconds = 0, 0, 0.0


def _source_names(data: TokenData) -> list[str]:
    """A metrics column name per data source: its directory's name, numbered where two share one."""
    names = [p.dir.name for p in data.sources]
    return [n if names.count(n) == 1 else f"{n}.{i}" for i, n in enumerate(names)]
