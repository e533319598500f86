"""The trainer's health component (policy: the Health block, health.py): steps that went bad, loss spikes and
the rollbacks past them, and the stretches of data a run skips.

A step whose loss (on any rank) or gradient norm is NaN or infinite is not applied (DeepSpeed skipped it);
--max-bad-steps of them in a row stop the run (TrainingDiverged, exit 3) with nothing saved from them. With
--spike-rollback, a loss above the running statistics for --spike-steps steps reloads the last checkpoint
(none is saved while the loss is above them) and jumps the position past the spike, recording the jump in
RUN_DIR/skips.json so a rerun makes it too.
"""

from __future__ import annotations

import math
import sys
from dataclasses import fields

from ..distributed import launch
from ..distributed.launch import Dist
from ..errors import ConfigError, TrainingDiverged
from ..faults import crash_point
from .checkpointing import Checkpoints
from .health import Health, SkipTable, check_aligned, running_stats, spikes
from .metrics import MetricsLog
from .rundir import RunDir
from .state import StepResult, TrainState


class Recovery:
    """What the trainer does when a step goes bad or the loss spikes, and where it jumps over data."""

    def __init__(self, health: Health, global_batch: int, run_dir: RunDir, d: Dist, checkpoints: Checkpoints):
        self.h, self.global_batch, self.run_dir, self.d, self.checkpoints = (
            health,
            global_batch,
            run_dir,
            d,
            checkpoints,
        )
        ranges = health.skip_ranges()
        check_aligned(ranges, global_batch, health.flag("skip_data"))
        self.skips = SkipTable(ranges, run_dir.read_skips())
        self.bad: list[StepResult] = []  # the current run of bad steps
        self.spiking: list[tuple[int, float]] = []  # (step, loss) of the current run of spiking steps

    @property
    def holding(self) -> bool:
        """While the loss is above the spike threshold a rollback may follow: checkpoints wait."""
        return self.h.spike_rollback and bool(self.spiking)

    def check_position(self, state: TrainState) -> None:
        """A jump happens where the position reaches FROM, never inside a user's range."""
        for start, end in self.skips.user:
            if start < state.samples < end:
                raise ConfigError(
                    f"{self.h.flag('skip_data')} {start}:{end}: the run is at sample {state.samples}, inside the "
                    f"range; skip {state.samples}:{end}, or point {self.run_dir.checkpoints / 'latest'} at a "
                    f"checkpoint from before {start}"
                )

    def apply_skips(self, state: TrainState, log: MetricsLog) -> None:
        """Jump past data to skip when the position reaches it (--skip-data, and rollbacks' records)."""
        while (skip := self.skips.at(state.samples)) is not None:
            state.samples = skip.end
            row = {"event": skip.reason, "skipped_from": skip.start, "skipped_to": skip.end}
            if skip.record is not None:  # the compute spent on the stretch rolled back still counts
                state.flops = max(state.flops, skip.record["flops"])
                state.train_seconds = max(state.train_seconds, skip.record["train_seconds"])
                row.update(checkpoint=skip.record["checkpoint"], spike_losses=skip.record["losses"])
            log.write({**state.position(), **row})

    def accept(self, state: TrainState, result: StepResult, log: MetricsLog) -> bool:
        """Whether a step counts (it was applied); a bad one is logged, and the run stops once --max-bad-steps
        have come in a row."""
        if result.good:
            self.bad = []
            return True
        self.bad.append(result)
        r, W = result, self.d.world_size
        why = [f"loss {r.loss} on {r.nonfinite_ranks} of {W} ranks"] if r.nonfinite_ranks else []
        if r.grad_norm is None or not math.isfinite(r.grad_norm):
            why.append(f"gradient norm {r.grad_norm}")
        reason = ", ".join(why) or "DeepSpeed skipped the update"
        value = r.loss if math.isfinite(r.loss) else repr(r.loss)  # JSON has no NaN: "nan", "inf"
        log.write({**state.position(), "event": "skipped_step", "reason": reason, "bad_loss": value})
        if self.d.is_main:
            print(f"step {state.step + 1} skipped: {reason}", file=sys.stderr)
        if len(self.bad) < self.h.max_bad_steps:
            return False
        first = state.samples - len(self.bad) * self.global_batch
        latest = self.checkpoints.latest()
        where = f"{self.checkpoints.dir / latest}" if latest else "none (the run never saved one)"
        raise TrainingDiverged(
            f"{len(self.bad)} steps in a row went bad at step {state.step + 1} ({reason}); none was applied and "
            f"nothing was saved from them. Last good checkpoint: {where}. Lower the learning rate, or skip "
            f"the data with {self.h.flag('skip_data')} {first}:{state.samples}, and rerun"
        )

    def spiked(self, state: TrainState, loss: float, last: bool, log: MetricsLog) -> bool:
        """Track the running loss statistics; True when a spike must be rolled back now. Spiking losses stay
        out of the statistics until they make a spike (else the first would hide the next)."""
        h = self.h
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
                    f"of {mean:.4f} (deviation {std:.4f}); {h.flag('spike_rollback')} would roll it back",
                    file=sys.stderr,
                )
        state.recent_losses = [*state.recent_losses, *joining][-h.spike_window :]
        return False

    def rollback(self, state: TrainState, log: MetricsLog) -> None:
        """Go back to the last checkpoint and record the jump past the spike's data (applied by apply_skips,
        now and by any rerun that resumes from that checkpoint)."""
        h = self.h
        mean, std = running_stats(state.recent_losses)
        losses = [x for _, x in self.spiking]
        where = (
            f"loss spike at steps {self.spiking[0][0]}-{state.step} (losses {', '.join(f'{x:.4f}' for x in losses)}; "
            f"running mean {mean:.4f}, deviation {std:.4f})"
        )
        tag = self.checkpoints.latest()
        if tag is None:
            raise TrainingDiverged(
                f"{where}: no checkpoint to roll back to (turn {h.flag('spike_rollback')} on from the start)"
            )
        if self.skips.rollbacks_to(tag) >= h.max_rollbacks:
            raise TrainingDiverged(
                f"{where}: rolled back to {self.checkpoints.dir / tag} {h.max_rollbacks} times already "
                f"({h.flag('max_rollbacks')}) and the loss spikes again, so it is not the data alone: lower the "
                "learning rate and rerun"
            )
        spike_end, flops, seconds = state.samples, state.flops, state.train_seconds
        restored = self.checkpoints.restore(tag, rollback=True)
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
            self.run_dir.record_skip(record)
            log.reopen()  # restore() rewrote metrics.jsonl without the spike's rows
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
