"""Where a run starts from: its own latest complete checkpoint (a resume), another run's checkpoint
(--branch-from), or nothing (a fresh start). Decided before the engine is built, because a checkpoint
written by another number of ranks is converted to DeepSpeed's universal layout and the engine told to
load that (the data position is a global sample count, so it carries over as long as the global batch
is the same, which the run identity enforces)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ..distributed import checkpoint
from ..errors import ConfigError
from .schedule import Schedule, check_branch
from .session import RunSpec, Session


def latest(s: Session) -> str | None:
    """The checkpoint tag to resume from, checked complete; None for a fresh start."""
    tag = checkpoint.latest_tag(s.run_dir.checkpoints) if s.resuming else None
    if tag is None:
        return None
    return _loadable(s, s.run_dir.checkpoints, tag)


def _loadable(s: Session, ckpt_dir: Path, tag: str) -> str:
    """`tag` in `ckpt_dir` checked complete, converted to the universal layout when another number of
    ranks wrote it (and the engine told to load that)."""
    manifest = checkpoint.read_manifest(ckpt_dir, tag)
    if manifest["world_size"] == s.d.world_size:
        return tag
    if s.d.is_main:
        print(
            f"checkpoint {tag} was written by {manifest['world_size']} ranks, resuming on {s.d.world_size}: "
            "converting it to a universal checkpoint",
            file=sys.stderr,
        )
    s.ds_config.setdefault("checkpoint", {})["load_universal"] = True
    return checkpoint.to_universal(ckpt_dir, tag, s.d.rank)


# What may differ between a run and the run it branched from: its length and the schedule after the
# branch point (check_branch holds the lr continuous).
BRANCH_MAY_DIFFER = ("total_steps", "min_lr", "schedule", "branched_from")


def branch_point(s: Session, spec: RunSpec) -> tuple[Path, str]:
    """The branch_from option, RUN/checkpoints/TAG, for a run starting fresh: (checkpoint directory, tag to load), after
    checking the other run is this one up to its length and schedule, and that the lr is continuous."""
    given, flag = spec.branch_from, spec.flags["branch_from"]
    ckpt = Path(given)
    run = ckpt.parent.parent
    if ckpt.parent.name != "checkpoints" or not (run / "config.json").is_file() or not ckpt.is_dir():
        raise ConfigError(
            f"{flag} {given!r}: expected a checkpoint of a ligo_ds run, RUN_DIR/checkpoints/TAG "
            f"(a run's tags are listed in its checkpoints/ directory)"
        )
    theirs = json.loads((run / "config.json").read_text()).get("identity") or {}
    diffs = [
        f"{k}: {theirs.get(k)!r} there, {s.identity.get(k)!r} here"
        for k in sorted(set(theirs) | set(s.identity))
        if k not in BRANCH_MAY_DIFFER and theirs.get(k) != s.identity.get(k)
    ]
    if diffs:
        raise ConfigError(
            f"{flag} {given!r}: that run differs from this one in more than its length and schedule: {'; '.join(diffs)}"
        )
    if not re.fullmatch(r"step\d+", ckpt.name):
        raise ConfigError(f"{flag} {given!r}: {ckpt.name!r} is not a checkpoint tag (stepN)")
    step = int(ckpt.name.removeprefix("step"))  # the trainer names each checkpoint by its step
    theirs_schedule = Schedule(
        max_steps=theirs["total_steps"],
        lr=theirs["lr"],
        min_lr=theirs["min_lr"],
        warmup_steps=theirs["warmup_steps"],
        **(theirs.get("schedule") or {}),
    )
    check_branch(step, theirs["total_steps"], theirs_schedule, s.identity["total_steps"], spec.training.schedule)
    return ckpt.parent, _loadable(s, ckpt.parent, ckpt.name)
