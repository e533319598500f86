"""Model shape: a typed, frozen view of a Hugging Face config.json.

A model is always specified by an HF config.json (GPT2Config, LlamaConfig, Qwen2Config, or a
Llama-shaped MistralConfig). `ModelConfig.from_hf` parses it once into the fields our decoder needs
and keeps the original dict, so saving writes back exactly what the user gave us (plus dtype). Each value
is checked as the file has it first, and the model's size last (config_checks.py).

Per-family parsing is a table of small functions (`_PARSERS`); nothing downstream asks which family
a model is, except through `family`, a key into the tables in `families.py`. (About 300 lines: every
key of an HF config that ligo_ds reads is read here but RoPE's, which rope.py parses.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config_checks import check_path, check_sizes, check_values
from .rope import parse_rope, scaled_frequencies

# HF activation names -> ours (see model.ACTIVATIONS). "gelu_new" is GPT-2's tanh approximation.
_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything the decoder needs to know about its shape, plus the HF dict it came from."""

    family: str  # key into families.FAMILIES ("gpt2" or "llama")
    model_type: str  # HF model_type as given ("gpt2", "llama", "mistral", "qwen2")
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_positions: int
    norm: str  # "layernorm" | "rmsnorm"
    norm_eps: float
    activation: str  # a key of model.ACTIVATIONS
    gated_mlp: bool  # SwiGLU-style gate * up
    positions: str  # "learned" | "rope"
    rope_theta: float
    qkv_bias: bool
    out_bias: bool
    mlp_bias: bool
    norm_bias: bool
    tie_embeddings: bool
    sliding_window: int | None
    initializer_range: float
    # RoPE scaling (rope.py): a kind of ROPE_TYPES and its parameters as sorted pairs, so
    # that two configs compare equal exactly when their positions are encoded alike.
    rope_type: str = "default"
    rope_scaling: tuple[tuple[str, Any], ...] = ()
    # RMSNorm on queries and keys before RoPE: None, "head" (over each head's dims, one weight of head_dim
    # shared by the heads: Qwen3) or "full" (over the whole projection, a weight per unit: OLMo 2).
    qk_norm: str | None = None
    # Where a block's two norms sit: "pre" (on the sublayer's input, GPT-2 and Llama) or "post" (on its
    # output, before the residual add: OLMo 2, which has no norm on the input).
    norm_position: str = "pre"
    hf_config: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        check_sizes(self)  # positive, and a model a machine could hold: before anything is built from it
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"{self.model_type} config: num_attention_heads ({self.num_heads}) is not divisible by "
                f"num_key_value_heads ({self.num_kv_heads})"
            )
        if self.positions == "rope" and self.head_dim % 2:
            raise ConfigError(f"{self.model_type} config: RoPE needs an even head_dim, got {self.head_dim}")

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def q_norm_size(self) -> int:
        return {None: 0, "head": self.head_dim, "full": self.q_size}[self.qk_norm]

    @property
    def k_norm_size(self) -> int:
        return {None: 0, "head": self.head_dim, "full": self.kv_size}[self.qk_norm]

    def num_params(self, embeddings: bool = True) -> int:
        """Parameter count of the decoder (tied head counted once)."""
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        norm = d * (2 if self.norm_bias else 1)
        attn = d * (self.q_size + 2 * self.kv_size) + self.q_size * d
        attn += (self.q_size + 2 * self.kv_size) * self.qkv_bias + d * self.out_bias
        attn += self.q_norm_size + self.k_norm_size
        mlp = d * f * (3 if self.gated_mlp else 2) + (f * (2 if self.gated_mlp else 1) + d) * self.mlp_bias
        blocks = self.num_layers * (2 * norm + attn + mlp) + norm
        if not embeddings:
            return blocks
        emb = v * d + (self.max_positions * d if self.positions == "learned" else 0)
        head = 0 if self.tie_embeddings else v * d
        return blocks + emb + head

    # ---- HF round trip -------------------------------------------------------------------------
    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> ModelConfig:
        check_values(hf)  # as the file has them: the parsers' float() and bool() would take "nan" and "false"
        model_type = hf.get("model_type")
        if model_type not in _PARSERS:
            raise ConfigError(f"unsupported model_type {model_type!r}; supported: {', '.join(sorted(_PARSERS))}")
        return _PARSERS[model_type](hf)

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """Read a config.json, or the config.json inside a checkpoint directory."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        check_path(path, "model config", "an HF config.json or a checkpoint directory containing one")
        if path.is_dir():
            raise ConfigError(f"model config {str(path)!r} is a folder; expected an HF config.json file")
        try:
            hf = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"model config {str(path)!r} is not valid JSON: {e}") from None
        if not isinstance(hf, dict):
            raise ConfigError(f"model config {str(path)!r} holds a {type(hf).__name__}, expected a JSON object")
        return cls.from_hf(hf)

    def to_hf(self, dtype: str = "float32") -> dict[str, Any]:
        """The HF config dict to write beside the weights."""
        out = dict(self.hf_config)
        out["dtype"] = dtype
        out.pop("torch_dtype", None)
        return out


def _require(hf: dict, key: str, default: Any = ...) -> Any:
    if key in hf and hf[key] is not None:
        return hf[key]
    if default is ...:
        raise ConfigError(f"{hf.get('model_type')} config lacks required key {key!r}")
    return default


def _activation(hf: dict, key: str, default: str) -> str:
    name = _require(hf, key, default)
    if name not in _ACTIVATIONS:
        raise ConfigError(
            f"{hf['model_type']} config: {key}={name!r} is not supported; supported: {', '.join(sorted(_ACTIVATIONS))}"
        )
    return _ACTIVATIONS[name]


def _head_dim(model_type: str, hidden: int, heads: int, explicit: int | None = None) -> int:
    if explicit is not None:  # Llama-family configs may decouple head_dim from hidden / heads
        return explicit
    if not isinstance(heads, int) or heads <= 0 or hidden % heads:
        raise ConfigError(
            f"{model_type} config: hidden size {hidden} is not divisible by the number of attention heads {heads}"
        )
    return hidden // heads


def _gpt2(hf: dict) -> ModelConfig:
    for key, bad in (
        ("scale_attn_by_inverse_layer_idx", True),
        ("scale_attn_weights", False),
        ("add_cross_attention", True),
    ):
        if hf.get(key, not bad) == bad:
            raise ConfigError(f"gpt2 config: {key}={bad} is not supported (expected {not bad})")
    d, h = _require(hf, "n_embd", 768), _require(hf, "n_head", 12)
    return ModelConfig(
        family="gpt2",
        model_type="gpt2",
        vocab_size=_require(hf, "vocab_size", 50257),
        hidden_size=d,
        num_layers=_require(hf, "n_layer", 12),
        num_heads=h,
        num_kv_heads=h,
        head_dim=_head_dim("gpt2", d, h),
        intermediate_size=_require(hf, "n_inner", 4 * d),
        max_positions=_require(hf, "n_positions", 1024),
        norm="layernorm",
        norm_eps=float(_require(hf, "layer_norm_epsilon", 1e-5)),
        activation=_activation(hf, "activation_function", "gelu_new"),
        gated_mlp=False,
        positions="learned",
        rope_theta=0.0,
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
        norm_bias=True,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        sliding_window=None,
        initializer_range=float(_require(hf, "initializer_range", 0.02)),
        hf_config=dict(hf),
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
) -> ModelConfig:
    """A Llama-shaped config; `head_dim` is the class's default when the file has none (Qwen3's 128),
    `mlp_bias` given where the class has no such key (its MLP has no biases whatever the file says),
    `switches` the ModelConfig fields a family sets otherwise (family, qk_norm, norm_position)."""
    d, h = _require(hf, "hidden_size", 4096), _require(hf, "num_attention_heads", 32)
    theta, rope_type, scaling = parse_rope(hf)
    cfg = ModelConfig(
        family=switches.pop("family", "llama"),
        model_type=hf["model_type"],
        vocab_size=_require(hf, "vocab_size", 32000),
        hidden_size=d,
        num_layers=_require(hf, "num_hidden_layers", 32),
        num_heads=h,
        num_kv_heads=_require(hf, "num_key_value_heads", h),
        head_dim=_head_dim(hf["model_type"], d, h, hf.get("head_dim", head_dim)),
        intermediate_size=_require(hf, "intermediate_size", 11008),
        max_positions=_require(hf, "max_position_embeddings", 2048),
        norm="rmsnorm",
        norm_eps=float(_require(hf, "rms_norm_eps", norm_eps)),
        activation=_activation(hf, "hidden_act", "silu"),
        gated_mlp=True,
        positions="rope",
        rope_theta=theta,
        qkv_bias=qkv_bias,
        out_bias=out_bias,
        mlp_bias=bool(hf.get("mlp_bias", False)) if mlp_bias is None else mlp_bias,
        norm_bias=False,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        sliding_window=sliding_window,
        initializer_range=float(_require(hf, "initializer_range", 0.02)),
        rope_type=rope_type,
        rope_scaling=scaling,
        hf_config=dict(hf),
        **switches,
    )
    if rope_type != "default":  # transformers checks the kind's parameters: a missing one fails here, by name
        scaled_frequencies(rope_type, cfg.hf_config, 1)
    return cfg


def _llama(hf: dict) -> ModelConfig:
    bias = bool(hf.get("attention_bias", False))
    return _llama_like(hf, qkv_bias=bias, out_bias=bias, sliding_window=None)


def _mistral(hf: dict) -> ModelConfig:
    return _llama_like(hf, qkv_bias=False, out_bias=False, sliding_window=hf.get("sliding_window"))


def _qwen2(hf: dict) -> ModelConfig:
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


def _qwen3(hf: dict) -> ModelConfig:
    _refuse_sliding_layers(hf)
    bias = bool(hf.get("attention_bias", False))
    return _llama_like(
        hf, qkv_bias=bias, out_bias=bias, sliding_window=None, head_dim=128, mlp_bias=False, qk_norm="head"
    )


def _olmo2(hf: dict) -> ModelConfig:
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
        norm_position="post",
    )


_PARSERS: dict[str, Callable[[dict], ModelConfig]] = {
    "gpt2": _gpt2,
    "llama": _llama,
    "mistral": _mistral,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "olmo2": _olmo2,
}

SUPPORTED_MODEL_TYPES = tuple(sorted(_PARSERS))
