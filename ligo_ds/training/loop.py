"""What the training loop runs with: the batch and seed (the Loop block), and `Training`, the blocks the
trainer takes, whichever command they came from (pretraining's, or the fit's with the operator's schedule).

The batch for optimizer step s on rank r, micro-step m, is global samples  S + m*W*b + r*b + [0, b)
with S the samples consumed before step s, W the world size and b the micro-batch (trainer.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.reading import Data
from ..options import Block, at_least, option
from .cadence import Cadence
from .health import Health
from .schedule import Schedule


@dataclass(frozen=True, kw_only=True)
class Loop(Block):
    """The training loop: batch, clipping and the seed of the data order and initialisation."""

    micro_batch: int = option(8, "sequences per rank per forward", check=at_least(1), identity="global_batch")
    grad_accum: int = option(
        1,
        "micro-batches per optimizer step; global batch = micro x accum x ranks",
        check=at_least(1),
        identity="global_batch",
    )
    grad_clip: float = option(1.0, "max global gradient norm, 0 disables", check=at_least(0))
    seed: int = option(1337, "data order and init seed")

    def global_batch(self, world_size: int) -> int:
        return self.micro_batch * self.grad_accum * world_size


@dataclass(frozen=True)
class Training:
    """The trainer's options: the tokens, the batch, the learning rate over time, the cadence, the health
    policy. A run's other options (the model, DeepSpeed, the optimizer's decay, how the forward runs) are
    the run pipeline's (pipeline.py): the trainer takes an engine already built with them."""

    data: Data
    loop: Loop
    schedule: Schedule
    cadence: Cadence
    health: Health

    def total_steps(self, world_size: int) -> int:
        return self.schedule.total_steps(self.loop.global_batch(world_size), self.data.seq_len)
