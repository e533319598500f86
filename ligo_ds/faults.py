"""Fault injection for the reliability tests (tests/test_reliability.py): kills at named points."""

from __future__ import annotations

import os
import signal

_CRASH_COUNTS: dict[str, int] = {}


def crash_point(site: str) -> None:
    """Fault injection for the reliability tests: with LIGO_DS_CRASH_AT=SITE:N this process SIGKILLs itself
    the N-th time it passes SITE ("step": after a backward, before the optimizer step; "eval": inside an
    evaluation; "checkpoint": shards written but not yet committed; "handoff": between fit and pretraining;
    "prepare": after a chunk of documents is written).
    Without the variable it does nothing."""
    spec = os.environ.get("LIGO_DS_CRASH_AT")
    if not spec or spec.rpartition(":")[0] != site:
        return
    _CRASH_COUNTS[site] = _CRASH_COUNTS.get(site, 0) + 1
    if _CRASH_COUNTS[site] == int(spec.rpartition(":")[2]):
        os.kill(os.getpid(), signal.SIGKILL)
