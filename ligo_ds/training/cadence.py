"""How often a run evaluates, checkpoints and logs, and which checkpoints it keeps (the Cadence block).

None of it is part of a run's identity: a resume may log, evaluate or save at another pace. The trainer's
components ask `due` whether their turn has come at a step.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..model.generation import read_prompts
from ..options import Block, at_least, flag_name, option


def due(step: int, every: int, last: bool) -> bool:
    """Whether something done every `every` steps (and always at the end) happens after `step` steps."""
    return step % every == 0 or last


@dataclass(frozen=True, kw_only=True)
class Cadence(Block):
    """How often a run evaluates, checkpoints and logs."""

    eval_every: int = option(100, "steps between validation passes", check=at_least(1), identity=False)
    eval_samples: int = option(
        64, "validation windows per pass, the same set at every pass", check=at_least(1), identity=False
    )
    save_every: int = option(
        500, "steps between checkpoints (one is always written at the end)", check=at_least(1), identity=False
    )
    log_every: int = option(10, "steps between metrics rows", check=at_least(1), identity=False)
    sample_prompts: str | None = option(
        None,
        "a text file of prompts, one a line, each continued greedily at every evaluation (metrics.jsonl's "
        "'generated', TensorBoard's text tab)",
        metavar="FILE",
        identity=False,
    )
    sample_tokens: int = option(
        32, f"tokens each {flag_name('sample_prompts')} prompt is continued by", check=at_least(1), identity=False
    )
    # The checkpoint `latest` names is never removed (a resume and a spike rollback load it).
    keep_last: int | None = option(
        None,
        f"keep only the newest N checkpoints (and {flag_name('keep_every')}'s)",
        shown_default="all",
        check=at_least(1),
        identity=False,
    )
    keep_every: int | None = option(
        None,
        f"with {flag_name('keep_last')}: also keep every checkpoint whose step is a multiple of K (a multiple of "
        f"{flag_name('save_every')})",
        check=at_least(1),
        identity=False,
    )

    def check(self) -> None:
        flag = self.flag
        if self.sample_prompts is not None:  # a missing or empty file is refused before any training starts
            read_prompts(self.sample_prompts, flag("sample_prompts"))
        if self.keep_every is None:
            return
        if self.keep_last is None:
            raise ConfigError(
                f"{flag('keep_every')} {self.keep_every} keeps checkpoints that {flag('keep_last')} would remove; "
                f"without {flag('keep_last')} every checkpoint is kept"
            )
        if self.keep_every % self.save_every:
            raise ConfigError(
                f"{flag('keep_every')} {self.keep_every} is not a multiple of {flag('save_every')} "
                f"{self.save_every}: only steps that are multiples of both have checkpoints to keep"
            )
