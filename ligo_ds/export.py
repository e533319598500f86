"""`ligo-ds export`: any saved checkpoint of a run -> an HF checkpoint directory.

Reads the ZeRO shards from disk and assembles full fp32 weights in CPU memory (no GPU, no process
group), then streams them to safetensors shards.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .distributed import checkpoint
from .errors import ConfigError
from .hf_io import write_checkpoint
from .model_config import ModelConfig
from .rundir import RunDir


def export(run: str | Path, out: str | Path, tag: str | None = None) -> Path:
    run_dir = RunDir(run)
    if not run_dir.config.is_file():
        raise ConfigError(f"{str(run)!r} is not a ligo_ds run directory (no config.json)")
    record = json.loads(run_dir.config.read_text())
    model_cfg = ModelConfig.from_hf(record["model_config"])
    tag = tag or checkpoint.latest_tag(run_dir.checkpoints)
    if tag is None:
        raise ConfigError(f"run {str(run)!r} has no complete checkpoint yet (no checkpoints/latest)")
    checkpoint.read_manifest(run_dir.checkpoints, tag)  # refuses an incomplete checkpoint, naming what is missing
    state = checkpoint.fp32_state_from_checkpoint(run_dir.checkpoints, tag)
    return write_checkpoint(model_cfg, state.items(), out, dtype=torch.float32)
