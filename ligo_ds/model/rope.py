"""Rotary position embedding: the config's RoPE keys (both layouts the Hub serves), the inverse
frequencies of each RoPE kind, and the cos/sin tables.

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
from typing import Any, Protocol

import torch

from ..errors import ConfigError


class RopeConfig(Protocol):
    """What the tables need of a model_config.ModelConfig (named so, not imported: it imports this)."""

    head_dim: int
    rotary_dim: int
    rope_theta: float
    rope_type: str
    layer_types: tuple[str, ...]
    local_rope_theta: float | None
    hf_config: dict


@functools.lru_cache(maxsize=16)
def _transformers_config(hf_json: str):
    from transformers import AutoConfig

    hf = json.loads(hf_json)
    return AutoConfig.for_model(**hf)


def _hf_key(hf_config: dict) -> str:
    # The dtype keys do not change positions; leaving them out lets configs differing only there share a cache entry.
    return json.dumps({k: v for k, v in hf_config.items() if k not in ("dtype", "torch_dtype")}, sort_keys=True)


def scaled_frequencies(
    rope_type: str, hf_config: dict, seq_len: int, device=None, layer_type: str | None = None
) -> tuple[torch.Tensor, float]:
    """(inverse frequencies, attention factor) of a scaled RoPE kind, from transformers' init function.

    `seq_len` matters to "dynamic" only, and only beyond max_position_embeddings, as in transformers'
    forward: a shorter sequence gets the unscaled frequencies. `layer_type` names the parameters' entry
    in a config with RoPE per layer type (Gemma 3's full_attention).
    """
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    by_type = {"layer_type": layer_type} if layer_type else {}
    try:
        config = _transformers_config(_hf_key(hf_config))
        inv_freq, factor = ROPE_INIT_FUNCTIONS[rope_type](config, device, seq_len, **by_type)
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
    return scaled_frequencies(cfg.rope_type, cfg.hf_config, seq_len, layer_type=GLOBAL if cfg.layer_types else None)


GLOBAL, LOCAL = "full_attention", "sliding_attention"  # ModelConfig.layer_types' values


def frequencies(cfg: RopeConfig, seq_len: int, device=None, layer_type: str = GLOBAL) -> tuple[torch.Tensor, float]:
    """(inverse frequencies of shape (rotary_dim / 2,), attention factor) for sequences of `seq_len`, for
    layers of `layer_type` (sliding layers of a config with a local base turn at that plain base).
    `cfg` is hashable (a frozen ModelConfig), which the scaled kinds' cache relies on."""
    local = layer_type == LOCAL and cfg.local_rope_theta is not None
    if cfg.rope_type == "default" or local:
        dim = cfg.rotary_dim
        exponents = torch.arange(0, dim, 2, device=device, dtype=torch.int64).float() / dim
        return 1.0 / (cfg.local_rope_theta if local else cfg.rope_theta) ** exponents, 1.0
    inv_freq, factor = _scaled_on_cpu(cfg, seq_len)
    return inv_freq.to(device), factor


def rope_tables(
    cfg: RopeConfig, seq_len: int, device=None, layer_type: str = GLOBAL
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, R) in float32 (R the rotary dims of a head), in the "rotate half" layout HF Llama
    uses, for layers of `layer_type`."""
    inv_freq, factor = frequencies(cfg, seq_len, device, layer_type)
    angles_TE = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    angles_TE = torch.cat([angles_TE, angles_TE], dim=-1)
    cos_TE, sin_TE = angles_TE.cos(), angles_TE.sin()
    if factor != 1.0:  # YaRN's attention temperature, folded into the tables as transformers does
        cos_TE, sin_TE = cos_TE * factor, sin_TE * factor
    return cos_TE, sin_TE


def apply_rope(x_BHTE: torch.Tensor, cos_TE: torch.Tensor, sin_TE: torch.Tensor) -> torch.Tensor:
    """Rotate the first R dims of each head (R the tables' width: all of them but under partial rotary),
    in the rotate-half layout over those R; the rest pass through."""
    rotary = cos_TE.shape[-1]
    if rotary < x_BHTE.shape[-1]:
        turned = apply_rope(x_BHTE[..., :rotary], cos_TE, sin_TE)
        return torch.cat([turned, x_BHTE[..., rotary:]], dim=-1)
    x1, x2 = x_BHTE.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x_BHTE * cos_TE.to(x_BHTE.dtype) + rotated * sin_TE.to(x_BHTE.dtype)


# ---- the config's RoPE keys ---------------------------------------------------------------------

# RoPE kinds these families use. "default" is plain RoPE with rope_theta; the scaled kinds are computed by
# transformers' own RoPE init functions (rope.py), so they match its models by construction.
# "longrope" and per-layer kinds are left out: they switch frequencies on the sequence length at run time.
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")
_ROPE_NAMING = ("rope_type", "type", "rope_theta")


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def parse_rope(
    hf: dict, defaults: dict | None = None, partial_ok: bool = False
) -> tuple[float, str, tuple[tuple[str, Any], ...], float]:
    """(theta, kind, scaling parameters, partial rotary factor) of a rotary config.

    transformers >= 5 writes `rope_parameters` (theta inside); older files, every Llama 3.x on the Hub
    among them, have `rope_theta` beside `rope_scaling` (whose kind is `rope_type`, or `type` in older
    still). Both are read; `rope_parameters` wins where both are given. `defaults` holds a family's own
    older keys (GPT-NeoX's rotary_emb_base and rotary_pct), below both. A partial factor other than 1 is
    refused unless the family's attention applies it (`partial_ok`).
    """
    params = {**(defaults or {}), **(hf.get("rope_scaling") or {}), **(hf.get("rope_parameters") or {})}
    rope_type = params.get("rope_type") or params.get("type") or "default"
    if rope_type not in ROPE_TYPES:
        raise ConfigError(
            f"{hf['model_type']} config: rope type {rope_type!r} is not supported; supported: {', '.join(ROPE_TYPES)}"
        )
    partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if isinstance(partial, bool) or not isinstance(partial, (int, float)) or not 0 < partial <= 1:
        raise ConfigError(f"{hf['model_type']} config: partial_rotary_factor={partial!r}; expected a number in (0, 1]")
    if partial != 1.0 and not partial_ok:
        raise ConfigError(
            f"{hf['model_type']} config: partial_rotary_factor={partial!r} is not supported (expected 1.0: "
            "RoPE over the whole head)"
        )
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    named = (*_ROPE_NAMING, "partial_rotary_factor")  # the factor is a field of its own (ModelConfig.partial_rotary)
    scaling = tuple(sorted((k, _hashable(v)) for k, v in params.items() if k not in named))
    if rope_type == "default" and scaling:
        raise ConfigError(
            f"{hf['model_type']} config: RoPE parameters {dict(scaling)} given without a scaling type; "
            f"expected rope_type one of {', '.join(ROPE_TYPES[1:])}"
        )
    return theta, rope_type, scaling, float(partial)
