"""`ligo-ds inspect`: a model's shape and parameter counts, and one forward pass."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.memory import GiB
from ..data.reading import Data
from ..errors import ConfigError
from ..model.config import ModelConfig
from ..model.hf_load import load_model
from ..options import Command, block, option


@dataclass(frozen=True, kw_only=True)
class InspectOptions(Command):
    model: str = option(
        help="HF config.json or checkpoint directory", metavar="CONFIG_OR_DIR", hub="model", identity=False
    )
    data: Data = block(Data, data=None, seq_len=128)


Options = InspectOptions
CONFIG_FILE = False


def physical_memory() -> int:
    """This machine's memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits_in_memory(cfg: ModelConfig, physical: int) -> None:
    """Refuse a model whose fp32 weights alone exceed `physical` bytes: inspect builds it whole in this process,
    and an allocation the machine cannot hold ends in the kernel killing it, or swapping until killed."""
    need = 4 * cfg.num_params()
    if need > physical:
        raise ConfigError(
            f"{cfg.model_type} model of {cfg.num_params():,} parameters needs {need / GiB:,.1f} GiB in float32, more "
            f"than this machine's {physical / GiB:,.1f} GiB of memory; `ligo-ds plan` sizes it from its config alone"
        )


def run(opts: InspectOptions) -> int:
    """Print a model's shape and parameter counts and run one forward pass.

    The pass reads DATA_DIR's validation tokens when --data is given, random ids otherwise.
    """
    check_fits_in_memory(ModelConfig.from_file(opts.model), physical_memory())
    model = load_model(opts.model).eval()
    cfg = model.cfg
    print(
        f"{cfg.model_type} ({cfg.family} family): {cfg.num_layers} layers, hidden {cfg.hidden_size}, "
        f"{cfg.num_heads} heads / {cfg.num_kv_heads} kv heads of {cfg.head_dim}, mlp {cfg.intermediate_size}, "
        f"vocab {cfg.vocab_size}, positions {cfg.positions} (max {cfg.max_positions})"
    )
    print(f"parameters: {model.num_params():,} total, {cfg.num_params(embeddings=False):,} without embeddings")
    T = min(opts.data.seq_len, cfg.max_positions)
    if opts.data.data:
        data = opts.data.open()
        data.check_model(cfg.vocab_size)
        val = data.validation()
        if len(val) < T + 1:
            raise ConfigError(
                f"{opts.data.data} has {len(val)} validation tokens, fewer than {opts.data.flag('seq_len')} {T} + 1"
            )
        chunk = torch.from_numpy(np.asarray(val[: T + 1], dtype=np.int64))[None]
    else:
        chunk = torch.randint(0, cfg.vocab_size, (1, T + 1))
    ids, targets = chunk[:, :-1], chunk[:, 1:]
    with torch.no_grad():
        logits = model(ids)
        loss = model(ids, targets)
    print(
        f"forward: ids {tuple(ids.shape)} -> logits {tuple(logits.shape)}, loss {loss.item():.4f} "
        f"(uniform guess: {torch.log(torch.tensor(float(cfg.vocab_size))).item():.4f})"
    )
    return 0
