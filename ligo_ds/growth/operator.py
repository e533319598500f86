"""The LiGO operator as modules: source weights (frozen) + width and depth coefficients -> target weights.

Every module reads only its own parameters, inside its own forward, and returns what it computed as
fresh tensors: that is the contract ZeRO-3's gather/release hooks assume (a partitioned parameter is
complete only during its owner's forward). The source weights are frozen parameters, so ZeRO-3
partitions them too.

    SourceLayer   frozen weights of one source layer (and one module for embeddings/final norm/head)
    LayerWidth    per-layer expansions: heads of Q, K, V (E_q, E_k, E_v) and the MLP hidden units (B_mlp)
    ResidualWidth the one global residual expansion B_emb
    DepthMixing   one L2 x L1 matrix per module kind

Which expansion acts on which side of which tensor is the table in layout.py; the kinds of
initialisation, tying and order are the registries of init.py and spec.py. The grown model's forward
and materialisation are in grown.py.
"""

from __future__ import annotations

import torch
from torch import nn

from ..model_config import ModelConfig
from . import functional as G
from . import init as I
from .layout import (
    BLOCK_LAYOUT,
    DEPTH_KINDS,
    GLOBAL_LAYOUT,
    HEAD_GROUPS,
    PER_LAYER_GROUPS,
    SourcePiece,
    fuse,
    split_block_tensor,
)
from .spec import ORDERS, TYINGS, GrowthSpec, check_growable

Sides = tuple  # (group on dim 0, group on dim 1), each a width group name or None


def apply_side(w: torch.Tensor, mat: torch.Tensor, dim: int, heads: bool, head_dim: int) -> torch.Tensor:
    if heads:
        return G.expand_heads(w, mat, head_dim, dim)
    return G.expand(w, mat, None) if dim == 0 else G.expand(w, None, mat)


class SourceLayer(nn.Module):
    """Frozen copies of given tensors, as parameters named by position; forward returns them, in order,
    as fresh tensors. What each one is lives with the operator (one list for every layer)."""

    def __init__(self, tensors: list[torch.Tensor]):
        super().__init__()
        for i, t in enumerate(tensors):
            t = t.detach().clone(memory_format=torch.contiguous_format)
            self.register_parameter(str(i), nn.Parameter(t, requires_grad=False))

    def forward(self) -> list[torch.Tensor]:
        return [p.clone() for p in self.parameters(recurse=False)]


class LayerWidth(nn.Module):
    """One layer's expansions. forward(pieces) applies the per-layer groups to both sides."""

    def __init__(
        self,
        e_q: torch.Tensor,
        e_k: torch.Tensor,
        e_v: torch.Tensor,
        b_mlp: torch.Tensor,
        src: ModelConfig,
        tgt: ModelConfig,
        tying: str,
    ):
        super().__init__()
        self.e_q, self.e_k, self.e_v = nn.Parameter(e_q.clone()), nn.Parameter(e_k.clone()), nn.Parameter(e_v.clone())
        self.b_mlp = nn.Parameter(b_mlp.clone())
        self.src_heads, self.tgt_heads, self.head_dim, self.tying = src.num_heads, tgt.num_heads, tgt.head_dim, tying

    def matrices(self) -> dict[str, torch.Tensor]:
        o_in = G.query_to_kv_heads(self.e_v, self.src_heads, self.tgt_heads)
        consumer = TYINGS[self.tying]
        return {
            "q": self.e_q,
            "k": self.e_k,
            "v": self.e_v,
            "o_in": consumer(o_in),
            "mlp": self.b_mlp,
            "mlp_in": consumer(self.b_mlp),
        }

    def forward(self, pieces: list[tuple[Sides, torch.Tensor]]) -> list[torch.Tensor]:
        mats = self.matrices()
        out = []
        for sides, w in pieces:
            for dim, group in enumerate(sides):
                if group in PER_LAYER_GROUPS:
                    w = apply_side(w, mats[group], dim, group in HEAD_GROUPS, self.head_dim)
            out.append(w)
        return out


class ResidualWidth(nn.Module):
    """The global residual expansion B_emb; forward applies the shared groups."""

    def __init__(self, b_emb: torch.Tensor, tying: str, tied_head: bool):
        super().__init__()
        self.b_emb = nn.Parameter(b_emb.clone())
        self.tying, self.tied_head = tying, tied_head

    def forward(self, pieces: list[tuple[Sides, torch.Tensor]]) -> list[torch.Tensor]:
        b = self.b_emb
        a = TYINGS[self.tying](b)
        # With a tied head the embedding is a producer (B) and the head reads through it, so under
        # 'inverse' the copy counts are folded into the final norm instead: the head's input side is then
        # B itself, and the norm's output side the left inverse.
        mats = {"emb": b, "emb_in": a, "emb_final": a if self.tied_head else b}
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


class LiGOOperator(nn.Module):
    """Source weights (frozen) + width and depth coefficients (learned) -> the target's weights."""

    def __init__(self, source_state: dict[str, torch.Tensor], src: ModelConfig, tgt: ModelConfig, spec: GrowthSpec):
        super().__init__()
        check_growable(src, tgt)
        self.src, self.tgt, self.spec = src, tgt, spec
        tying = spec.resolved_tying
        gen = torch.Generator().manual_seed(spec.seed)
        # What each source layer's frozen tensors are: the same list for every layer.
        self.block_pieces: list[SourcePiece] = []
        layers = []
        for j in range(src.num_layers):
            tensors, pieces = [], []
            for name in BLOCK_LAYOUT:
                if f"blocks.{j}.{name}" in source_state:
                    for key, t in split_block_tensor(src, name, source_state[f"blocks.{j}.{name}"]):
                        pieces.append(key)
                        tensors.append(t)
            self.block_pieces = pieces
            layers.append(SourceLayer(tensors))
        self.source_layers = nn.ModuleList(layers)
        self.global_names = [
            k for k in GLOBAL_LAYOUT if k in source_state and not (k == "lm_head.weight" and src.tie_embeddings)
        ]
        self.source_global = SourceLayer([source_state[k] for k in self.global_names])
        # The order of draws from `gen` below fixes the initial operator for a seed: keep it.
        width = I.WIDTH_INITS[spec.width_init]
        widths = []
        for _ in range(src.num_layers if ORDERS[spec.order] == "source" else tgt.num_layers):
            e_q, e_kv = I.head_matrices(width, src.num_heads, src.num_kv_heads, tgt.num_heads, tgt.num_kv_heads, gen)
            b_mlp = width.matrix(tgt.intermediate_size, src.intermediate_size, gen)
            noisy = [
                I.add_width_noise(m, old, spec.noise, gen)
                for m, old in (
                    (e_q, src.num_heads),
                    (e_kv, src.num_kv_heads),
                    (e_kv, src.num_kv_heads),
                    (b_mlp, src.intermediate_size),
                )
            ]
            widths.append(LayerWidth(*noisy, src, tgt, tying))
        self.layer_widths = nn.ModuleList(widths)
        b_emb = I.add_width_noise(width.matrix(tgt.hidden_size, src.hidden_size, gen), src.hidden_size, spec.noise, gen)
        self.residual = ResidualWidth(b_emb, tying, tgt.tie_embeddings)
        depth = I.DEPTH_INITS[spec.depth_init]
        self.depth = DepthMixing(
            {
                k: I.add_depth_noise(
                    depth(tgt.num_layers, src.num_layers, gen, output_projection=k in ("o", "down")), spec.noise, gen
                )
                for k in DEPTH_KINDS
            }
        )

    # ---- producing weights ---------------------------------------------------------------------
    def _sides(self) -> list[Sides]:
        return [(p.piece.out, p.piece.inp) for p in self.block_pieces]

    def _mixed(self, i: int, depth: dict[str, torch.Tensor], widen_source: bool) -> list[torch.Tensor]:
        """sum_j w[i, j] * source_j per piece, each source layer widened with its own matrices first when
        `widen_source`."""
        acc: list[torch.Tensor] = []
        for j in range(self.src.num_layers):
            tensors = self.source_layers[j]()
            if widen_source:
                tensors = self.layer_widths[j](list(zip(self._sides(), tensors)))
            for k, (key, t) in enumerate(zip(self.block_pieces, tensors)):
                term = depth[key.piece.kind][i, j] * t
                if k == len(acc):
                    acc.append(term)
                else:
                    acc[k] = acc[k] + term
        return acc

    def block(self, i: int, depth: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Target block i's weights under our parameter names (fused as model.py lays them out).

        paper order:    sum_j w[i, j] * widen_j(source_j)   (per-layer sides inside the sum)
        official order: widen_i(sum_j w[i, j] * source_j)
        The shared residual sides are applied once, after the sum (they commute with it).
        """
        widen_source = ORDERS[self.spec.order] == "source"
        acc = self._mixed(i, depth, widen_source)
        if not widen_source:
            acc = self.layer_widths[i](list(zip(self._sides(), acc)))
        grown = self.residual(list(zip(self._sides(), acc)))
        return fuse(list(zip(self.block_pieces, grown)))

    def global_weights(self) -> dict[str, torch.Tensor]:
        tensors = self.source_global()
        grown = self.residual([(GLOBAL_LAYOUT[name], t) for name, t in zip(self.global_names, tensors)])
        return dict(zip(self.global_names, grown))

    # ---- bookkeeping ---------------------------------------------------------------------------
    def param_counts(self) -> dict[str, int]:
        def count(params):
            return sum(getattr(p, "ds_numel", p.numel()) for p in params)

        return {
            "operator": count(p for p in self.parameters() if p.requires_grad),
            "source": count(p for p in self.parameters() if not p.requires_grad),
            "target": self.tgt.num_params(),
        }

    def extra_repr(self) -> str:
        c = self.param_counts()
        return (
            f"{self.src.num_layers}L/{self.src.hidden_size} -> {self.tgt.num_layers}L/{self.tgt.hidden_size}, "
            f"{self.spec}, parameters: operator {c['operator']:,}, source {c['source']:,} (frozen), "
            f"target {c['target']:,}"
        )


def meta_operator(src: ModelConfig, tgt: ModelConfig, spec: GrowthSpec) -> LiGOOperator:
    """The operator on the meta device: its parameter counts and FLOPs (flops.operator_flops) from shapes
    alone, with no source weights read and no target produced."""
    from ..model import Decoder

    with torch.device("meta"):
        source = Decoder(src).state_dict()
    return LiGOOperator(source, src, tgt, spec).to("meta")  # the coefficients are drawn on the CPU first


def grow(source: nn.Module, target: ModelConfig, spec: GrowthSpec) -> LiGOOperator:
    """The operator from a source Decoder (its weights are copied into frozen parameters)."""
    return LiGOOperator(dict(source.state_dict()), source.cfg, target, spec)
