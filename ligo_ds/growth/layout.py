"""Which expansion acts on which side of which weight: the tables the operator reads.

Our fused block tensors (model.py) are cut into the pieces the operator treats separately; each piece
names the depth matrix that mixes it, its size along dim 0, and the width group that expands each side.
Nothing here (or in the operator) asks which model family a weight belongs to.

Width groups: emb / emb_in (the residual stream, producer / consumer side), emb_tok (the token embedding:
emb, times the ratio of the two models' embedding scales), emb_final (the final norm),
q, k, v (attention heads, per layer), o_in (attention output heads, which carry v's), mlp / mlp_in (MLP
hidden units, per layer), q_norm / k_norm (the q and k norms' weights, per layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.config import ModelConfig


@dataclass(frozen=True)
class Piece:
    kind: str  # depth kind: which L2 x L1 matrix mixes it
    size: str  # ModelConfig attribute: its length along dim 0 inside the fused tensor
    out: str | None  # expansion group on dim 0
    inp: str | None  # expansion group on dim 1


# A gated MLP's up holds [gate; up]: its one piece repeats.
BLOCK_LAYOUT: dict[str, list[Piece]] = {
    "norm1.weight": [Piece("norm1", "hidden_size", "emb", None)],
    "norm1.bias": [Piece("norm1", "hidden_size", "emb", None)],
    "attn.qkv.weight": [
        Piece("q", "q_size", "q", "emb_in"),
        Piece("k", "kv_size", "k", "emb_in"),
        Piece("v", "kv_size", "v", "emb_in"),
    ],
    "attn.qkv.bias": [
        Piece("q", "q_size", "q", None),
        Piece("k", "kv_size", "k", None),
        Piece("v", "kv_size", "v", None),
    ],
    # q/k norms (qk_norm): mixed over depth with their projections; widened by q_norm / k_norm (parts.py).
    "attn.q_norm.weight": [Piece("q", "q_norm_size", "q_norm", None)],
    "attn.k_norm.weight": [Piece("k", "k_norm_size", "k_norm", None)],
    "attn.out.weight": [Piece("o", "hidden_size", "emb", "o_in")],
    "attn.out.bias": [Piece("o", "hidden_size", "emb", None)],
    "norm2.weight": [Piece("norm2", "hidden_size", "emb", None)],
    "norm2.bias": [Piece("norm2", "hidden_size", "emb", None)],
    # Gemma's norms after each sublayer: mixed over depth with the norm before it.
    "post_norm1.weight": [Piece("norm1", "hidden_size", "emb", None)],
    "post_norm2.weight": [Piece("norm2", "hidden_size", "emb", None)],
    "mlp.up.weight": [Piece("up", "intermediate_size", "mlp", "emb_in")],
    "mlp.up.bias": [Piece("up", "intermediate_size", "mlp", None)],
    "mlp.down.weight": [Piece("down", "hidden_size", "emb", "mlp_in")],
    "mlp.down.bias": [Piece("down", "hidden_size", "emb", None)],
}
# Weights outside the blocks: (group on dim 0, group on dim 1).
GLOBAL_LAYOUT: dict[str, tuple[str | None, str | None]] = {
    "tok_emb.weight": (None, "emb_tok"),
    "pos_emb.weight": (None, "emb"),
    "norm.weight": ("emb_final", None),
    "norm.bias": ("emb_final", None),
    "lm_head.weight": (None, "emb_in"),
}
DEPTH_KINDS = ("norm1", "q", "k", "v", "o", "norm2", "up", "down")
# Norm weights, in blocks and out: a norm that scales by offset + w (Gemma's 1 + w) is grown on its
# effective weight, offset + w, which is what every linear argument about norms is about (operator.py).
NORM_WEIGHTS = frozenset(
    {"norm1.weight", "norm2.weight", "post_norm1.weight", "post_norm2.weight", "attn.q_norm.weight"}
    | {"attn.k_norm.weight", "norm.weight"}
)
PER_LAYER_GROUPS = {"q", "k", "v", "o_in", "mlp", "mlp_in", "q_norm", "k_norm"}
# Groups over whole heads (E kron P). q_norm / k_norm are too when the norm is over the whole projection
# (qk_norm "full"); a per-head norm's weight is one head's dims, placed by P alone (parts.LayerWidth).
HEAD_GROUPS = {"q", "k", "v", "o_in"}
NORM_GROUPS = {"q_norm": "q", "k_norm": "k"}  # a q/k norm's group -> the projection it normalises


@dataclass(frozen=True)
class SourcePiece:
    """One frozen source tensor of a block: piece `index` of our fused tensor `name`."""

    name: str  # our block tensor name, e.g. "attn.qkv.weight"
    index: int  # its position among the pieces of that tensor ([q, k, v], or [gate, up])
    piece: Piece


def split_block_tensor(cfg: ModelConfig, name: str, tensor: torch.Tensor) -> list[tuple[SourcePiece, torch.Tensor]]:
    """One of our fused block tensors cut into its pieces, in order."""
    pieces = BLOCK_LAYOUT[name]
    sizes = [getattr(cfg, p.size) for p in pieces]
    repeats = tensor.shape[0] // sum(sizes)  # 2 for a gated MLP's [gate; up]
    parts = tensor.split(sizes * repeats, dim=0)
    return [(SourcePiece(name, i, piece), t) for i, (piece, t) in enumerate(zip(pieces * repeats, parts))]


def fuse(pieces: list[tuple[SourcePiece, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate produced pieces back into our fused tensors, each in its piece order."""
    out: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for key, t in pieces:
        out.setdefault(key.name, []).append((key.index, t))
    fused = {}
    for name, parts in out.items():
        ts = [t for _, t in sorted(parts, key=lambda p: p[0])]
        fused[name] = ts[0] if len(ts) == 1 else torch.cat(ts, dim=0)
    return fused
