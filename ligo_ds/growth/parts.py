"""The LiGO operator's parts, each a module holding its own parameters: frozen source layers, the width
expansions of each layer and of the residual stream, and the depth mixing.

Every module reads only its own parameters, inside its own forward, and returns what it computed as
fresh tensors: that is the contract ZeRO-3's gather/release hooks assume (a partitioned parameter is
complete only during its owner's forward). The source weights are frozen parameters, so ZeRO-3
partitions them too.

    SourceLayer   frozen weights of one source layer (and one module for the vocabulary matrices, one for
                  the positions and final norm)
    LayerWidth    per-layer expansions: heads of Q, K, V (E_q, E_k, E_v), the dims inside a head when head_dim
                  grows (P_q, P_k, P_v), and the MLP hidden units (B_mlp)
    ResidualWidth the one global residual expansion B_emb
    DepthMixing   one L2 x L1 matrix per module kind
"""

from __future__ import annotations

import torch
from torch import nn

from ..model.config import ModelConfig
from . import functional as G
from . import rotary as R
from .layout import HEAD_GROUPS, NORM_GROUPS, PER_LAYER_GROUPS
from .spec import TYINGS

Sides = tuple  # (group on dim 0, group on dim 1), each a width group name or None


def apply_side(
    w: torch.Tensor, mat: torch.Tensor, dim: int, heads: bool, head_dim: int, within: torch.Tensor | None = None
) -> torch.Tensor:
    if heads:
        return G.expand_heads(w, mat, head_dim, dim, within)
    return G.expand(w, mat, None) if dim == 0 else G.expand(w, None, mat)


class SourceLayer(nn.Module):
    """Frozen copies of given tensors, as parameters named by position; forward returns them, in order,
    as fresh tensors. What each one is lives with the operator (one list for every layer).

    forward(read) returns read(tensors) instead, computed while they are gathered: what a consumer needs
    of a large tensor (a few rows, a product) without a copy of it. Its results must not require grad,
    so that autograd keeps nothing of the tensors (ZeRO-3 frees them when forward returns)."""

    def __init__(self, tensors: list[torch.Tensor]):
        super().__init__()
        for i, t in enumerate(tensors):
            t = t.detach().clone(memory_format=torch.contiguous_format)
            self.register_parameter(str(i), nn.Parameter(t, requires_grad=False))

    def forward(self, read=None):
        tensors = list(self.parameters(recurse=False))
        if read is None:
            return [p.clone() for p in tensors]
        out = read(tensors)
        assert not any(t.requires_grad for t in out if isinstance(t, torch.Tensor)), "read must not keep the tensors"
        return out


class LayerWidth(nn.Module):
    """One layer's expansions. forward(pieces) applies the per-layer groups to both sides.

    When head_dim grows, each head group also places a head's dims in the wider head: P_q, P_k, P_v
    (E2 x E1, learned like the rest, started by rotary.py), the head side being E kron P; attention-out
    reads through the consumer of E_v kron P_v (the left inverse of a Kronecker product is the product of
    the left inverses). With head_dim kept there is no P, and the operator is what it always was."""

    def __init__(
        self,
        e_q: torch.Tensor,
        e_k: torch.Tensor,
        e_v: torch.Tensor,
        b_mlp: torch.Tensor,
        src: ModelConfig,
        tgt: ModelConfig,
        tying: str,
        within: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ):
        super().__init__()
        self.e_q, self.e_k, self.e_v = nn.Parameter(e_q.clone()), nn.Parameter(e_k.clone()), nn.Parameter(e_v.clone())
        self.b_mlp = nn.Parameter(b_mlp.clone())
        self.src_heads, self.tgt_heads, self.head_dim, self.tying = src.num_heads, tgt.num_heads, src.head_dim, tying
        self.qk_norm = src.qk_norm
        self.norm_scales = R.norm_scales(src, tgt)
        if within is not None:
            self.p_q, self.p_k, self.p_v = (nn.Parameter(p.clone()) for p in within)
        # The units each consumer reads back, fixed here: the ones the initialisation placed (G.left_inverse).
        self.placed = {
            "o_in": G.placed(G.query_to_kv_heads(e_v, self.src_heads, self.tgt_heads)),
            "mlp_in": G.placed(b_mlp),
            "o_in/dims": None if within is None else G.placed(within[2]),
        }

    def matrices(self) -> dict[str, torch.Tensor]:
        o_in = G.query_to_kv_heads(self.e_v, self.src_heads, self.tgt_heads)
        consumer = TYINGS[self.tying]
        placed = self.placed
        mats = {
            "q": self.e_q,
            "k": self.e_k,
            "v": self.e_v,
            "o_in": consumer(o_in, placed["o_in"]),
            "mlp": self.b_mlp,
            "mlp_in": consumer(self.b_mlp, placed["mlp_in"]),
        }
        if hasattr(self, "p_q"):
            dims = consumer(self.p_v, placed["o_in/dims"])
            mats |= {"q/dims": self.p_q, "k/dims": self.p_k, "v/dims": self.p_v, "o_in/dims": dims}
        for norm, proj in NORM_GROUPS.items():
            # A q/k norm's weight follows its projection's units, times the scale that keeps q.k / sqrt(E)
            # with the norm in the way (rotary.norm_scales). Over the whole projection it takes the head
            # map too; per head it is one head's dims, placed by P, or kept when head_dim is.
            dims = mats.get(f"{proj}/dims")
            scaled = None if dims is None else dims * self.norm_scales[proj]
            if self.qk_norm == "full":
                mats |= {norm: mats[proj], f"{norm}/dims": scaled}
            else:
                mats[norm] = scaled
        return mats

    def forward(self, pieces: list[tuple[Sides, torch.Tensor]]) -> list[torch.Tensor]:
        mats = self.matrices()
        out = []
        for sides, w in pieces:
            for dim, group in enumerate(sides):
                if group in PER_LAYER_GROUPS and mats.get(group) is not None:
                    heads = group in HEAD_GROUPS or (group in NORM_GROUPS and self.qk_norm == "full")
                    w = apply_side(w, mats[group], dim, heads, self.head_dim, mats.get(f"{group}/dims"))
            out.append(w)
        return out


class ResidualWidth(nn.Module):
    """The global residual expansion B_emb; forward applies the shared groups.

    `embed_ratio` is the source's embedding scale over the target's (Gemma multiplies the embedding by
    sqrt(hidden)): the token embedding carries it, so the residual stream starts as the source's does, and
    a tied head reading that matrix has it taken back by the final norm."""

    def __init__(self, b_emb: torch.Tensor, tying: str, tied_head: bool, embed_ratio: float = 1.0):
        super().__init__()
        self.b_emb = nn.Parameter(b_emb.clone())
        self.tying, self.tied_head, self.embed_ratio = tying, tied_head, embed_ratio
        self.placed = G.placed(b_emb)  # the units the consumers read back (G.left_inverse)

    def forward(self, pieces: list[tuple[Sides, torch.Tensor]] | None = None, groups: frozenset = frozenset()):
        """The shared groups applied to each piece; without pieces, the matrices of `groups` (fresh tensors)."""
        b = self.b_emb
        if pieces is not None:
            groups = {g for sides, _ in pieces for g in sides}
        # With a tied head the embedding is a producer (B) and the head reads through it, so under
        # 'inverse' the copy counts are folded into the final norm instead: the head's input side is then
        # B itself, and the norm's output side the left inverse. A is computed only when read.
        needs_a = "emb_in" in groups or ("emb_final" in groups and self.tied_head)
        a = TYINGS[self.tying](b, self.placed) if needs_a else None
        mats = {"emb": b, "emb_in": a, "emb_tok": b, "emb_final": a if self.tied_head else b}
        if self.embed_ratio != 1.0:
            mats["emb_tok"] = b * self.embed_ratio
            if self.tied_head and a is not None:
                mats["emb_final"] = a / self.embed_ratio
        if pieces is None:
            return {k: mats[k].clone() for k in groups}
        out = []
        for sides, w in pieces:
            for dim, group in enumerate(sides):
                if group in mats:
                    w = apply_side(w, mats[group], dim, False, 0)
            out.append(w)
        return out


class DepthMixing(nn.Module):
    def __init__(self, matrices: dict[str, torch.Tensor]):
        super().__init__()
        for kind, w in matrices.items():
            self.register_parameter(kind, nn.Parameter(w.clone()))

    def forward(self) -> dict[str, torch.Tensor]:
        return {k: p.clone() for k, p in self.named_parameters(recurse=False)}
