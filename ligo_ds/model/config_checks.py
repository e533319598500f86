"""What an HF config.json must hold before a model is built from it: each key ligo_ds reads of the JSON
type and range it needs, and a model no larger than a machine could hold.

The parsers in config.py convert what they read (`float(...)`, `bool(...)`), which takes `true` for a size,
`"nan"` for an epsilon and `"false"` for true; so the values are checked as they are in the file first,
against a table of what each key must be (`KINDS`). The size bound is checked from the parsed config,
whose parameter count is arithmetic: it refuses a typo'd size before anything is allocated for it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# Beyond these a config is a typo, not a model: the largest dense models trained hold about 1e12 parameters
# and about 100 layers. Refused before anything is built, since building even the meta-device modules of
# 1e12 layers does not finish, and materialising 1e13 parameters needs 40 TB.
MAX_PARAMS = 10**13
MAX_LAYERS = 10_000


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # JSON true is a Python int


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


# What each kind accepts, and how the message says it.
_KIND_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "size": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "positive": (lambda v: _is_number(v) and v > 0, "a finite number above 0"),
    "non-negative": (lambda v: _is_number(v) and v >= 0, "a finite number of at least 0"),
    "number": (_is_number, "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "name": (lambda v: isinstance(v, str), "a string"),
    "object": (lambda v: isinstance(v, dict), "a JSON object"),
}

# Every key of an HF config that config.py reads (both GPT-2's names and the Llama family's), by kind.
# A null value is the same as an absent key: the parser takes its default.
KINDS: dict[str, str] = {
    **dict.fromkeys(
        (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "intermediate_size",
            "max_position_embeddings",
            "sliding_window",
            "n_embd",
            "n_head",
            "n_layer",
            "n_inner",
            "n_positions",
        ),
        "size",
    ),
    **dict.fromkeys(("rms_norm_eps", "layer_norm_epsilon", "rope_theta"), "positive"),
    "initializer_range": "non-negative",
    "partial_rotary_factor": "number",
    **dict.fromkeys(
        (
            "tie_word_embeddings",
            "attention_bias",
            "mlp_bias",
            "use_sliding_window",
            "scale_attn_weights",
            "scale_attn_by_inverse_layer_idx",
            "add_cross_attention",
        ),
        "bool",
    ),
    **dict.fromkeys(("model_type", "hidden_act", "activation_function"), "name"),
    **dict.fromkeys(("rope_scaling", "rope_parameters"), "object"),
}
# The keys of the RoPE objects read here (rope.py hands the rest to transformers, which checks them).
ROPE_KINDS = {
    "rope_theta": "positive",
    "factor": "positive",
    "partial_rotary_factor": "number",
    "rope_type": "name",
    "type": "name",
}


def check_values(hf: dict[str, Any]) -> None:
    """Refuse the first key of `hf` (or of its RoPE objects) whose value is not of its kind (KINDS)."""
    where = f"{hf['model_type']} config" if isinstance(hf.get("model_type"), str) else "model config"
    for key, value, kind in _entries(hf):
        ok, expected = _KIND_CHECKS[kind]
        if value is not None and not ok(value):
            raise ConfigError(f"{where}: {key}={_json(value)}, expected {expected}")


def _entries(hf: dict[str, Any]):
    """(key as the message names it, value, kind) of every checked key, the RoPE objects' own keys included."""
    for key, value in hf.items():
        if key in KINDS:
            yield key, value, KINDS[key]
        if KINDS.get(key) == "object" and isinstance(value, dict):
            yield from ((f"{key}.{k}", v, ROPE_KINDS[k]) for k, v in value.items() if k in ROPE_KINDS)


def _json(value: Any) -> str:
    """The value as the file spells it (true, "nan", NaN), so the user finds it."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


# The decoder's sizes, each a positive integer (ModelConfig's field names).
SIZES = (
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "intermediate_size",
    "max_positions",
)


def check_sizes(cfg: Any) -> None:
    """Refuse a parsed config (a ModelConfig) whose sizes are not positive integers, or that describes a
    model no machine could hold: more than MAX_LAYERS layers or MAX_PARAMS parameters."""
    for name in SIZES:
        value = getattr(cfg, name)
        if not _is_int(value) or value <= 0:
            raise ConfigError(f"{cfg.model_type} config: {name}={value!r}, expected a positive integer")
    if cfg.num_layers > MAX_LAYERS:
        raise ConfigError(
            f"{cfg.model_type} config: {cfg.num_layers:,} layers, more than the {MAX_LAYERS:,} ligo_ds accepts "
            "(expected a model a machine could hold)"
        )
    n = cfg.num_params()
    if n > MAX_PARAMS:
        raise ConfigError(
            f"{cfg.model_type} config describes {n:,} parameters (hidden size {cfg.hidden_size:,}, "
            f"{cfg.num_layers:,} layers, vocabulary {cfg.vocab_size:,}), more than the {MAX_PARAMS:,} ligo_ds "
            "accepts (expected a model a machine could hold)"
        )


def check_path(path: Path, what: str, expected: str) -> None:
    """Refuse a `path` that is missing or neither a regular file nor a folder (a device such as /dev/zero, a
    pipe, a socket: reading one blocks or never ends). `what` names it, `expected` says what it should be."""
    if not path.exists():
        raise ConfigError(f"{what} {str(path)!r} does not exist (expected {expected})")
    if not (path.is_file() or path.is_dir()):
        raise ConfigError(f"{what} {str(path)!r} is not a regular file or folder (expected {expected})")


# ---- reading an HF config's keys (config_parsers.py) ---------------------------------------------

# HF activation names -> ours (see decoder.ACTIVATIONS). "gelu_new" is GPT-2's tanh approximation.
HF_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


def require(hf: dict, key: str, default: Any = ...) -> Any:
    if key in hf and hf[key] is not None:
        return hf[key]
    if default is ...:
        raise ConfigError(f"{hf.get('model_type')} config lacks required key {key!r}")
    return default


def activation(hf: dict, key: str, default: str) -> str:
    name = require(hf, key, default)
    if name not in HF_ACTIVATIONS:
        raise ConfigError(
            f"{hf['model_type']} config: {key}={name!r} is not supported; supported: "
            f"{', '.join(sorted(HF_ACTIVATIONS))}"
        )
    return HF_ACTIVATIONS[name]


def head_dim_of(model_type: str, hidden: int, heads: int, explicit: int | None = None) -> int:
    if explicit is not None:  # Llama-family configs may decouple head_dim from hidden / heads
        return explicit
    if not isinstance(heads, int) or heads <= 0 or hidden % heads:
        raise ConfigError(
            f"{model_type} config: hidden size {hidden} is not divisible by the number of attention heads {heads}"
        )
    return hidden // heads
