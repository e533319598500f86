"""The training loop, used by pretraining and by the operator fit: its state, evaluation, checkpoints,
resume and stop requests. It takes a built engine; the commands (pretrain.py, fit.py) build it.

The batch for optimizer step s on rank r, micro-step m, is global samples  S + m*W*b + r*b + [0, b)
with S the samples consumed before step s, W the world size and b the micro-batch: each rank reads its
own share, and the position in the data is the single integer S, saved in every checkpoint. Every long
stretch ends in a checkpoint, so a rerun continues exactly.

Health (health.py): a step whose loss (on any rank) or gradient norm is NaN or infinite is not applied;
DeepSpeed skips the update (the optimizer state untouched), the position moves past its batch, and the
ranks agree on it through the one all-reduce every step makes of its loss. Only good steps count as steps,
log, evaluate or save, so nothing is ever saved from a non-finite state; --max-bad-steps in a row stop the
run (TrainingDiverged, exit 3). With --spike-rollback, a loss above the running statistics for
--spike-steps steps reloads the last checkpoint (none is saved while the loss is above them) and jumps
the position past the spike, recording the jump in RUN_DIR/skips.json so a rerun makes it too.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from ..data.reading import TokenData
from ..distributed import checkpoint, launch
from ..distributed import engine as ds_engine
from ..errors import ConfigError, TrainingDiverged
from ..faults import crash_point, loss_factor
from ..model.config import ModelConfig
from ..options import PretrainOptions
from .evaluation import num_windows, window_totals
from .flops import peak_flops, train_flops_per_token
from .health import SkipTable, check_aligned, parse_ranges, running_stats, spikes
from .metrics import MetricsLog, device_name, peak_memory_bytes
from .schedule import lr_at
from .session import Session


@dataclass
class TrainState:
    step: int = 0  # optimizer updates applied (a skipped step is not one): what the schedule follows
    samples: int = 0  # the position in the data: global windows read, skipped ones included
    tokens: int = 0  # tokens the weights were trained on (those of applied steps)
    # cumulative FLOPs spent (flops.py), including any carried in (an operator fit) and the work of steps
    # skipped or rolled back: compute is compute, whether or not the weights kept it
    flops: float = 0.0
    train_seconds: float = 0.0  # wall time inside training steps, summed over restarts
    recent_losses: list[float] = field(default_factory=list)  # the last good steps' losses, for spikes

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
        health = opts.health
        ranges = parse_ranges(health.skip_data, "--skip-data") if health.skip_data else []
        check_aligned(ranges, opts.loop.global_batch(self.d.world_size), "--skip-data")
        self.skips = SkipTable(ranges, session.run_dir.read_skips())
        self.spiking: list[tuple[int, float]] = []  # (step, loss) of the current run of spiking steps
        self.fresh = True

    # ---- state ---------------------------------------------------------------------------------
    def resume(self, tag: str | None, fresh: TrainState, *, rollback: bool = False) -> TrainState:
        """Load checkpoint `tag` (from session.plan_resume), restore the RNGs and drop metrics rows logged
        after it; with no tag, `fresh` (and a log started anew if an earlier try died before its first
        checkpoint). `rollback`: the run goes back to `tag` mid-training (a loss spike)."""
        s = self.s
        self.fresh = tag is None
        if tag is None:
            if s.resuming and self.d.is_main:
                s.run_dir.truncate_metrics(-1)
            return fresh
        state = self._load(s.run_dir.checkpoints, tag)
        if self.d.is_main:
            s.run_dir.truncate_metrics(state.step)
            if not rollback:
                print(f"resuming {s.run_dir.root} from checkpoint {tag} (step {state.step})", file=sys.stderr)
        return state

    def branch(self, ckpt_dir: Path, tag: str) -> TrainState:
        """Start this run from another run's checkpoint (session.plan_branch): its weights, optimizer state,
        RNGs and position; this run's log starts at that step."""
        s = self.s
        self.fresh = True  # the first row and, with --spike-rollback, a checkpoint at the branch point
        if s.resuming and self.d.is_main:
            s.run_dir.truncate_metrics(-1)
        state = self._load(ckpt_dir, tag)
        if self.d.is_main:
            print(f"branching {s.run_dir.root} from {ckpt_dir / tag} (step {state.step})", file=sys.stderr)
        return state

    def _load(self, ckpt_dir: Path, tag: str) -> TrainState:
        client = checkpoint.load_checkpoint(self.engine, ckpt_dir, tag)
        random.setstate(client["rng"]["python"])
        np.random.set_state(client["rng"]["numpy"])
        torch.set_rng_state(client["rng"]["torch"])
        return TrainState(**client["train_state"])

    def save(self, state: TrainState) -> None:
        client = {
            "train_state": asdict(state),
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
            **checkpoint.universal_info(),
        }
        ckpts, cadence = self.s.run_dir.checkpoints, self.opts.cadence
        checkpoint.save_checkpoint(self.engine, ckpts, f"step{state.step}", client, self.d.rank)
        if cadence.keep_last is not None and self.d.is_main:  # only once `latest` names the new one
            removed = checkpoint.prune(ckpts, cadence.keep_last, cadence.keep_every)
            if removed:
                print(f"checkpoints: removed {', '.join(removed)} (--keep-last {cadence.keep_last})", file=sys.stderr)

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
                f"stopped on request at step {state.step} of {self.total}: checkpoint "
                f"{checkpoint.latest_tag(run_dir.checkpoints)} in {run_dir.checkpoints}; rerun the same command "
                "to continue",
                file=sys.stderr,
            )
        return stopped

    def _loop(self, state: TrainState, stop: StopRequest, log: MetricsLog, trace, bar) -> bool:
        cadence, health = self.opts.cadence, self.opts.health
        for start, end in self.skips.user:  # a jump happens where the position reaches FROM, never inside
            if start < state.samples < end:
                raise ConfigError(
                    f"--skip-data {start}:{end}: the run is at sample {state.samples}, inside the range; skip "
                    f"{state.samples}:{end}, or point {self.s.run_dir.checkpoints / 'latest'} at a checkpoint "
                    f"from before {start}"
                )
        if self.fresh:  # FLOPs and seconds carried in (a grown run's fit) count from the first row on
            log.write({**state.position(), "val_loss": self.evaluate()})
            if health.spike_rollback:  # a spike before the first regular checkpoint rolls back to the start
                self.save(state)
        interval = _Interval()
        bad: list[StepResult] = []  # the current run of bad steps
        save_due = False
        while state.step < self.total:
            self._apply_skips(state, log)
            result = self._step(state, interval, trace)
            if not result.good:
                bad.append(result)
                self._bad_step(state, bad, log)
                continue
            bad = []
            bar.update(1)
            last = state.step == self.total
            if self._spiked(state, result.loss, last, log):
                self._rollback(state, log)
                bar.n = state.step
                bar.refresh()
                continue
            row = state.position()
            if state.step % cadence.log_every == 0 or last:
                row.update(self._training_columns(interval, result.lr))
                if self.batches.consumed is not None:  # a mixture: each source's share so far
                    consumed = self.batches.consumed(state.samples).values()
                    row.update({f"tokens/{n}": t for n, t in zip(self.source_names, consumed, strict=True)})
                bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:,.0f}")
            if state.step % cadence.eval_every == 0 or last:
                row["val_loss"] = self.evaluate()
            if len(row) > len(state.position()):
                log.write(row)
            # While the loss is above the spike threshold a rollback may follow: the checkpoint waits.
            holding = health.spike_rollback and bool(self.spiking)
            save_due = save_due or state.step % cadence.save_every == 0 or last
            saved = save_due and not holding
            if saved:
                self.save(state)
                save_due = False
            if not last and state.step % cadence.log_every == 0 and stop.agreed():
                if not saved and not holding:
                    self.save(state)
                stop.consume(self.d.is_main)
                if holding and self.d.is_main:
                    print(f"the loss is above its spike threshold at step {state.step}: not saved", file=sys.stderr)
                return True
        return False

    def _step(self, state: TrainState, interval: _Interval, trace) -> StepResult:
        """One optimizer step over grad_accum micro-batches; advances `state` and `interval`. A step whose
        loss is non-finite on any rank, or whose gradient norm is, was not applied (DeepSpeed skipped it):
        it moves the position and counts its compute, but is no step."""
        opts, d, engine = self.opts, self.d, self.engine
        T, b, W, accum = opts.data.seq_len, opts.loop.micro_batch, d.world_size, opts.loop.grad_accum
        per_step = b * accum * W
        started = time.perf_counter()
        lr = lr_at(state.step, self.total, opts.schedule)
        ds_engine.set_lr(engine, lr)
        skipped_before = ds_engine.steps_skipped(engine)
        factor = loss_factor(state.samples, d.rank)  # None unless a health test injects a fault
        loss_sum = torch.zeros((), dtype=torch.float64, device=d.device)
        for m in range(accum):
            first = state.samples + m * W * b + d.rank * b
            ids, targets = self.batches.read(first, b, stride=W * b)  # and starts reading the next one
            if trace:
                trace.write(f"{state.step} {first} {b}\n")
                trace.flush()
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
                "ranks; its skip-on-overflow check must be on (ds_config.py)"
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

    # ---- health --------------------------------------------------------------------------------
    def _bad_step(self, state: TrainState, bad: list[StepResult], log: MetricsLog) -> None:
        """Log a step that was not applied; stop the run once --max-bad-steps have come in a row."""
        r, W = bad[-1], self.d.world_size
        why = [f"loss {r.loss} on {r.nonfinite_ranks} of {W} ranks"] if r.nonfinite_ranks else []
        if r.grad_norm is None or not math.isfinite(r.grad_norm):
            why.append(f"gradient norm {r.grad_norm}")
        reason = ", ".join(why) or "DeepSpeed skipped the update"
        value = r.loss if math.isfinite(r.loss) else repr(r.loss)  # JSON has no NaN: "nan", "inf"
        log.write({**state.position(), "event": "skipped_step", "reason": reason, "bad_loss": value})
        if self.d.is_main:
            print(f"step {state.step + 1} skipped: {reason}", file=sys.stderr)
        if len(bad) < self.opts.health.max_bad_steps:
            return
        per_step = self.opts.loop.global_batch(W)
        first = state.samples - len(bad) * per_step
        latest = checkpoint.latest_tag(self.s.run_dir.checkpoints)
        where = f"{self.s.run_dir.checkpoints / latest}" if latest else "none (the run never saved one)"
        raise TrainingDiverged(
            f"{len(bad)} steps in a row went bad at step {state.step + 1} ({reason}); none was applied and "
            f"nothing was saved from them. Last good checkpoint: {where}. Lower the learning rate, or skip "
            f"the data with --skip-data {first}:{state.samples}, and rerun"
        )

    def _spiked(self, state: TrainState, loss: float, last: bool, log: MetricsLog) -> bool:
        """Track the running loss statistics; True when a spike must be rolled back now. Spiking losses stay
        out of the statistics until they make a spike (else the first would hide the next)."""
        h = self.opts.health
        spiking = spikes(state.recent_losses, loss, h.spike_threshold, h.spike_window)
        self.spiking = [*self.spiking, (state.step, loss)] if spiking else []
        if spiking and h.spike_rollback:  # a run cannot end in a spike: its last step rolls back as well
            return len(self.spiking) >= h.spike_steps or last
        if spiking and len(self.spiking) < h.spike_steps:
            return False
        joining = [loss]
        if spiking and len(self.spiking) == h.spike_steps:
            # Without rollback a spike is reported once; its losses then join the statistics, which follow a
            # loss that stays up.
            joining = [x for _, x in self.spiking]
            mean, std = running_stats(state.recent_losses)
            log.write({**state.position(), "event": "spike", "losses": joining, "mean": mean})
            if self.d.is_main:
                print(
                    f"loss spike at steps {self.spiking[0][0]}-{state.step}: {loss:.4f} against a running mean "
                    f"of {mean:.4f} (deviation {std:.4f}); --spike-rollback would roll it back",
                    file=sys.stderr,
                )
        state.recent_losses = [*state.recent_losses, *joining][-h.spike_window :]
        return False

    def _rollback(self, state: TrainState, log: MetricsLog) -> None:
        """Go back to the last checkpoint and record the jump past the spike's data (applied by _apply_skips,
        now and by any rerun that resumes from that checkpoint)."""
        h, ckpts = self.opts.health, self.s.run_dir.checkpoints
        mean, std = running_stats(state.recent_losses)
        losses = [x for _, x in self.spiking]
        where = (
            f"loss spike at steps {self.spiking[0][0]}-{state.step} (losses {', '.join(f'{x:.4f}' for x in losses)}; "
            f"running mean {mean:.4f}, deviation {std:.4f})"
        )
        tag = checkpoint.latest_tag(ckpts)
        if tag is None:
            raise TrainingDiverged(f"{where}: no checkpoint to roll back to (turn --spike-rollback on from the start)")
        if self.skips.rollbacks_to(tag) >= h.max_rollbacks:
            raise TrainingDiverged(
                f"{where}: rolled back to {ckpts / tag} {h.max_rollbacks} times already (--max-rollbacks) and the "
                "loss spikes again, so it is not the data alone: lower the learning rate and rerun"
            )
        spike_end, flops, seconds = state.samples, state.flops, state.train_seconds
        restored = self.resume(tag, TrainState(), rollback=True)
        record = {
            "from": restored.samples,
            "to": spike_end,
            "checkpoint": tag,
            "step": restored.step,
            "spike_steps": [self.spiking[0][0], state.step],
            "losses": losses,
            "mean": mean,
            "std": std,
            "flops": flops,
            "train_seconds": seconds,
        }
        if self.d.is_main:
            self.s.run_dir.record_skip(record)
            log.reopen()  # resume() rewrote metrics.jsonl without the spike's rows
            print(
                f"{where}: rolled back to checkpoint {tag}; skipping samples {restored.samples}-{spike_end}",
                file=sys.stderr,
            )
        launch.barrier()
        self.skips.add(record)
        crash_point("rollback")
        for f in fields(TrainState):
            setattr(state, f.name, getattr(restored, f.name))
        self.spiking = []

    def _apply_skips(self, state: TrainState, log: MetricsLog) -> None:
        """Jump past data to skip when the position reaches it (--skip-data, and rollbacks' records)."""
        while (skip := self.skips.at(state.samples)) is not None:
            state.samples = skip.end
            row = {"event": skip.reason, "skipped_from": skip.start, "skipped_to": skip.end}
            if skip.record is not None:  # the compute spent on the stretch rolled back still counts
                state.flops = max(state.flops, skip.record["flops"])
                state.train_seconds = max(state.train_seconds, skip.record["train_seconds"])
                row.update(checkpoint=skip.record["checkpoint"], spike_losses=skip.record["losses"])
            log.write({**state.position(), **row})

    def _training_columns(self, interval: _Interval, lr: float) -> dict:
        """A logged row's training columns, averaged over the good steps since the last one; resets
        `interval`. Collective where extra_metrics gathers."""
        W = self.d.world_size
        tokens_per_s = interval.tokens / max(interval.seconds, 1e-9)
        mean_loss = interval.loss_sum / interval.loss_steps
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


@dataclass(frozen=True)
class StepResult:
    lr: float
    loss: float  # the mean over ranks and micro-batches; NaN or inf when it was that on some rank
    grad_norm: float | None  # read only for a step that went bad
    nonfinite_ranks: int  # ranks whose loss was NaN or infinite
    good: bool  # applied: finite loss and gradient norm everywhere


@dataclass
class _Interval:
    """What a metrics row averages over: the steps since the last logged row (the loss: the good ones)."""

    loss_sum: float = 0.0
    loss_steps: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def add(self, tokens: int, seconds: float) -> None:
        self.tokens += tokens
        self.seconds += seconds

    def add_loss(self, loss: float) -> None:
        self.loss_sum += loss
        self.loss_steps += 1

    def reset(self) -> None:
        self.loss_sum, self.loss_steps, self.tokens, self.seconds = 0.0, 0, 0, 0.0


def _source_names(data: TokenData) -> list[str]:
    """A metrics column name per data source: its directory's name, numbered where two share one."""
    names = [p.dir.name for p in data.sources]
    return [n if names.count(n) == 1 else f"{n}.{i}" for i, n in enumerate(names)]
