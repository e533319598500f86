"""growth/layout.py: our fused block tensors cut into the operator's pieces and put back together."""

from __future__ import annotations

import pytest
import torch

from ligo_ds import ModelConfig
from ligo_ds.growth.layout import BLOCK_LAYOUT, fuse, split_block_tensor
from ligo_ds.model.decoder import Block

from conftest import HF_CASES


@pytest.mark.parametrize("case", ["gpt2", "llama_gqa_tied", "llama_bias"])
def test_split_then_fuse_is_the_identity(case):
    cfg = ModelConfig.from_hf(HF_CASES[case])
    torch.manual_seed(0)
    state = Block(cfg).state_dict()
    assert set(state) <= set(BLOCK_LAYOUT), "every block tensor has a layout"
    pieces = [p for name, t in state.items() for p in split_block_tensor(cfg, name, t)]
    back = fuse(pieces)
    assert list(back) == list(state) and all(torch.equal(back[k], state[k]) for k in state)


def test_pieces_of_fused_tensors():
    cfg = ModelConfig.from_hf(HF_CASES["llama_gqa_tied"])  # 4 heads / 2 kv of 16, gated MLP of 96
    qkv = split_block_tensor(cfg, "attn.qkv.weight", torch.zeros(64 + 2 * 32, 64))
    assert [(k.piece.kind, tuple(t.shape)) for k, t in qkv] == [("q", (64, 64)), ("k", (32, 64)), ("v", (32, 64))]
    up = split_block_tensor(cfg, "mlp.up.weight", torch.arange(2 * 96.0)[:, None])
    assert [(k.index, k.piece.kind) for k, _ in up] == [(0, "up"), (1, "up")], "[gate; up]: one piece, twice"
    assert up[1][1][0, 0] == 96.0
    shuffled = list(reversed(up))
    assert torch.equal(fuse(shuffled)["mlp.up.weight"], torch.arange(2 * 96.0)[:, None]), "fused in piece order"
