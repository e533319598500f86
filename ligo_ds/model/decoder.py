"""The decoder: one implementation for every family (GPT-2, Llama and its kin, OLMo 2), switched by
ModelConfig: norm kind and position, q/k norms, gated MLP, learned or rotary positions, biases, windows.

Architecture only: no parallelism, no checkpoint I/O (hf_load.py, hf_save.py), no growth (growth/).
Weights are created and initialised inside each module's own __init__, so a model built under
deepspeed.zero.Init keeps its initialisation (zero.Init partitions a module's parameters as soon as
its outermost __init__ returns; anything done to them afterwards is lost).

Fused layouts (the HF name tables in families.py split them back):
  attn.qkv.weight  (H*E + 2*K*E, D) = [q; k; v]
  mlp.up.weight    (2F, D) = [gate; up] for gated (SwiGLU) MLPs, (F, D) otherwise

Shape legend: B batch, T time, D hidden, H query heads, K key-value heads, E head_dim, F mlp hidden,
V vocabulary.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .compute import LOSS_CHUNK, checkpointed, chunked_lm_loss, compile_forward
from .config import ModelConfig
from .rope import apply_rope, rope_tables

ACTIVATIONS = {
    "gelu_tanh": partial(F.gelu, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
}


class Linear(nn.Linear):
    """nn.Linear drawn from N(0, std) with a zero bias, initialised inside __init__ (see module doc)."""

    def __init__(self, d_in: int, d_out: int, bias: bool, std: float):
        super().__init__(d_in, d_out, bias=bias)
        nn.init.normal_(self.weight, std=std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class Embedding(nn.Embedding):
    def __init__(self, num: int, dim: int, std: float):
        super().__init__(num, dim)
        nn.init.normal_(self.weight, std=std)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class OffsetRMSNorm(RMSNorm):
    """Gemma's RMSNorm: the weight is stored as w and scales by 1 + w (zeros: the identity), all in fp32."""

    def __init__(self, dim: int, eps: float):
        super().__init__(dim, eps)
        nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), None, self.eps)
        return (normed * (1.0 + self.weight.float())).type_as(x)


NORMS = {
    "layernorm": lambda dim, eps, bias: nn.LayerNorm(dim, eps=eps, bias=bias),
    "rmsnorm": lambda dim, eps, bias: RMSNorm(dim, eps),
    "rmsnorm_1p": lambda dim, eps, bias: OffsetRMSNorm(dim, eps),
}


def make_norm(cfg: ModelConfig, size: int | None = None) -> nn.Module:
    """The family's norm over `size` units (the hidden size unless given: q/k norms)."""
    return NORMS[cfg.norm](size or cfg.hidden_size, cfg.norm_eps, cfg.norm_bias)


def sliding_window_mask(seq_len: int, window: int, device=None) -> torch.Tensor:
    """Boolean (T, T) mask: query i sees keys j with i - window < j <= i (Mistral's convention)."""
    i = torch.arange(seq_len, device=device)[:, None]
    j = torch.arange(seq_len, device=device)[None, :]
    return (j <= i) & (j > i - window)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, out_std: float, window: int | None = None):
        super().__init__()
        self.cfg, self.window = cfg, window
        std = cfg.initializer_range
        self.qkv = Linear(cfg.hidden_size, cfg.q_size + 2 * cfg.kv_size, cfg.qkv_bias, std)
        self.out = Linear(cfg.q_size, cfg.hidden_size, cfg.out_bias, out_std)
        if cfg.qk_norm is not None:
            self.q_norm = make_norm(cfg, cfg.q_norm_size)
            self.k_norm = make_norm(cfg, cfg.k_norm_size)

    def forward(self, x_BTD: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        cfg = self.cfg
        B, T, _ = x_BTD.shape
        q, k, v = self.qkv(x_BTD).split([cfg.q_size, cfg.kv_size, cfg.kv_size], dim=-1)
        if cfg.qk_norm == "full":  # over the whole projection (OLMo 2)
            q, k = self.q_norm(q), self.k_norm(k)
        q_BTHE = q.view(B, T, cfg.num_heads, cfg.head_dim)
        k_BTKE = k.view(B, T, cfg.num_kv_heads, cfg.head_dim)
        if cfg.qk_norm == "head":  # over each head's dims, one weight for every head (Qwen3)
            q_BTHE, k_BTKE = self.q_norm(q_BTHE), self.k_norm(k_BTKE)
        if rope is not None:
            # Turned before the heads are transposed, so that a partial rotary's concatenation keeps the
            # projection's (B, T, H, E) layout: attention's output then reshapes for the output projection
            # without a copy, which autograd would keep besides.
            cos_T1E, sin_T1E = (t[:, None, :] for t in rope)
            q_BTHE, k_BTKE = apply_rope(q_BTHE, cos_T1E, sin_T1E), apply_rope(k_BTKE, cos_T1E, sin_T1E)
        q_BHTE, k_BKTE = q_BTHE.transpose(1, 2), k_BTKE.transpose(1, 2)
        v_BKTE = v.view(B, T, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        mask = None
        if self.window is not None and T > self.window:
            mask = sliding_window_mask(T, self.window, x_BTD.device)
        y_BHTE = F.scaled_dot_product_attention(
            q_BHTE,
            k_BKTE,
            v_BKTE,
            attn_mask=mask,
            is_causal=mask is None,
            scale=cfg.attn_scale,
            enable_gqa=cfg.num_heads != cfg.num_kv_heads,
        )
        return self.out(y_BHTE.transpose(1, 2).reshape(B, T, cfg.q_size))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, out_std: float):
        super().__init__()
        self.gated = cfg.gated_mlp
        self.act = ACTIVATIONS[cfg.activation]
        width = cfg.intermediate_size * (2 if cfg.gated_mlp else 1)
        self.up = Linear(cfg.hidden_size, width, cfg.mlp_bias, cfg.initializer_range)
        self.down = Linear(cfg.intermediate_size, cfg.hidden_size, cfg.mlp_bias, out_std)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        h_BTF = self.up(x_BTD)
        if self.gated:
            gate_BTF, up_BTF = h_BTF.chunk(2, dim=-1)
            h_BTF = self.act(gate_BTF) * up_BTF
        else:
            h_BTF = self.act(h_BTF)
        return self.down(h_BTF)


class Block(nn.Module):
    """One residual block; `checkpointing` (compute.CHECKPOINTING) is what it keeps for the backward."""

    def __init__(self, cfg: ModelConfig, checkpointing: str = "none", layer: int = 0):
        super().__init__()
        # GPT-2's scaled init of the projections that write into the residual stream.
        out_std = cfg.initializer_range / math.sqrt(2 * cfg.num_layers)
        self.norm1 = make_norm(cfg)
        self.attn = Attention(cfg, out_std, cfg.window(layer))
        if cfg.residual == "sandwich":  # Gemma: a norm after each sublayer too
            self.post_norm1 = make_norm(cfg)
        self.norm2 = make_norm(cfg)
        self.mlp = MLP(cfg, out_std)
        if cfg.residual == "sandwich":
            self.post_norm2 = make_norm(cfg)
        self.checkpointing = checkpointing
        self.form = cfg.residual

    def forward(self, x_BTD: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        # Checkpointed inside the module's call, so that ZeRO-3's gather and release hooks, which run around
        # the call, stay outside the region recomputed in the backward (selective checkpointing replays
        # that region op for op and refuses one whose ops differ).
        return checkpointed(self.checkpointing, self.residual, x_BTD, rope)

    def residual(self, x_BTD: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        return RESIDUALS[self.form](self, x_BTD, rope)


def _pre_norm(b: Block, x_BTD: torch.Tensor, rope) -> torch.Tensor:
    x_BTD = x_BTD + b.attn(b.norm1(x_BTD), rope)
    return x_BTD + b.mlp(b.norm2(x_BTD))


def _post_norm(b: Block, x_BTD: torch.Tensor, rope) -> torch.Tensor:
    x_BTD = x_BTD + b.norm1(b.attn(x_BTD, rope))
    return x_BTD + b.norm2(b.mlp(x_BTD))


def _parallel(b: Block, x_BTD: torch.Tensor, rope) -> torch.Tensor:
    return x_BTD + b.attn(b.norm1(x_BTD), rope) + b.mlp(b.norm2(x_BTD))


def _sandwich(b: Block, x_BTD: torch.Tensor, rope) -> torch.Tensor:
    x_BTD = x_BTD + b.post_norm1(b.attn(b.norm1(x_BTD), rope))
    return x_BTD + b.post_norm2(b.mlp(b.norm2(x_BTD)))


# ModelConfig.residual -> a block's forward: norms before the sublayers, after them (OLMo 2), both (Gemma),
# or both sublayers on the block's input (GPT-NeoX's use_parallel_residual).
RESIDUALS = {"pre_norm": _pre_norm, "post_norm": _post_norm, "parallel": _parallel, "sandwich": _sandwich}


class LMHead(Linear):
    """The output projection: `head(h)` gives the logits, `head(h, targets, chunk)` the mean loss over
    chunks of `chunk` tokens without the whole batch's logits (compute.chunked_lm_loss). The loss is
    computed inside this module's forward because under ZeRO-3 that is where its weight, tied to the
    embedding or not, is gathered."""

    def forward(self, h_BTD: torch.Tensor, targets_BT: torch.Tensor | None = None, chunk: int = LOSS_CHUNK):
        if targets_BT is None:
            return super().forward(h_BTD)
        return chunked_lm_loss(h_BTD, self.weight, targets_BT, chunk)


class Decoder(nn.Module):
    """A causal LM: `model(ids)` gives logits (B, T, V); `model(ids, targets)` gives the mean loss.

    `checkpointing` (compute.CHECKPOINTING) is what each block keeps for the backward; `loss_chunk` the
    tokens per chunk of the head and loss. Neither changes the numbers beyond float rounding, nor does
    compile_blocks()."""

    def __init__(self, cfg: ModelConfig, checkpointing: str = "none", loss_chunk: int = LOSS_CHUNK):
        super().__init__()
        self.cfg = cfg
        self.loss_chunk = loss_chunk
        std = cfg.initializer_range
        self.tok_emb = Embedding(cfg.vocab_size, cfg.hidden_size, std)
        self.pos_emb = Embedding(cfg.max_positions, cfg.hidden_size, std) if cfg.positions == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg, checkpointing, i) for i in range(cfg.num_layers))
        self.norm = make_norm(cfg)
        self.lm_head = LMHead(cfg.hidden_size, cfg.vocab_size, False, std)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the embedding with the head when the config ties them (again after a meta-device load)."""
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    def compile_blocks(self) -> None:
        """torch.compile each block's forward; every block has the same code and shapes, so one compilation
        serves them all. Call it after construction: under zero.Init, importing torch._dynamo fails
        (DeepSpeed 0.19.8 patches torch.Tensor.__new__ there, and dynamo checks its signature)."""
        for block in self.blocks:
            compile_forward(block)

    def embed(self, ids_BT: torch.Tensor) -> torch.Tensor:
        T = ids_BT.shape[1]
        if T > self.cfg.max_positions:
            raise ValueError(f"sequence length {T} exceeds the model's max positions {self.cfg.max_positions}")
        x_BTD = self.tok_emb(ids_BT)
        if self.cfg.embed_scale != 1.0:  # Gemma's sqrt(hidden), rounded to the weights' dtype as transformers does
            x_BTD = x_BTD * torch.tensor(self.cfg.embed_scale, dtype=x_BTD.dtype)
        if self.pos_emb is not None:
            x_BTD = x_BTD + self.pos_emb(torch.arange(T, device=ids_BT.device))
        return x_BTD

    def rope(self, seq_len: int, device) -> dict[str, tuple[torch.Tensor, torch.Tensor] | None]:
        """Each layer type's RoPE tables (None for learned positions): rope[cfg.layer_type(i)] for block i."""
        return layer_ropes(self.cfg, seq_len, device)

    def forward(self, ids_BT: torch.Tensor, targets_BT: torch.Tensor | None = None) -> torch.Tensor:
        x_BTD = self.embed(ids_BT)
        rope = self.rope(ids_BT.shape[1], ids_BT.device)
        for i, block in enumerate(self.blocks):
            x_BTD = block(x_BTD, rope[self.cfg.layer_type(i)])
        x_BTD = self.norm(x_BTD)
        if targets_BT is None:
            return self.lm_head(x_BTD)
        return self.lm_head(x_BTD, targets_BT, self.loss_chunk)

    def num_params(self) -> int:
        """Unique parameters (a tied head counts once); under ZeRO-3 the full, not the local, size."""
        seen = {id(p): getattr(p, "ds_numel", p.numel()) for p in self.parameters()}
        return sum(seen.values())


def layer_ropes(cfg: ModelConfig, seq_len: int, device) -> dict[str, tuple[torch.Tensor, torch.Tensor] | None]:
    """RoPE tables per layer type the model has (one entry, full_attention, unless its layers differ)."""
    kinds = set(cfg.layer_types) or {"full_attention"}
    if cfg.positions != "rope":
        return dict.fromkeys(kinds)
    return {kind: rope_tables(cfg, seq_len, device, kind) for kind in kinds}


def lm_loss(logits_BTV: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy in float32 (bf16 log-softmax over a large vocabulary is lossy) of
    whole-batch logits: the reference the chunked head (compute.chunked_lm_loss) is tested against."""
    return F.cross_entropy(logits_BTV.flatten(0, 1).float(), targets_BT.flatten())
