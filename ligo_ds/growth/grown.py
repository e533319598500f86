"""The grown model without building it: the target architecture run on weights the operator produces
block by block (the fit's forward), and the same weights streamed out (materialisation, HF export).

Only about one large block's weights are alive at a time: a block's weights are produced inside that
block's (checkpointed) forward, and the streams yield one block at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from ..model.compute import LOSS_CHUNK, Selective, checkpointed, compile_forward
from ..model.decoder import Block, Decoder, layer_ropes, make_norm
from ..model.hf_save import write_checkpoint
from .operator import LiGOOperator


class GrownModel(nn.Module):
    """The target architecture run on weights the operator produces, block by block.

    `model(ids)` gives logits, `model(ids, targets)` the mean loss, exactly as Decoder. Gradients reach
    only the operator's coefficients. `checkpointing` (compute.CHECKPOINTING) is over a block's weight
    production and its forward together: full (the default) recomputes a block's weights in the backward
    pass instead of keeping them, so about one block's weights are alive at a time; selective recomputes
    them too but keeps the block's own matmul and attention outputs; none keeps everything.
    """

    def __init__(self, operator: LiGOOperator, checkpointing: str = "full", loss_chunk: int = LOSS_CHUNK):
        super().__init__()
        self.operator = operator
        self.checkpointing, self.loss_chunk, self._compile = checkpointing, loss_chunk, False
        self._selective = Selective(on=False)  # on only around a block's own forward: see Selective
        # meta-device modules for functional_call, built lazily, outside zero.Init: a block per attention
        # window the target's layers have (Gemma's sliding and full layers differ), and the final norm
        self._skeleton: dict[int | None, nn.Module] = {}
        self._norm: list[nn.Module] = []

    def _skel(self, layer: int = 0) -> tuple[nn.Module, nn.Module]:
        tgt = self.operator.tgt
        window = tgt.window(layer)
        if window not in self._skeleton:
            with torch.device("meta"):
                self._skeleton[window] = Block(tgt, layer=layer)
            if self._compile:
                compile_forward(self._skeleton[window])
        if not self._norm:
            with torch.device("meta"):
                self._norm.append(make_norm(tgt))
        return self._skeleton[window], self._norm[0]

    def compile_blocks(self) -> None:
        """torch.compile the blocks' forward: one skeleton runs every layer, so it is compiled once. The
        operator's weight production stays eager: under ZeRO-3 its modules are gathered one at a time by
        hooks that would break the compiled graph at every module."""
        self._compile = True
        self._skeleton.clear()

    def _block_forward(self, i: int, x: torch.Tensor, depth: dict, rope) -> torch.Tensor:
        block, _ = self._skel(i)
        weights = self.operator.block(i, depth)
        with self._selective.saving():
            return functional_call(block, weights, (x, rope))

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.operator.tgt
        # The vocabulary matrices are not produced: the embedding widens the batch's rows and the head runs
        # at the source's width (LiGOOperator.embed, .head), so no rank holds a vocabulary x D2 matrix.
        g = self.operator.global_weights(vocab=False)
        residual = self.operator.residual(groups=self.operator.vocab_groups())
        T = ids.shape[1]
        x = self.operator.embed(ids, residual)
        if cfg.embed_scale != 1.0:  # as Decoder.embed
            x = x * torch.tensor(cfg.embed_scale, dtype=x.dtype)
        if "pos_emb.weight" in g:
            x = x + g["pos_emb.weight"][:T]
        ropes = layer_ropes(cfg, T, ids.device)
        depth = self.operator.depth()
        for i in range(cfg.num_layers):
            rope = ropes[cfg.layer_type(i)]
            x = checkpointed(self.checkpointing, self._block_forward, i, x, depth, rope, policy=self._selective)
        _, norm = self._skel()
        x = functional_call(norm, {k[len("norm.") :]: v for k, v in g.items() if k.startswith("norm.")}, (x,))
        return self.operator.head(x, residual, targets, self.loss_chunk)


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
