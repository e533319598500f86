"""Rotary position embedding: the inverse frequencies of each RoPE kind, and the cos/sin tables.

Plain RoPE ("default") is computed here. The scaled kinds (linear, dynamic NTK, YaRN, Llama 3) take
their inverse frequencies and attention factor from transformers' own RoPE init functions, called on the
model's own config, so a grown or trained model encodes positions exactly as the model class it is saved
as; nothing of those formulas is re-derived here.

Tables are computed per forward rather than stored as buffers: DeepSpeed casts floating buffers to bf16,
which would round the angles of late positions.
"""

from __future__ import annotations

import functools
import json
from typing import Protocol

import torch

from ..errors import ConfigError


class RopeConfig(Protocol):
    """What the tables need of a model_config.ModelConfig (named so, not imported: it imports this)."""

    head_dim: int
    rope_theta: float
    rope_type: str
    hf_config: dict


@functools.lru_cache(maxsize=16)
def _transformers_config(hf_json: str):
    from transformers import AutoConfig

    hf = json.loads(hf_json)
    return AutoConfig.for_model(**hf)


def _hf_key(hf_config: dict) -> str:
    # The dtype keys do not change positions; leaving them out lets configs differing only there share a cache entry.
    return json.dumps({k: v for k, v in hf_config.items() if k not in ("dtype", "torch_dtype")}, sort_keys=True)


def scaled_frequencies(rope_type: str, hf_config: dict, seq_len: int, device=None) -> tuple[torch.Tensor, float]:
    """(inverse frequencies, attention factor) of a scaled RoPE kind, from transformers' init function.

    `seq_len` matters to "dynamic" only, and only beyond max_position_embeddings, as in transformers'
    forward: a shorter sequence gets the unscaled frequencies.
    """
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    try:
        inv_freq, factor = ROPE_INIT_FUNCTIONS[rope_type](_transformers_config(_hf_key(hf_config)), device, seq_len)
    except (KeyError, ValueError, TypeError) as e:
        given = hf_config.get("rope_parameters") or hf_config.get("rope_scaling")
        raise ConfigError(
            f"{hf_config.get('model_type')} config: RoPE parameters {given} do not describe a {rope_type!r} "
            f"scaling: {e}"
        ) from None
    return inv_freq.to(device=device, dtype=torch.float32), float(factor)


@functools.lru_cache(maxsize=64)
def _scaled_on_cpu(cfg: RopeConfig, seq_len: int) -> tuple[torch.Tensor, float]:
    # Once per config and length, not per forward: transformers' init function is Python on the hot path.
    return scaled_frequencies(cfg.rope_type, cfg.hf_config, seq_len)


def frequencies(cfg: RopeConfig, seq_len: int, device=None) -> tuple[torch.Tensor, float]:
    """(inverse frequencies of shape (head_dim / 2,), attention factor) for sequences of `seq_len`.
    `cfg` is hashable (a frozen ModelConfig), which the scaled kinds' cache relies on."""
    if cfg.rope_type == "default":
        exponents = torch.arange(0, cfg.head_dim, 2, device=device, dtype=torch.int64).float() / cfg.head_dim
        return 1.0 / cfg.rope_theta**exponents, 1.0
    inv_freq, factor = _scaled_on_cpu(cfg, seq_len)
    return inv_freq.to(device), factor


def rope_tables(cfg: RopeConfig, seq_len: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, E) in float32, in the "rotate half" layout HF Llama uses."""
    inv_freq, factor = frequencies(cfg, seq_len, device)
    angles_TE = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    angles_TE = torch.cat([angles_TE, angles_TE], dim=-1)
    cos_TE, sin_TE = angles_TE.cos(), angles_TE.sin()
    if factor != 1.0:  # YaRN's attention temperature, folded into the tables as transformers does
        cos_TE, sin_TE = cos_TE * factor, sin_TE * factor
    return cos_TE, sin_TE


def apply_rope(x_BHTE: torch.Tensor, cos_TE: torch.Tensor, sin_TE: torch.Tensor) -> torch.Tensor:
    x1, x2 = x_BHTE.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x_BHTE * cos_TE.to(x_BHTE.dtype) + rotated * sin_TE.to(x_BHTE.dtype)
