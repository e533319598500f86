"""Fault injection for the reliability and health tests: kills at named points, losses made bad."""

from __future__ import annotations

import os
import signal

_CRASH_COUNTS: dict[str, int] = {}


def crash_point(site: str) -> None:
    """Fault injection for the reliability tests: with LIGO_DS_CRASH_AT=SITE:N this process SIGKILLs itself
    the N-th time it passes SITE ("step": after a backward, before the optimizer step; "eval": inside an
    evaluation; "checkpoint": shards written but not yet committed; "handoff": between fit and pretraining;
    "prepare": after a chunk of documents is written; "rollback": a spike rollback recorded, before training
    goes on; "prune": a checkpoint renamed away for removal, not yet deleted).
    Without the variable it does nothing."""
    spec = os.environ.get("LIGO_DS_CRASH_AT")
    if not spec or spec.rpartition(":")[0] != site:
        return
    _CRASH_COUNTS[site] = _CRASH_COUNTS.get(site, 0) + 1
    if _CRASH_COUNTS[site] == int(spec.rpartition(":")[2]):
        os.kill(os.getpid(), signal.SIGKILL)


def loss_factor(position: int, rank: int) -> float | None:
    """Fault injection for the training-health tests: with LIGO_DS_LOSS_FAULT=FROM:TO:FACTOR[:RANK] the
    loss of every step that starts at a data position in [FROM, TO) is multiplied by FACTOR (nan, inf, or a
    number: a spike) on RANK, or on every rank. Keyed by position, like bad data: a run that skips those
    samples never meets it. Returns None without the variable, or where it does not apply."""
    spec = os.environ.get("LIGO_DS_LOSS_FAULT")
    if not spec:
        return None
    start, end, factor, *only = spec.split(":")
    if not int(start) <= position < int(end) or (only and int(only[0]) != rank):
        return None
    return float(factor)
