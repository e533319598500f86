"""Per-family parsing of an HF config.json: one small function per model_type (`PARSERS`), each giving the
ModelConfig fields (config.py) its family's keys and class defaults say. Every key of an HF config that
ligo_ds reads is read here, but RoPE's (rope.py). A new family is a function here and a row of the table;
where its weight names differ, a table in families.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .config_checks import activation, head_dim_of, require
from .rope import parse_rope


def _gpt2(hf: dict) -> dict[str, Any]:
    for key, bad in (
        ("scale_attn_by_inverse_layer_idx", True),
        ("scale_attn_weights", False),
        ("add_cross_attention", True),
    ):
        if hf.get(key, not bad) == bad:
            raise ConfigError(f"gpt2 config: {key}={bad} is not supported (expected {not bad})")
    d, h = require(hf, "n_embd", 768), require(hf, "n_head", 12)
    return dict(
        family="gpt2",
        model_type="gpt2",
        vocab_size=require(hf, "vocab_size", 50257),
        hidden_size=d,
        num_layers=require(hf, "n_layer", 12),
        num_heads=h,
        num_kv_heads=h,
        head_dim=head_dim_of("gpt2", d, h),
        intermediate_size=require(hf, "n_inner", 4 * d),
        max_positions=require(hf, "n_positions", 1024),
        norm="layernorm",
        norm_eps=float(require(hf, "layer_norm_epsilon", 1e-5)),
        activation=activation(hf, "activation_function", "gelu_new"),
        gated_mlp=False,
        positions="learned",
        rope_theta=0.0,
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
        norm_bias=True,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        sliding_window=None,
        initializer_range=float(require(hf, "initializer_range", 0.02)),
    )


def _llama_like(
    hf: dict,
    *,
    qkv_bias: bool,
    out_bias: bool,
    sliding_window: int | None,
    head_dim: int | None = None,
    norm_eps: float = 1e-6,
    mlp_bias: bool | None = None,
    **switches: Any,
) -> dict[str, Any]:
    """A Llama-shaped config; `head_dim` is the class's default when the file has none (Qwen3's 128),
    `mlp_bias` given where the class has no such key (its MLP has no biases whatever the file says),
    `switches` the ModelConfig fields a family sets otherwise (family, qk_norm, residual)."""
    d, h = require(hf, "hidden_size", 4096), require(hf, "num_attention_heads", 32)
    theta, rope_type, scaling, partial_rotary = parse_rope(hf)
    return dict(
        family=switches.pop("family", "llama"),
        model_type=hf["model_type"],
        vocab_size=require(hf, "vocab_size", 32000),
        hidden_size=d,
        num_layers=require(hf, "num_hidden_layers", 32),
        num_heads=h,
        num_kv_heads=require(hf, "num_key_value_heads", h),
        head_dim=head_dim_of(hf["model_type"], d, h, hf.get("head_dim", head_dim)),
        intermediate_size=require(hf, "intermediate_size", 11008),
        max_positions=require(hf, "max_position_embeddings", 2048),
        norm="rmsnorm",
        norm_eps=float(require(hf, "rms_norm_eps", norm_eps)),
        activation=activation(hf, "hidden_act", "silu"),
        gated_mlp=True,
        positions="rope",
        rope_theta=theta,
        qkv_bias=qkv_bias,
        out_bias=out_bias,
        mlp_bias=bool(hf.get("mlp_bias", False)) if mlp_bias is None else mlp_bias,
        norm_bias=False,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        sliding_window=sliding_window,
        initializer_range=float(require(hf, "initializer_range", 0.02)),
        rope_type=rope_type,
        rope_scaling=scaling,
        partial_rotary=partial_rotary,
        **switches,
    )


def _llama(hf: dict) -> dict[str, Any]:
    bias = bool(hf.get("attention_bias", False))
    return _llama_like(hf, qkv_bias=bias, out_bias=bias, sliding_window=None)


def _mistral(hf: dict) -> dict[str, Any]:
    return _llama_like(hf, qkv_bias=False, out_bias=False, sliding_window=hf.get("sliding_window"))


def _qwen2(hf: dict) -> dict[str, Any]:
    if hf.get("use_sliding_window", False):
        raise ConfigError("qwen2 config: use_sliding_window=true is not supported (per-layer windows); expected false")
    return _llama_like(hf, qkv_bias=True, out_bias=False, sliding_window=None)


def _refuse_sliding_layers(hf: dict) -> None:
    """Qwen3 and Gemma-style configs may make some layers sliding-window ones: ligo_ds runs every layer
    with full attention, so such a config is refused rather than run differently."""
    sliding = [i for i, t in enumerate(hf.get("layer_types") or []) if t != "full_attention"]
    if hf.get("use_sliding_window", False) or sliding:
        raise ConfigError(
            f"{hf['model_type']} config: sliding-window layers (use_sliding_window="
            f"{hf.get('use_sliding_window', False)}, layer_types not full_attention at {sliding[:8]}) are not "
            "supported; expected use_sliding_window false and every layer full_attention"
        )


def _qwen3(hf: dict) -> dict[str, Any]:
    _refuse_sliding_layers(hf)
    bias = bool(hf.get("attention_bias", False))
    return _llama_like(
        hf, qkv_bias=bias, out_bias=bias, sliding_window=None, head_dim=128, mlp_bias=False, qk_norm="head"
    )


def _olmo2(hf: dict) -> dict[str, Any]:
    bias = bool(hf.get("attention_bias", False))
    return _llama_like(
        hf,
        qkv_bias=bias,
        out_bias=bias,
        sliding_window=None,
        norm_eps=1e-5,
        mlp_bias=False,
        family="olmo2",
        qk_norm="full",
        residual="post_norm",
    )


def _gpt_neox(hf: dict) -> dict[str, Any]:
    """GPT-NeoX (Pythia): LayerNorms with biases, biased projections, exact GELU, RoPE on the first
    rotary_pct of each head, attention and MLP in parallel (use_parallel_residual, the default) or in turn."""
    d, h = require(hf, "hidden_size", 6144), require(hf, "num_attention_heads", 64)
    legacy = {"rope_theta": hf.get("rotary_emb_base", 10000.0), "partial_rotary_factor": hf.get("rotary_pct", 0.25)}
    theta, rope_type, scaling, partial_rotary = parse_rope(hf, legacy, partial_ok=True)
    bias = bool(hf.get("attention_bias", True))
    return dict(
        family="gpt_neox",
        model_type="gpt_neox",
        vocab_size=require(hf, "vocab_size", 50432),
        hidden_size=d,
        num_layers=require(hf, "num_hidden_layers", 44),
        num_heads=h,
        num_kv_heads=h,
        head_dim=head_dim_of("gpt_neox", d, h),
        intermediate_size=require(hf, "intermediate_size", 24576),
        max_positions=require(hf, "max_position_embeddings", 2048),
        norm="layernorm",
        norm_eps=float(require(hf, "layer_norm_eps", 1e-5)),
        activation=activation(hf, "hidden_act", "gelu"),
        gated_mlp=False,
        positions="rope",
        rope_theta=theta,
        qkv_bias=bias,
        out_bias=bias,
        mlp_bias=True,
        norm_bias=True,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        sliding_window=None,
        initializer_range=float(require(hf, "initializer_range", 0.02)),
        rope_type=rope_type,
        rope_scaling=scaling,
        residual="parallel" if hf.get("use_parallel_residual", True) else "pre_norm",
        partial_rotary=partial_rotary,
    )


LAYER_TYPES = ("sliding_attention", "full_attention")
_SOFT_CAPS = ("final_logit_softcapping", "attn_logit_softcapping")


def _gemma3(hf: dict) -> dict[str, Any]:
    """Gemma 3 (text): RMSNorms scaling by 1 + w, four per block (before and after each sublayer), per-head
    q/k norms, GeGLU, an embedding scaled by sqrt(hidden), q.k / sqrt(query_pre_attn_scalar), and layers
    of two kinds: sliding-window ones with a plain local RoPE base, full ones with the global base and its
    scaling. Read from either config layout: transformers 5's rope_parameters per layer type, or the Hub
    files' rope_theta, rope_local_base_freq, rope_scaling and sliding_window_pattern."""
    t = hf["model_type"]
    for key in _SOFT_CAPS:
        if hf.get(key) is not None:
            raise ConfigError(f"{t} config: {key}={hf[key]!r} is not supported (soft-capping); expected null")
    if hf.get("use_bidirectional_attention"):
        raise ConfigError(f"{t} config: use_bidirectional_attention=true is not supported; expected a causal LM")
    layers = require(hf, "num_hidden_layers", 26)
    pattern = hf.get("sliding_window_pattern", 6)
    types = hf.get("layer_types") or [
        "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(layers)
    ]
    unknown = sorted({x for x in types if x not in LAYER_TYPES}, key=str)
    if unknown:
        raise ConfigError(f"{t} config: layer_types {unknown} unknown; expected each one of {', '.join(LAYER_TYPES)}")
    nested = hf.get("rope_parameters") or {}
    full = {**(nested.get("full_attention") or {}), **(hf.get("rope_scaling") or {})}
    full.setdefault("rope_theta", hf.get("rope_theta", 1e6))
    local = {**(nested.get("sliding_attention") or {})}
    local.setdefault("rope_theta", hf.get("rope_local_base_freq", 1e4))
    theta, rope_type, scaling, _ = parse_rope({"model_type": t, "rope_parameters": full})
    local_theta, local_type, _, _ = parse_rope({"model_type": t, "rope_parameters": local})
    if local_type != "default":
        raise ConfigError(f"{t} config: sliding layers' rope type {local_type!r} is not supported; expected default")
    d, h = require(hf, "hidden_size", 2304), require(hf, "num_attention_heads", 8)
    bias = bool(hf.get("attention_bias", False))
    return dict(
        family="gemma3",
        model_type=t,
        vocab_size=require(hf, "vocab_size", 262208),
        hidden_size=d,
        num_layers=layers,
        num_heads=h,
        num_kv_heads=require(hf, "num_key_value_heads", 4),
        head_dim=head_dim_of(t, d, h, hf.get("head_dim", 256)),
        intermediate_size=require(hf, "intermediate_size", 9216),
        max_positions=require(hf, "max_position_embeddings", 131072),
        norm="rmsnorm_1p",
        norm_eps=float(require(hf, "rms_norm_eps", 1e-6)),
        activation=activation(hf, "hidden_activation", "gelu_pytorch_tanh"),
        gated_mlp=True,
        positions="rope",
        rope_theta=theta,
        qkv_bias=bias,
        out_bias=bias,
        mlp_bias=False,
        norm_bias=False,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        sliding_window=require(hf, "sliding_window", 4096),
        initializer_range=float(require(hf, "initializer_range", 0.02)),
        rope_type=rope_type,
        rope_scaling=scaling,
        qk_norm="head",
        residual="sandwich",
        layer_types=tuple(types),
        local_rope_theta=local_theta,
        embed_scale=d**0.5,
        query_pre_attn_scalar=float(require(hf, "query_pre_attn_scalar", 256)),
    )


PARSERS: dict[str, Callable[[dict], dict[str, Any]]] = {
    "gpt2": _gpt2,
    "llama": _llama,
    "mistral": _mistral,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "olmo2": _olmo2,
    "gpt_neox": _gpt_neox,
    "gemma3_text": _gemma3,
}

SUPPORTED_MODEL_TYPES = tuple(sorted(PARSERS))
