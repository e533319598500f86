"""growth/operator.py: the classic heuristics as special cases of the operator, function preservation,
and what the operator counts."""

from __future__ import annotations

import pytest
import torch

from ligo_ds import ModelConfig, load_model
from ligo_ds.growth import GrownModel, GrowthSpec, materialise, operator_from
from ligo_ds.model.decoder import Decoder

from conftest import HF_CASES, doubled, ids_for, random_source

ATOL = 1e-4


@pytest.mark.parametrize("case", ["gpt2", "llama_gqa_tied", "llama_bias", "qwen2_gqa"])
@pytest.mark.parametrize("order", ["paper", "official"])
def test_identity_growth_reproduces_random_source(case, order):
    src = random_source(case)
    op = operator_from(src, src.cfg, GrowthSpec(width_init="select", depth_init="stack", order=order))
    ids = ids_for(src.cfg)
    with torch.no_grad():
        torch.testing.assert_close(GrownModel(op)(ids), src(ids), atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "depth_init, source_of", [("stack", lambda i, l1, l2: i % l1), ("interpolate", lambda i, l1, l2: i * l1 // l2)]
)
@pytest.mark.parametrize("case", ["gpt2", "llama_gqa_tied"])
def test_depth_heuristics_equal_hand_built_models(case, depth_init, source_of):
    src = random_source(case)
    h = dict(HF_CASES[case])
    h["n_layer" if h["model_type"] == "gpt2" else "num_hidden_layers"] = 5
    tgt_cfg = ModelConfig.from_hf(h)
    by_hand = Decoder(tgt_cfg).eval()
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("blocks.")}
    for i in range(5):
        j = source_of(i, src.cfg.num_layers, 5)
        state.update({f"blocks.{i}.{k}": v for k, v in src.blocks[j].state_dict().items()})
    by_hand.load_state_dict(state)
    op = operator_from(src, tgt_cfg, GrowthSpec(depth_init=depth_init))
    ids = ids_for(src.cfg)
    with torch.no_grad():
        torch.testing.assert_close(GrownModel(op)(ids), by_hand(ids), atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "case", ["gpt2", "gpt2_untied_gelu", "llama_gqa_tied", "llama", "qwen2_gqa", "mistral_window_headdim"]
)
def test_net2net_and_zero_depth_preserve_the_function(case):
    src = random_source(case)
    tgt = ModelConfig.from_hf(doubled(case))
    op = operator_from(src, tgt, GrowthSpec(width_init="net2net", depth_init="zero"))
    ids = ids_for(src.cfg)
    with torch.no_grad():
        torch.testing.assert_close(GrownModel(op)(ids), src(ids), atol=ATOL, rtol=0)


def test_paper_tying_does_not_preserve_width_growth():
    """The paper's in = out tying starts away from the source (a consumer sums every copy of a unit): a
    check that the preservation test above can fail."""
    src = random_source("gpt2")
    op = operator_from(src, ModelConfig.from_hf(doubled("gpt2")), GrowthSpec(width_init="select", depth_init="zero"))
    ids = ids_for(src.cfg)
    with torch.no_grad():
        assert (GrownModel(op)(ids) - src(ids)).abs().max() > 0.1


def test_param_counts_and_repr():
    src = random_source("gpt2")
    tgt = ModelConfig.from_hf(doubled("gpt2"))
    op = operator_from(src, tgt, GrowthSpec())
    c = op.param_counts()
    assert c["source"] == src.num_params() and c["target"] == tgt.num_params()
    d1, d2, f1, f2, h1, h2 = 64, 128, 256, 512, 4, 8
    per_layer = h2 * h1 * 3 + f2 * f1
    assert c["operator"] == d2 * d1 + 2 * per_layer + 8 * 4 * 2  # B_emb, L1 layer widths, 8 depth kinds
    assert f"operator {c['operator']:,}" in repr(op)
    official = operator_from(src, tgt, GrowthSpec(order="official")).param_counts()["operator"]
    assert official == d2 * d1 + 4 * per_layer + 8 * 4 * 2, "official order: one width set per target layer"


def test_grow_from_hf_checkpoint(hf_checkpoint):
    hf, directory = hf_checkpoint("llama_gqa_tied")
    src = load_model(directory).eval()
    op = operator_from(
        src, ModelConfig.from_hf(doubled("llama_gqa_tied")), GrowthSpec(width_init="net2net", depth_init="zero")
    )
    ids = ids_for(src.cfg)
    with torch.no_grad():
        torch.testing.assert_close(materialise(op)(ids), hf(ids).logits, atol=ATOL, rtol=0)
