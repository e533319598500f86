"""The LiGO operator: source weights (frozen) + width and depth coefficients -> target weights, built from
the modules of parts.py.

Which expansion acts on which side of which tensor is the table in layout.py; the kinds of
initialisation, tying and order are the registries of init.py and spec.py. The grown model's forward
and materialisation are in grown.py, what the operator costs in cost.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.compute import chunked_lm_loss
from ..model.config import ModelConfig
from . import functional as G
from . import init as I
from . import rotary as R
from .layout import BLOCK_LAYOUT, DEPTH_KINDS, GLOBAL_LAYOUT, NORM_WEIGHTS, SourcePiece, fuse, split_block_tensor
from .parts import DepthMixing, LayerWidth, ResidualWidth, Sides, SourceLayer
from .spec import ORDERS, GrowthSpec, check_growable

# The vocabulary x width matrices. A fit never produces them whole: it widens a batch's embedding rows and
# runs the head at the source's width (LiGOOperator.embed, .head); only an export produces them.
VOCAB = ("tok_emb.weight", "lm_head.weight")


class LiGOOperator(nn.Module):
    """Source weights (frozen) + width and depth coefficients (learned) -> the target's weights."""

    def __init__(self, source_state: dict[str, torch.Tensor], src: ModelConfig, tgt: ModelConfig, spec: GrowthSpec):
        super().__init__()
        check_growable(src, tgt)
        self.src, self.tgt, self.spec = src, tgt, spec
        self.offset = src.norm_offset  # norms are grown on offset + w (layout.NORM_WEIGHTS), given back as w
        tying = spec.resolved_tying
        gen = torch.Generator().manual_seed(spec.seed)
        # What each source layer's frozen tensors are: the same list for every layer.
        self.block_pieces: list[SourcePiece] = []
        layers = []
        for j in range(src.num_layers):
            tensors, pieces = [], []
            for name in BLOCK_LAYOUT:
                if f"blocks.{j}.{name}" in source_state:
                    weight = self._effective(name, source_state[f"blocks.{j}.{name}"])
                    for key, t in split_block_tensor(src, name, weight):
                        pieces.append(key)
                        tensors.append(t)
            self.block_pieces = pieces
            layers.append(SourceLayer(tensors))
        self.source_layers = nn.ModuleList(layers)
        names = [k for k in GLOBAL_LAYOUT if k in source_state and not (k == "lm_head.weight" and src.tie_embeddings)]
        self.vocab_names = [k for k in names if k in VOCAB]
        self.global_names = [k for k in names if k not in VOCAB]
        self.source_vocab = SourceLayer([source_state[k] for k in self.vocab_names])
        self.source_global = SourceLayer([self._effective(k, source_state[k]) for k in self.global_names])
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
            widths.append(LayerWidth(*noisy, src, tgt, tying, R.initial_maps(src, tgt, spec.noise, gen)))
        self.layer_widths = nn.ModuleList(widths)
        b_emb = I.add_width_noise(width.matrix(tgt.hidden_size, src.hidden_size, gen), src.hidden_size, spec.noise, gen)
        self.residual = ResidualWidth(b_emb, tying, tgt.tie_embeddings, src.embed_scale / tgt.embed_scale)
        types = (src.layer_types, tgt.layer_types) if src.layer_types or tgt.layer_types else None
        self.depth = DepthMixing(
            {
                k: I.add_depth_noise(
                    I.depth_matrix(spec.depth_init, tgt.num_layers, src.num_layers, gen, k in ("o", "down"), types),
                    spec.noise,
                    gen,
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
        return {name: self._stored(name, t) for name, t in fuse(list(zip(self.block_pieces, grown))).items()}

    def _effective(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """A norm weight as it scales (offset + w): what the operator grows."""
        return t + self.offset if self.offset and name in NORM_WEIGHTS else t

    def _stored(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """A grown norm weight back as the model stores it (w)."""
        return t - self.offset if self.offset and name in NORM_WEIGHTS else t

    def global_weights(self, vocab: bool = True) -> dict[str, torch.Tensor]:
        """The weights outside the blocks; `vocab=False` leaves out the vocabulary matrices (see VOCAB)."""
        grown = self.residual([(GLOBAL_LAYOUT[n], t) for n, t in zip(self.global_names, self.source_global())])
        out = {n: self._stored(n, t) for n, t in zip(self.global_names, grown)}
        if not vocab:
            return out
        if torch.is_grad_enabled():
            tensors = self.source_vocab()
            grown = self.residual([(GLOBAL_LAYOUT[n], t) for n, t in zip(self.vocab_names, tensors)])
        else:  # nothing is kept for a backward: widen the source's matrices where they lie, without a copy
            residual = self.residual(groups=frozenset(GLOBAL_LAYOUT[n][1] for n in self.vocab_names))
            sides = [self._vocab_side(n, residual)[1] for n in self.vocab_names]
            grown = self.source_vocab(lambda tensors: [G.expand(t, None, m) for t, m in zip(tensors, sides)])
        out.update(zip(self.vocab_names, grown))
        return {n: out[n] for n in GLOBAL_LAYOUT if n in out}  # in the table's order, as the files list them

    def vocab_groups(self) -> frozenset:
        """The residual groups the fit's embedding and head read (embed, head): residual(groups=...)."""
        head = "tok_emb.weight" if self.tgt.tie_embeddings else "lm_head.weight"
        return frozenset(GLOBAL_LAYOUT[n][1] for n in ("tok_emb.weight", head))

    def _vocab_side(self, name: str, residual: dict[str, torch.Tensor]) -> tuple[int, torch.Tensor]:
        """(position among the source's vocabulary matrices, the matrix M of its input side): the grown
        matrix is W M^T, W the source's (vocabulary x D1), M (D2 x D1)."""
        out, inp = GLOBAL_LAYOUT[name]
        assert out is None and inp in residual, f"{name}: a vocabulary matrix is widened on its input side only"
        return self.vocab_names.index(name), residual[inp]

    def embed(self, ids: torch.Tensor, residual: dict[str, torch.Tensor]) -> torch.Tensor:
        """The grown token embedding of `ids` (B x T x D2), `residual` the residual groups' matrices
        (self.residual(groups=self.vocab_groups())). Row r of W M^T is (row r of W) M^T: only the batch's
        rows are widened."""
        k, m = self._vocab_side("tok_emb.weight", residual)
        rows = self.source_vocab(lambda tensors: F.embedding(ids, tensors[k]))
        return G.expand_rows(rows, m)

    def head(
        self, h: torch.Tensor, residual: dict[str, torch.Tensor], targets: torch.Tensor | None, loss_chunk: int
    ) -> torch.Tensor:
        """The grown head on hidden states h (B x T x D2): logits, or the mean loss against `targets`
        (compute.chunked_lm_loss). The head is W M^T, so h (W M^T)^T = (h M) W^T: it runs at the source's
        width, on the source's own matrix, and the vocabulary x D2 head is never formed."""
        k, m = self._vocab_side("tok_emb.weight" if self.tgt.tie_embeddings else "lm_head.weight", residual)
        h_m = h @ m
        grad = torch.is_grad_enabled() and h_m.requires_grad
        if targets is None:
            if grad:  # logits to back-propagate through need W kept: take a copy (never in a fit)
                w = self.source_vocab()[k]
                return F.linear(h_m, w)
            return self.source_vocab(lambda tensors: F.linear(h_m, tensors[k]))
        loss, d_hm = self.source_vocab(lambda tensors: _loss_and_grad(h_m, tensors[k], targets, loss_chunk, grad))
        return _WithGrad.apply(h_m, loss, d_hm) if grad else loss

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


def _loss_and_grad(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, chunk: int, grad: bool):
    """(mean loss of the head w on h, its gradient with respect to h or None), neither requiring grad.
    chunked_lm_loss computes the gradient in its forward, a chunk at a time; w is frozen, so its
    backward only scales that gradient and reads nothing of w."""
    h = h.detach().requires_grad_(grad)
    with torch.enable_grad():
        loss = chunked_lm_loss(h, w, targets, chunk)
    d_h = torch.autograd.grad(loss, h)[0] if grad else None
    return loss.detach(), d_h


class _WithGrad(torch.autograd.Function):
    """`loss` as a function of `x` whose gradient `d_x` is already known: backward returns d_x scaled."""

    @staticmethod
    def forward(ctx, x, loss, d_x):
        ctx.save_for_backward(d_x)
        return loss.clone()

    @staticmethod
    def backward(ctx, grad):
        (d_x,) = ctx.saved_tensors
        return d_x * grad.to(d_x.dtype), None, None


def meta_operator(src: ModelConfig, tgt: ModelConfig, spec: GrowthSpec) -> LiGOOperator:
    """The operator on the meta device: its parameter counts and FLOPs (flops.operator_flops) from shapes
    alone, with no source weights read and no target produced."""
    from ..model.decoder import Decoder

    # The coefficients' random draws run on the meta device too: at 1B -> 8B they would be gigabytes on the CPU.
    with torch.device("meta"):
        return LiGOOperator(Decoder(src).state_dict(), src, tgt, spec)


def operator_from(source: nn.Module, target: ModelConfig, spec: GrowthSpec) -> LiGOOperator:
    """The operator from a source Decoder (its weights are copied into frozen parameters)."""
    return LiGOOperator(dict(source.state_dict()), source.cfg, target, spec)
