"""growth/grown.py: the grown model driven by the operator equals the materialised model and its HF
export; block checkpointing changes nothing; gradients reach only the operator."""

from __future__ import annotations

import pytest
import torch
import transformers

from ligo_ds import ModelConfig
from ligo_ds.growth import GrownModel, GrowthSpec, materialise, operator_from, write_grown

from conftest import doubled, ids_for, perturb, random_source

ATOL = 1e-4


# The RoPE-scaled cases show that growth keeps the source's positions: the export is read by transformers
# with the target's config, and its logits equal the operator's own forward.
@pytest.mark.parametrize(
    "case", ["gpt2", "llama_gqa_tied", "gpt2_untied_gelu", "llama_bias", "llama3_rope", "qwen2_yarn_rope"]
)
@pytest.mark.parametrize(
    "spec",
    [
        GrowthSpec(width_init="random", depth_init="random", noise=0.01),
        GrowthSpec(width_init="net2net", depth_init="zero", order="official"),
        GrowthSpec(width_init="select", depth_init="interpolate", tying="inverse"),
    ],
)
def test_operator_forward_equals_materialised_model(case, spec, tmp_path):
    src = random_source(case)
    op = operator_from(src, ModelConfig.from_hf(doubled(case)), spec)
    perturb(op)  # away from any special case
    ids = ids_for(src.cfg)
    with torch.no_grad():
        driven = GrownModel(op)(ids)
        torch.testing.assert_close(materialise(op).eval()(ids), driven, atol=ATOL, rtol=0)
    write_grown(op, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, driven, atol=ATOL, rtol=0)


def test_checkpointed_and_plain_forward_agree():
    src = random_source("llama_gqa_tied")
    op = operator_from(src, ModelConfig.from_hf(doubled("llama_gqa_tied")), GrowthSpec(width_init="random"))
    ids = ids_for(src.cfg)
    losses, grads = [], []
    for ckpt in (True, False):
        op.zero_grad()
        loss = GrownModel(op, checkpointing="full" if ckpt else "none")(ids[:, :-1], ids[:, 1:])
        loss.backward()
        losses.append(loss.detach())
        grads.append(op.residual.b_emb.grad.clone())
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("case", ["gpt2", "llama_bias"])
def test_gradients_reach_operator_only(case):
    src = random_source(case)
    op = operator_from(src, ModelConfig.from_hf(doubled(case)), GrowthSpec(width_init="random", depth_init="zero"))
    ids = ids_for(src.cfg)
    GrownModel(op)(ids[:, :-1], ids[:, 1:]).backward()
    learned = [(n, p) for n, p in op.named_parameters() if p.requires_grad]
    frozen = [(n, p) for n, p in op.named_parameters() if not p.requires_grad]
    assert learned and frozen
    assert [n for n, p in learned if p.grad is None or not p.grad.abs().sum() > 0] == []
    assert [n for n, p in frozen if p.grad is not None] == []
    assert {n.split(".")[0] for n, _ in frozen} == {"source_layers", "source_global", "source_vocab"}


@pytest.mark.parametrize("pair", ["llama3.2-1b-3b", "qwen2.5-0.5b-1.5b", "smollm2-360m-1.7b"])
def test_wider_heads_fewer_layers_export_as_the_operator_computes(pair, tmp_path):
    """The published pairs' shapes (head_dim x2 with fewer heads, a smaller GQA group, fewer layers): the
    operator, perturbed away from its init (the head-dim maps included), its materialised model and its HF
    export read by transformers give the same logits."""
    from ligo_ds.model.decoder import Decoder

    from published import ANALOGUES

    s, t = ANALOGUES[pair]
    torch.manual_seed(0)
    src = Decoder(ModelConfig.from_hf(s)).eval()
    op = operator_from(src, ModelConfig.from_hf(t), GrowthSpec(width_init="random", noise=0.01))
    perturb(op)
    assert any(name.endswith("p_q") for name, _ in op.named_parameters()) == (s["head_dim"] != t["head_dim"])
    ids = ids_for(src.cfg)
    with torch.no_grad():
        driven = GrownModel(op)(ids)
        torch.testing.assert_close(materialise(op).eval()(ids), driven, atol=ATOL, rtol=0)
    write_grown(op, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, driven, atol=ATOL, rtol=0)
