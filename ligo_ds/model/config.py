"""Model shape: a typed, frozen view of a Hugging Face config.json.

A model is always specified by an HF config.json (GPT-2, Llama, Mistral, Qwen2, Qwen3, OLMo 2, GPT-NeoX).
`ModelConfig.from_hf` parses it once into the fields our decoder needs and keeps the original dict, so
saving writes back exactly what the user gave us (plus dtype). Each value is checked as the file has it
first (config_checks.py), parsed by its family's function (config_parsers.py), and the model's size checked
last.

Nothing downstream asks which family a model is, except through `family`, a key into the tables in
`families.py`; the decoder reads the switches (norm, residual, q/k norms, positions, biases).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config_checks import check_path, check_sizes, check_values
from .config_parsers import PARSERS, SUPPORTED_MODEL_TYPES
from .rope import scaled_frequencies


@dataclass(frozen=True)
class ModelConfig:
    """Everything the decoder needs to know about its shape, plus the HF dict it came from."""

    family: str  # key into families.FAMILIES ("gpt2", "llama", "olmo2", "gpt_neox")
    model_type: str  # HF model_type as given (a key of config_parsers.PARSERS)
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_positions: int
    norm: str  # "layernorm" | "rmsnorm" | "rmsnorm_1p" (Gemma's: scaled by 1 + weight, in fp32)
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
    # How a block joins its sublayers to the residual stream (decoder.RESIDUALS): "pre_norm" (GPT-2, Llama),
    # "post_norm" (each sublayer's output normed before the add: OLMo 2) or "parallel" (attention and MLP
    # both read the block's input: GPT-NeoX / Pythia).
    residual: str = "pre_norm"
    # The share of each head's dims RoPE turns (the first ones; the rest pass through): GPT-NeoX's rotary_pct.
    partial_rotary: float = 1.0
    # Per-layer attention (Gemma 3): "sliding_attention" or "full_attention" for each layer; empty: every
    # layer alike (sliding_window, if set, applies to all: Mistral). Sliding layers turn RoPE with their
    # own plain base, local_rope_theta; full ones with rope_theta and the scaling above.
    layer_types: tuple[str, ...] = ()
    local_rope_theta: float | None = None
    # Gemma multiplies the embedding by sqrt(hidden_size) (in the weights' dtype), and divides q.k by
    # sqrt(query_pre_attn_scalar) instead of sqrt(head_dim).
    embed_scale: float = 1.0
    query_pre_attn_scalar: float | None = None
    hf_config: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        check_sizes(self)  # positive, and a model a machine could hold: before anything is built from it
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"{self.model_type} config: num_attention_heads ({self.num_heads}) is not divisible by "
                f"num_key_value_heads ({self.num_kv_heads})"
            )
        if self.layer_types and len(self.layer_types) != self.num_layers:
            raise ConfigError(
                f"{self.model_type} config: layer_types lists {len(self.layer_types)} layers, "
                f"num_hidden_layers is {self.num_layers}; expected one type per layer"
            )
        if self.positions == "rope" and (self.rotary_dim % 2 or self.rotary_dim == 0):
            raise ConfigError(
                f"{self.model_type} config: RoPE needs an even, non-zero number of rotary dims, got "
                f"{self.rotary_dim} (head_dim {self.head_dim} x partial rotary factor {self.partial_rotary})"
            )

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attn_scale(self) -> float:
        """What attention multiplies q.k by."""
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    @property
    def norm_offset(self) -> float:
        """What a norm adds to its weight before scaling (Gemma's 1 + w; 0 elsewhere)."""
        return 1.0 if self.norm == "rmsnorm_1p" else 0.0

    @property
    def norms_per_block(self) -> int:
        return 4 if self.residual == "sandwich" else 2

    def layer_type(self, layer: int) -> str:
        return self.layer_types[layer] if self.layer_types else "full_attention"

    def window(self, layer: int) -> int | None:
        """Layer `layer`'s attention window (None: the whole causal past)."""
        if self.layer_types:
            return self.sliding_window if self.layer_types[layer] == "sliding_attention" else None
        return self.sliding_window

    @property
    def rotary_dim(self) -> int:
        """The dims of a head RoPE turns, as transformers computes them."""
        return int(self.head_dim * self.partial_rotary)

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
        blocks = self.num_layers * (self.norms_per_block * norm + attn + mlp) + norm
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
        if model_type not in PARSERS:
            raise ConfigError(f"unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
        cfg = cls(**PARSERS[model_type](hf), hf_config=dict(hf))
        if cfg.rope_type != "default":  # transformers checks the kind's parameters: a missing one fails here, by name
            scaled_frequencies(
                cfg.rope_type, cfg.hf_config, 1, layer_type="full_attention" if cfg.layer_types else None
            )
        return cfg

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
