"""The trainer's state: where a run is (saved in every checkpoint), what one step did, and what a metrics
row averages over."""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class StepResult:
    lr: float
    loss: float  # the mean over ranks and micro-batches; NaN or inf when it was that on some rank
    grad_norm: float | None  # read only for a step that went bad
    nonfinite_ranks: int  # ranks whose loss was NaN or infinite
    good: bool  # applied: finite loss and gradient norm everywhere


@dataclass
class Interval:
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
