"""Decoding: new tokens after a prompt from any forward that gives logits, one full rerun per token.

`ligo-ds generate` (commands/generate.py) prints them as they come; a training run with --sample-prompts
(training/samples.py) writes them at each evaluation. No cache is kept: each new token reruns the sequence,
which is what a check of a small or freshly grown model needs, not a server, and what runs unchanged on the
trainer's engine (a ZeRO-3 forward gathers the weights as any forward does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy at temperature 0, else sampled from the logits divided by the
    temperature, cut to the top k and to the smallest set holding probability top p."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None


GREEDY = Sampling()


def next_token(logits: torch.Tensor, how: Sampling, gen: torch.Generator | None) -> int:
    """One token from the last position's logits (V,)."""
    if how.temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / how.temperature
    if how.top_k is not None and how.top_k < logits.numel():
        logits = logits.masked_fill(logits < torch.topk(logits, how.top_k).values[-1], float("-inf"))
    if how.top_p is not None:
        ordered, order = torch.sort(logits, descending=True)
        probs = ordered.softmax(-1)
        drop = probs.cumsum(-1) - probs > how.top_p  # keep the smallest prefix reaching top_p (its first always)
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return int(torch.multinomial(logits.softmax(-1), 1, generator=gen))


@torch.no_grad()
def generate(
    forward: Callable[[torch.Tensor], torch.Tensor],
    ids: list[int],
    max_new: int,
    limit: int,
    stops: set[int],
    how: Sampling = GREEDY,
    gen: torch.Generator | None = None,
    *,
    device: torch.device | str = "cpu",
    agree: Callable[[int], int] = lambda token: token,
    emit: Callable[[list[int]], None] | None = None,
) -> list[int]:
    """The new ids after `ids` (a stop id included when one ends it), at most `max_new` and no sequence longer
    than `limit` (the model's positions). `agree(token)` makes the ranks of a ZeRO-3 engine continue with one
    token (rank 0's), so they take the same number of forwards together; `emit(new)` after each token."""
    new: list[int] = []
    while len(new) < max_new and len(ids) + len(new) < limit:
        window = torch.tensor([ids + new], device=device)
        token = agree(next_token(forward(window)[0, -1], how, gen))
        new.append(token)
        if emit is not None:
            emit(new)
        if token in stops:
            break
    return new


def read_prompts(path: str | Path, flag: str) -> list[str]:
    """The prompts of a text file, one a non-blank line; `flag` names the option for the messages."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{flag} {str(path)!r} is not a file; expected a text file, a prompt a line")
    try:
        lines = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as e:
        raise ConfigError(f"{flag} {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not lines:
        raise ConfigError(f"{flag} {str(path)!r} holds no prompt; expected a text file, a prompt a line")
    return lines
