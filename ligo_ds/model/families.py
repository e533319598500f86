"""Per-family knowledge as data: Hugging Face weight names <-> ours, and each family's storage quirks; and the
functions that read the tables to turn one of our tensors into the HF tensors it stands for, and back.

Our parameter names are the same for every family (model.py). Each entry maps one of ours to the HF
tensors it is made of; several HF tensors are concatenated along dim 0 into one of ours (fused QKV,
fused gate/up), and `split` names the ModelConfig sizes to cut it back. "{}" is the layer index.
Entries for tensors a given config does not have (biases, learned positions, an untied head) are simply
not looked up: the loader walks our model's own state_dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from .config import ModelConfig


@dataclass(frozen=True)
class Family:
    names: Mapping[str, tuple[str, ...]]
    # ours -> ModelConfig attribute per HF piece, for entries made of several HF tensors.
    split: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # GPT-2 stores its projections as Conv1D with weights laid out (in, out); ours are (out, in).
    transposed: frozenset[str] = frozenset()
    # Buffers that older transformers versions saved beside the weights, and today's classes no longer
    # list among the keys they ignore (hf_load also honours each class's own list); skipped on load.
    buffer_suffixes: tuple[str, ...] = ()
    # GPT-NeoX fuses q, k and v head by head: its rows are [q_0; k_0; v_0; q_1; ...], ours [q; k; v].
    per_head_qkv: frozenset[str] = frozenset()
    # Another name a file may hold a tensor under: the Hub's files and save_pretrained say embed_out, the
    # class of transformers 5 (and a state_dict saved from it by hand) lm_head.
    also_named: Mapping[str, str] = field(default_factory=dict)


GPT2 = Family(
    names={
        "tok_emb.weight": ("transformer.wte.weight",),
        "pos_emb.weight": ("transformer.wpe.weight",),
        "blocks.{}.norm1.weight": ("transformer.h.{}.ln_1.weight",),
        "blocks.{}.norm1.bias": ("transformer.h.{}.ln_1.bias",),
        "blocks.{}.attn.qkv.weight": ("transformer.h.{}.attn.c_attn.weight",),
        "blocks.{}.attn.qkv.bias": ("transformer.h.{}.attn.c_attn.bias",),
        "blocks.{}.attn.out.weight": ("transformer.h.{}.attn.c_proj.weight",),
        "blocks.{}.attn.out.bias": ("transformer.h.{}.attn.c_proj.bias",),
        "blocks.{}.norm2.weight": ("transformer.h.{}.ln_2.weight",),
        "blocks.{}.norm2.bias": ("transformer.h.{}.ln_2.bias",),
        "blocks.{}.mlp.up.weight": ("transformer.h.{}.mlp.c_fc.weight",),
        "blocks.{}.mlp.up.bias": ("transformer.h.{}.mlp.c_fc.bias",),
        "blocks.{}.mlp.down.weight": ("transformer.h.{}.mlp.c_proj.weight",),
        "blocks.{}.mlp.down.bias": ("transformer.h.{}.mlp.c_proj.bias",),
        "norm.weight": ("transformer.ln_f.weight",),
        "norm.bias": ("transformer.ln_f.bias",),
        "lm_head.weight": ("lm_head.weight",),
    },
    transposed=frozenset(
        {
            "blocks.{}.attn.qkv.weight",
            "blocks.{}.attn.out.weight",
            "blocks.{}.mlp.up.weight",
            "blocks.{}.mlp.down.weight",
        }
    ),
    buffer_suffixes=(".attn.masked_bias",),
)

_L = "model.layers.{}."
LLAMA = Family(
    names={
        "tok_emb.weight": ("model.embed_tokens.weight",),
        "blocks.{}.norm1.weight": (_L + "input_layernorm.weight",),
        "blocks.{}.attn.qkv.weight": tuple(_L + f"self_attn.{p}_proj.weight" for p in "qkv"),
        "blocks.{}.attn.qkv.bias": tuple(_L + f"self_attn.{p}_proj.bias" for p in "qkv"),
        "blocks.{}.attn.out.weight": (_L + "self_attn.o_proj.weight",),
        "blocks.{}.attn.out.bias": (_L + "self_attn.o_proj.bias",),
        "blocks.{}.attn.q_norm.weight": (_L + "self_attn.q_norm.weight",),
        "blocks.{}.attn.k_norm.weight": (_L + "self_attn.k_norm.weight",),
        "blocks.{}.norm2.weight": (_L + "post_attention_layernorm.weight",),
        "blocks.{}.mlp.up.weight": (_L + "mlp.gate_proj.weight", _L + "mlp.up_proj.weight"),
        "blocks.{}.mlp.up.bias": (_L + "mlp.gate_proj.bias", _L + "mlp.up_proj.bias"),
        "blocks.{}.mlp.down.weight": (_L + "mlp.down_proj.weight",),
        "blocks.{}.mlp.down.bias": (_L + "mlp.down_proj.bias",),
        "norm.weight": ("model.norm.weight",),
        "lm_head.weight": ("lm_head.weight",),
    },
    split={
        "blocks.{}.attn.qkv.weight": ("q_size", "kv_size", "kv_size"),
        "blocks.{}.attn.qkv.bias": ("q_size", "kv_size", "kv_size"),
        "blocks.{}.mlp.up.weight": ("intermediate_size", "intermediate_size"),
        "blocks.{}.mlp.up.bias": ("intermediate_size", "intermediate_size"),
    },
    buffer_suffixes=(".rotary_emb.inv_freq",),
)

# OLMo 2 is Llama's names with the norms after the sublayers: post_attention_layernorm is the first of a
# block's norms there (on attention's output), not the second (on the MLP's input) as in Llama.
OLMO2 = Family(
    names={
        **LLAMA.names,
        "blocks.{}.norm1.weight": (_L + "post_attention_layernorm.weight",),
        "blocks.{}.norm2.weight": (_L + "post_feedforward_layernorm.weight",),
    },
    split=LLAMA.split,
    buffer_suffixes=LLAMA.buffer_suffixes,
)

_N = "gpt_neox.layers.{}."
GPT_NEOX = Family(
    names={
        "tok_emb.weight": ("gpt_neox.embed_in.weight",),
        "blocks.{}.norm1.weight": (_N + "input_layernorm.weight",),
        "blocks.{}.norm1.bias": (_N + "input_layernorm.bias",),
        "blocks.{}.attn.qkv.weight": (_N + "attention.query_key_value.weight",),
        "blocks.{}.attn.qkv.bias": (_N + "attention.query_key_value.bias",),
        "blocks.{}.attn.out.weight": (_N + "attention.dense.weight",),
        "blocks.{}.attn.out.bias": (_N + "attention.dense.bias",),
        "blocks.{}.norm2.weight": (_N + "post_attention_layernorm.weight",),
        "blocks.{}.norm2.bias": (_N + "post_attention_layernorm.bias",),
        "blocks.{}.mlp.up.weight": (_N + "mlp.dense_h_to_4h.weight",),
        "blocks.{}.mlp.up.bias": (_N + "mlp.dense_h_to_4h.bias",),
        "blocks.{}.mlp.down.weight": (_N + "mlp.dense_4h_to_h.weight",),
        "blocks.{}.mlp.down.bias": (_N + "mlp.dense_4h_to_h.bias",),
        "norm.weight": ("gpt_neox.final_layer_norm.weight",),
        "norm.bias": ("gpt_neox.final_layer_norm.bias",),
        "lm_head.weight": ("embed_out.weight",),
    },
    per_head_qkv=frozenset({"blocks.{}.attn.qkv.weight", "blocks.{}.attn.qkv.bias"}),
    also_named={"embed_out.weight": "lm_head.weight"},
    # Pythia's files (transformers 4.2x) hold each layer's causal mask, masked_bias and inv_freq.
    buffer_suffixes=(".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq"),
)

# Gemma 3: Llama's names with a norm before and after each sublayer (our norm1, post_norm1, norm2,
# post_norm2); post_attention_layernorm is the norm after attention, as in OLMo 2.
GEMMA3 = Family(
    names={
        **LLAMA.names,
        "blocks.{}.post_norm1.weight": (_L + "post_attention_layernorm.weight",),
        "blocks.{}.norm2.weight": (_L + "pre_feedforward_layernorm.weight",),
        "blocks.{}.post_norm2.weight": (_L + "post_feedforward_layernorm.weight",),
    },
    split=LLAMA.split,
    buffer_suffixes=LLAMA.buffer_suffixes,
)

FAMILIES: dict[str, Family] = {"gpt2": GPT2, "llama": LLAMA, "olmo2": OLMO2, "gpt_neox": GPT_NEOX, "gemma3": GEMMA3}

# The transformers class written into config.json "architectures", per HF model_type.
ARCHITECTURES: dict[str, str] = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
    "gpt_neox": "GPTNeoXForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
}


def template(name: str) -> tuple[str, int | None]:
    """'blocks.3.attn.qkv.weight' -> ('blocks.{}.attn.qkv.weight', 3); non-block names -> (name, None)."""
    parts = name.split(".")
    if parts[0] == "blocks":
        return ".".join([parts[0], "{}", *parts[2:]]), int(parts[1])
    return name, None


# ---- reading the tables ----------------------------------------------------------------------------


def _expected_hf_shapes(cfg: ModelConfig, ours: str, shape: torch.Size) -> list[tuple[int, ...]]:
    family = FAMILIES[cfg.family]
    tmpl, _ = template(ours)
    if tmpl in family.split:
        return [(getattr(cfg, attr), *shape[1:]) for attr in family.split[tmpl]]
    if tmpl in family.transposed:
        return [tuple(reversed(shape))]
    return [tuple(shape)]


def hf_names(cfg: ModelConfig, ours: str) -> list[str]:
    tmpl, layer = template(ours)
    return [n.format(layer) for n in FAMILIES[cfg.family].names[tmpl]]


def hf_to_ours(cfg: ModelConfig, ours: str, shape: torch.Size, get: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """Assemble our tensor `ours` of `shape` from the HF tensors `get` returns, checking every shape."""
    names = hf_names(cfg, ours)
    pieces = []
    for name, expected in zip(names, _expected_hf_shapes(cfg, ours, shape)):
        t = get(name)
        if tuple(t.shape) != expected:
            raise ConfigError(
                f"checkpoint tensor {name!r} has shape {tuple(t.shape)}, but the config expects {expected}"
            )
        pieces.append(t)
    t = torch.cat(pieces, dim=0) if len(pieces) > 1 else pieces[0]
    tmpl = template(ours)[0]
    if tmpl in FAMILIES[cfg.family].per_head_qkv:
        t = _regroup(t, (cfg.num_heads, 3), cfg.head_dim)
    # Contiguous: a transposed view would stay strided in the model (slower, and ZeRO-3 refuses it).
    return t.t().contiguous() if tmpl in FAMILIES[cfg.family].transposed else t


def _regroup(t: torch.Tensor, groups: tuple[int, int], head_dim: int) -> torch.Tensor:
    """Rows in `groups` (a, b) blocks of head_dim, a outer, reordered b outer: (H, 3) -> [q; k; v] and back."""
    a, b = groups
    return t.reshape(a, b, head_dim, *t.shape[1:]).transpose(0, 1).reshape(t.shape).contiguous()


def ours_to_hf(cfg: ModelConfig, ours: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Split and lay out one of our tensors as the HF tensors it stands for."""
    family = FAMILIES[cfg.family]
    tmpl, _ = template(ours)
    if tmpl in family.transposed:
        tensor = tensor.t()
    if tmpl in family.per_head_qkv:
        tensor = _regroup(tensor, (3, cfg.num_heads), cfg.head_dim)
    if tmpl in family.split:
        pieces = tensor.split([getattr(cfg, attr) for attr in family.split[tmpl]], dim=0)
    else:
        pieces = (tensor,)
    return [(name, p.contiguous()) for name, p in zip(hf_names(cfg, ours), pieces)]


def tied_names(cfg: ModelConfig) -> set[str]:
    """Our names that alias another parameter and are neither read nor written."""
    return {"lm_head.weight"} if cfg.tie_embeddings else set()
