"""The package's public loading functions: a model named as any command's MODEL option names one.

`ligo_ds.load_model` and `ligo_ds.load_config` take what the CLI takes, resolved by the same code: a local
HF checkpoint directory or config.json, a Hugging Face Hub id `ORG/NAME[@REVISION]` (model/hub.py: the
local cache, or a download when online; never a repository's code), or a RUN_DIR of `pretrain`, `fit` or
`grow` (its final model, training/rundir.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .model import hub
from .model.config import ModelConfig
from .model.decoder import Decoder
from .model.hf_load import load_model as load_directory
from .training.rundir import final_model


def model_path(model: str | Path, kind: str = "model") -> Path:
    """The local path a MODEL argument names (see the module's doc); `kind` is what a Hub id must provide:
    "model" (weights too) or "config"."""
    resolved = hub.resolve(str(model), "model", kind)
    return final_model(Path(resolved))[0]


def load_model(model: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Decoder:
    """Our Decoder with the weights of `model`; a config.json gives a random initialisation."""
    return load_directory(model_path(model), dtype=dtype, device=device)


def load_config(model: str | Path) -> ModelConfig:
    """The ModelConfig of `model` (a config.json, a checkpoint, a Hub id or a RUN_DIR's final model)."""
    return ModelConfig.from_file(model_path(model, "config"))
