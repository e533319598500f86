"""The trainer's checkpoints: the engine's shards plus the trainer's state and RNGs, saved with the run's
retention (--keep-last, --keep-every) and loaded to resume, to branch from another run, or to roll back.
A checkpoint is complete only once every rank's files are on disk (distributed/checkpoint.py)."""

from __future__ import annotations

import random
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..distributed import checkpoint
from ..distributed.launch import Dist
from .cadence import Cadence
from .rundir import RunDir
from .state import TrainState


class Checkpoints:
    """Saves and loads the run's checkpoints (named stepN by the step they hold)."""

    def __init__(self, engine, run_dir: RunDir, d: Dist, cadence: Cadence):
        self.engine, self.run_dir, self.d, self.cadence = engine, run_dir, d, cadence
        self.dir = run_dir.checkpoints

    def latest(self) -> str | None:
        return checkpoint.latest_tag(self.dir)

    def save(self, state: TrainState) -> None:
        client = {
            "train_state": asdict(state),
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
            **checkpoint.universal_info(),
        }
        checkpoint.save_checkpoint(self.engine, self.dir, f"step{state.step}", client, self.d.rank)
        keep_last = self.cadence.keep_last
        if keep_last is not None and self.d.is_main:  # only once `latest` names the new one
            removed = checkpoint.prune(self.dir, keep_last, self.cadence.keep_every)
            if removed:
                print(
                    f"checkpoints: removed {', '.join(removed)} ({self.cadence.flag('keep_last')} {keep_last})",
                    file=sys.stderr,
                )

    def load(self, ckpt_dir: Path, tag: str) -> TrainState:
        """The engine's state from checkpoint `tag` of `ckpt_dir`, the RNGs restored; the trainer's state."""
        client = checkpoint.load_checkpoint(self.engine, ckpt_dir, tag)
        random.setstate(client["rng"]["python"])
        np.random.set_state(client["rng"]["numpy"])
        torch.set_rng_state(client["rng"]["torch"])
        return TrainState(**client["train_state"])

    def restore(self, tag: str, *, rollback: bool = False) -> TrainState:
        """Load this run's checkpoint `tag` and drop the metrics rows logged after it; `rollback`: the run goes
        back to it mid-training (a loss spike), so no resume is announced."""
        state = self.load(self.dir, tag)
        if self.d.is_main:
            self.run_dir.truncate_metrics(state.step)
            if not rollback:
                print(f"resuming {self.run_dir.root} from checkpoint {tag} (step {state.step})", file=sys.stderr)
        return state

    def branch(self, ckpt_dir: Path, tag: str, resuming: bool) -> TrainState:
        """Another run's checkpoint (resume.branch_point): its weights, optimizer state, RNGs and position;
        this run's log starts at that step."""
        if resuming and self.d.is_main:
            self.run_dir.truncate_metrics(-1)
        state = self.load(ckpt_dir, tag)
        if self.d.is_main:
            print(f"branching {self.run_dir.root} from {ckpt_dir / tag} (step {state.step})", file=sys.stderr)
        return state
