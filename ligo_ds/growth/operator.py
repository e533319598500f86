"""The LiGO operator as modules, the grown model's forward, and materialisation.

Every module reads only its own parameters, inside its own forward, and returns what it computed as
fresh tensors: that is the contract ZeRO-3's gather/release hooks assume (a partitioned parameter is
complete only during its owner's forward). The source weights are frozen parameters, so ZeRO-3
partitions them too.

    SourceLayer   frozen weights of one source layer (and one module for embeddings/final norm/head)
    LayerWidth    per-layer expansions: heads of Q, K, V (E_q, E_k, E_v) and the MLP hidden units (B_mlp)
    ResidualWidth the one global residual expansion B_emb
    DepthMixing   one L2 x L1 matrix per module kind

A target block's weights are produced inside that block's (checkpointed) forward, so only about one
large block's weights are alive at a time. Which expansion acts on which side of which tensor is the
table BLOCK_LAYOUT / GLOBAL_LAYOUT below, read by the code; nothing asks for the model family.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from ..config import ModelConfig
from ..hf_io import write_checkpoint
from ..model import Block, Decoder, lm_loss, make_norm, rope_tables
from . import functional as G
from . import init as I
from .spec import GrowthSpec, check_growable


@dataclass(frozen=True)
class Piece:
    kind: str  # depth kind: which L2 x L1 matrix mixes it
    size: str  # ModelConfig attribute: its length along dim 0 inside the fused tensor
    out: str | None  # expansion group on dim 0
    inp: str | None  # expansion group on dim 1


# Our fused block tensors, cut into the pieces the operator treats separately (a gated MLP's up holds
# [gate; up]: the list repeats). Groups: emb / emb_in (residual stream, producer / consumer side),
# q, k, v (heads, per layer), o_in (attention output heads, from v), mlp / mlp_in (MLP hidden units).
BLOCK_LAYOUT: dict[str, list[Piece]] = {
    "norm1.weight": [Piece("norm1", "hidden_size", "emb", None)],
    "norm1.bias": [Piece("norm1", "hidden_size", "emb", None)],
    "attn.qkv.weight": [Piece("q", "q_size", "q", "emb_in"), Piece("k", "kv_size", "k", "emb_in"),
                        Piece("v", "kv_size", "v", "emb_in")],
    "attn.qkv.bias": [Piece("q", "q_size", "q", None), Piece("k", "kv_size", "k", None),
                      Piece("v", "kv_size", "v", None)],
    "attn.out.weight": [Piece("o", "hidden_size", "emb", "o_in")],
    "attn.out.bias": [Piece("o", "hidden_size", "emb", None)],
    "norm2.weight": [Piece("norm2", "hidden_size", "emb", None)],
    "norm2.bias": [Piece("norm2", "hidden_size", "emb", None)],
    "mlp.up.weight": [Piece("up", "intermediate_size", "mlp", "emb_in")],
    "mlp.up.bias": [Piece("up", "intermediate_size", "mlp", None)],
    "mlp.down.weight": [Piece("down", "hidden_size", "emb", "mlp_in")],
    "mlp.down.bias": [Piece("down", "hidden_size", "emb", None)],
}
GLOBAL_LAYOUT: dict[str, tuple[str | None, str | None]] = {
    "tok_emb.weight": (None, "emb"),
    "pos_emb.weight": (None, "emb"),
    "norm.weight": ("emb_final", None),
    "norm.bias": ("emb_final", None),
    "lm_head.weight": (None, "emb_in"),
}
DEPTH_KINDS = ("norm1", "q", "k", "v", "o", "norm2", "up", "down")
PER_LAYER_GROUPS = {"q", "k", "v", "o_in", "mlp", "mlp_in"}
HEAD_GROUPS = {"q", "k", "v", "o_in"}


def split_block_tensor(cfg: ModelConfig, name: str, tensor: torch.Tensor) -> list[tuple[Piece, torch.Tensor]]:
    pieces = BLOCK_LAYOUT[name]
    sizes = [getattr(cfg, p.size) for p in pieces]
    repeats = tensor.shape[0] // sum(sizes)  # 2 for a gated MLP's [gate; up]
    return list(zip(pieces * repeats, tensor.split(sizes * repeats, dim=0)))


def _key(name: str, index: int) -> str:
    return f"{name.replace('.', '__')}__{index}"  # parameter names cannot hold dots


def apply_side(w: torch.Tensor, mat: torch.Tensor, dim: int, heads: bool, head_dim: int) -> torch.Tensor:
    if heads:
        return G.expand_heads(w, mat, head_dim, dim)
    return G.expand(w, mat, None) if dim == 0 else G.expand(w, None, mat)


class SourceLayer(nn.Module):
    """Frozen copies of given tensors; forward returns them as fresh tensors."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        for key, t in tensors.items():
            t = t.detach().clone(memory_format=torch.contiguous_format)
            self.register_parameter(key, nn.Parameter(t, requires_grad=False))

    def forward(self) -> dict[str, torch.Tensor]:
        return {k: p.clone() for k, p in self.named_parameters(recurse=False)}


class LayerWidth(nn.Module):
    """One layer's expansions. forward(pieces) applies the per-layer groups to both sides."""

    def __init__(self, e_q: torch.Tensor, e_k: torch.Tensor, e_v: torch.Tensor, b_mlp: torch.Tensor,
                 src: ModelConfig, tgt: ModelConfig, tying: str):
        super().__init__()
        self.e_q, self.e_k, self.e_v = nn.Parameter(e_q.clone()), nn.Parameter(e_k.clone()), nn.Parameter(e_v.clone())
        self.b_mlp = nn.Parameter(b_mlp.clone())
        self.src_heads, self.tgt_heads, self.head_dim, self.tying = src.num_heads, tgt.num_heads, tgt.head_dim, tying

    def matrices(self) -> dict[str, torch.Tensor]:
        o_in = G.query_to_kv_heads(self.e_v, self.src_heads, self.tgt_heads)
        consumer = G.left_inverse if self.tying == "inverse" else (lambda m: m)
        return {"q": self.e_q, "k": self.e_k, "v": self.e_v, "o_in": consumer(o_in), "mlp": self.b_mlp,
                "mlp_in": consumer(self.b_mlp)}

    def forward(self, pieces: dict[str, tuple[Piece, torch.Tensor]]) -> dict[str, torch.Tensor]:
        mats = self.matrices()
        out = {}
        for key, (piece, w) in pieces.items():
            for dim, group in ((0, piece.out), (1, piece.inp)):
                if group in PER_LAYER_GROUPS:
                    w = apply_side(w, mats[group], dim, group in HEAD_GROUPS, self.head_dim)
            out[key] = w
        return out


class ResidualWidth(nn.Module):
    """The global residual expansion B_emb; forward applies the shared groups."""

    def __init__(self, b_emb: torch.Tensor, tying: str, tied_head: bool):
        super().__init__()
        self.b_emb = nn.Parameter(b_emb.clone())
        self.tying, self.tied_head = tying, tied_head

    def forward(self, tensors: dict[str, torch.Tensor], groups: dict[str, tuple[str | None, str | None]]):
        b = self.b_emb
        a = G.left_inverse(b) if self.tying == "inverse" else b
        # With a tied head the embedding is a producer (B) and the head reads through it, so under
        # 'inverse' the copy counts are folded into the final norm instead (reference/ligo.md).
        mats = {"emb": b, "emb_in": a, "emb_final": a if self.tied_head else b}
        out = {}
        for key, w in tensors.items():
            for dim, group in enumerate(groups[key]):
                if group in mats:
                    w = apply_side(w, mats[group], dim, False, 0)
            out[key] = w
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
        layers = []
        self._piece_of: dict[str, Piece] = {}  # source-layer key -> its piece (the same for every layer)
        for j in range(src.num_layers):
            tensors = {}
            for name in BLOCK_LAYOUT:
                full = f"blocks.{j}.{name}"
                if full in source_state:
                    for index, (piece, t) in enumerate(split_block_tensor(src, name, source_state[full])):
                        tensors[_key(name, index)] = t
                        self._piece_of[_key(name, index)] = piece
            layers.append(SourceLayer(tensors))
        self.source_layers = nn.ModuleList(layers)
        self.source_global = SourceLayer({k.replace(".", "__"): source_state[k] for k in GLOBAL_LAYOUT
                                          if k in source_state and not (k == "lm_head.weight" and src.tie_embeddings)})
        width_layers = tgt.num_layers if spec.order == "official" else src.num_layers
        widths = []
        for _ in range(width_layers):
            e_q, e_kv = I.head_matrices(spec.width_init if spec.width_init != "net2net" else "select",
                                        src.num_heads, src.num_kv_heads, tgt.num_heads, tgt.num_kv_heads, gen)
            kind = "random" if spec.width_init == "random" else "select"
            b_mlp = I.width_matrix(kind, tgt.intermediate_size, src.intermediate_size, gen)
            noisy = [I.add_width_noise(m, old, spec.noise, gen) for m, old in
                     ((e_q, src.num_heads), (e_kv, src.num_kv_heads), (e_kv, src.num_kv_heads),
                      (b_mlp, src.intermediate_size))]
            widths.append(LayerWidth(*noisy, src, tgt, tying))
        self.layer_widths = nn.ModuleList(widths)
        kind = "random" if spec.width_init == "random" else "select"
        b_emb = I.add_width_noise(I.width_matrix(kind, tgt.hidden_size, src.hidden_size, gen), src.hidden_size,
                                  spec.noise, gen)
        self.residual = ResidualWidth(b_emb, tying, tgt.tie_embeddings)
        self.depth = DepthMixing({
            k: I.add_depth_noise(I.depth_matrix(spec.depth_init, tgt.num_layers, src.num_layers, gen,
                                                output_projection=k in ("o", "down")), spec.noise, gen)
            for k in DEPTH_KINDS})

    # ---- producing weights ---------------------------------------------------------------------
    def _with_pieces(self, tensors: dict[str, torch.Tensor]) -> dict[str, tuple[Piece, torch.Tensor]]:
        return {k: (self._piece_of[k], t) for k, t in tensors.items()}

    def block(self, i: int, depth: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Target block i's weights under our parameter names (fused as model.py lays them out).

        paper order:    sum_j w[i, j] * widen_j(source_j)   (per-layer sides inside the sum)
        official order: widen_i(sum_j w[i, j] * source_j)
        The shared residual sides are applied once, after the sum (they commute with it).
        """
        acc: dict[str, torch.Tensor] = {}
        for j in range(self.src.num_layers):
            tensors = self.source_layers[j]()
            if self.spec.order == "paper":
                tensors = self.layer_widths[j](self._with_pieces(tensors))
            for key, t in tensors.items():
                term = depth[self._piece_of[key].kind][i, j] * t
                acc[key] = term if key not in acc else acc[key] + term
        if self.spec.order == "official":
            acc = self.layer_widths[i](self._with_pieces(acc))
        sides = {k: (self._piece_of[k].out, self._piece_of[k].inp) for k in acc}
        return _fuse(self.residual(acc, sides))

    def global_weights(self) -> dict[str, torch.Tensor]:
        tensors = {k.replace("__", "."): t for k, t in self.source_global().items()}
        return self.residual(tensors, GLOBAL_LAYOUT)

    # ---- bookkeeping ---------------------------------------------------------------------------
    def param_counts(self) -> dict[str, int]:
        def count(params):
            return sum(getattr(p, "ds_numel", p.numel()) for p in params)
        return {"operator": count(p for p in self.parameters() if p.requires_grad),
                "source": count(p for p in self.parameters() if not p.requires_grad),
                "target": self.tgt.num_params()}

    def extra_repr(self) -> str:
        c = self.param_counts()
        return (f"{self.src.num_layers}L/{self.src.hidden_size} -> {self.tgt.num_layers}L/{self.tgt.hidden_size}, "
                f"{self.spec}, parameters: operator {c['operator']:,}, source {c['source']:,} (frozen), "
                f"target {c['target']:,}")


def _fuse(pieces: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Concatenate the pieces back into our fused tensors, in piece order."""
    out: dict[str, list[torch.Tensor]] = {}
    for key in sorted(pieces, key=lambda k: int(k.rsplit("__", 1)[1])):
        out.setdefault(key.rsplit("__", 1)[0].replace("__", "."), []).append(pieces[key])
    return {name: ts[0] if len(ts) == 1 else torch.cat(ts, dim=0) for name, ts in out.items()}


def grow(source: Decoder, target: ModelConfig, spec: GrowthSpec) -> LiGOOperator:
    state = {k: v for k, v in source.state_dict().items()}
    return LiGOOperator(state, source.cfg, target, spec)


class GrownModel(nn.Module):
    """The target architecture run on weights the operator produces, block by block.

    `model(ids)` gives logits, `model(ids, targets)` the mean loss, exactly as Decoder. Gradients reach
    only the operator's coefficients. With `checkpoint_blocks`, a block's weights are recomputed in the
    backward pass instead of being kept, so about one block's weights are alive at a time.
    """

    def __init__(self, operator: LiGOOperator, checkpoint_blocks: bool = True):
        super().__init__()
        self.operator = operator
        self.checkpoint_blocks = checkpoint_blocks
        self._skeleton: list = []  # meta-device modules for functional_call; built lazily, outside zero.Init

    def _skel(self) -> tuple[nn.Module, nn.Module]:
        if not self._skeleton:
            with torch.device("meta"):
                self._skeleton.extend([Block(self.operator.tgt), make_norm(self.operator.tgt)])
        return self._skeleton[0], self._skeleton[1]

    def _block_forward(self, i: int, x: torch.Tensor, depth: dict, rope) -> torch.Tensor:
        block, _ = self._skel()
        return functional_call(block, self.operator.block(i, depth), (x, rope))

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.operator.tgt
        g = self.operator.global_weights()
        T = ids.shape[1]
        x = F.embedding(ids, g["tok_emb.weight"])
        if "pos_emb.weight" in g:
            x = x + g["pos_emb.weight"][:T]
        rope = rope_tables(T, cfg.head_dim, cfg.rope_theta, ids.device) if cfg.positions == "rope" else None
        depth = self.operator.depth()
        for i in range(cfg.num_layers):
            if self.checkpoint_blocks and torch.is_grad_enabled():
                x = checkpoint(self._block_forward, i, x, depth, rope, use_reentrant=False)
            else:
                x = self._block_forward(i, x, depth, rope)
        _, norm = self._skel()
        x = functional_call(norm, {k[len("norm."):]: v for k, v in g.items() if k.startswith("norm.")}, (x,))
        head = g["tok_emb.weight"] if cfg.tie_embeddings else g["lm_head.weight"]
        logits = F.linear(x, head)
        return logits if targets is None else lm_loss(logits, targets)


@torch.no_grad()
def iter_grown_state(operator: LiGOOperator) -> Iterator[tuple[str, torch.Tensor]]:
    """(our name, tensor) of the grown model, one block at a time."""
    yield from operator.global_weights().items()
    depth = operator.depth()
    for i in range(operator.tgt.num_layers):
        for name, t in operator.block(i, depth).items():
            yield f"blocks.{i}.{name}", t


@torch.no_grad()
def materialise(operator: LiGOOperator) -> Decoder:
    """An ordinary Decoder of the target shape; blocks are filled one at a time (one copy of the target)."""
    with torch.device("meta"):
        model = Decoder(operator.tgt)
    state = dict(iter_grown_state(operator))
    if operator.tgt.tie_embeddings:
        state["lm_head.weight"] = state["tok_emb.weight"]
    model.load_state_dict(state, assign=True)
    model.tie_weights()
    return model


def write_grown(operator: LiGOOperator, out_dir: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Stream the grown model to an HF checkpoint directory without building it."""
    return write_checkpoint(operator.tgt, iter_grown_state(operator), out_dir, dtype=dtype)
