"""training/flops.py and growth/cost.py: training FLOPs per token, the operator's FLOPs per fit step, and the
peak table for MFU."""

from __future__ import annotations

import pytest

from ligo_ds import ModelConfig
from ligo_ds.growth import GrownModel, GrowthSpec, materialise, meta_operator, operator_from
from ligo_ds.growth.cost import operator_flops, vocab_flops_per_token
from ligo_ds.model.decoder import Decoder
from ligo_ds.training.flops import matmul_params, peak_flops, train_flops_per_token

from conftest import HF_CASES, doubled, ids_for, random_source


@pytest.mark.parametrize("case", ["gpt2", "llama_gqa_tied", "gpt2_untied_gelu"])
def test_matmul_params_counts_block_matrices_and_head(case):
    cfg = ModelConfig.from_hf(HF_CASES[case])
    model = Decoder(cfg)
    by_hand = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("blocks"))
    assert matmul_params(cfg) == by_hand + cfg.vocab_size * cfg.hidden_size
    assert train_flops_per_token(cfg, 128) == 6 * matmul_params(cfg) + 12 * cfg.num_layers * 128 * cfg.q_size


def test_peak_table():
    assert peak_flops("NVIDIA H100 80GB HBM3", None) == 989e12
    assert peak_flops("cpu", None) is None and peak_flops("cpu", 2.0) == 2e12


@pytest.mark.parametrize("case", ["gpt2", "llama_gqa_tied"])
@pytest.mark.parametrize(
    "spec",
    [
        GrowthSpec(width_init="random"),
        GrowthSpec(width_init="random", order="official"),
        GrowthSpec(width_init="net2net", depth_init="zero"),
    ],
)
def test_operator_flops_are_a_fit_step_less_the_large_models_own(case, spec):
    """What the fit adds per step, counted once from one block, equals a whole fit step's count (no block
    checkpointing, as training FLOPs count no recompute) less the grown model trained on its own."""
    from torch.utils.flop_counter import FlopCounterMode

    src = random_source(case)
    op = operator_from(src, ModelConfig.from_hf(doubled(case, layers=3)), spec)
    ids = ids_for(src.cfg)

    def step_flops(model) -> int:
        with FlopCounterMode(display=False) as counter:
            model(ids[:, :-1], ids[:, 1:]).backward()
        return counter.get_total_flops()

    counted = operator_flops(op)
    assert all(p.grad is None for p in op.parameters()), "counting leaves no gradients behind"
    # What the fit counts: the same operator on the meta device, from the shapes alone
    assert operator_flops(meta_operator(src.cfg, op.tgt, spec)) == counted
    whole = step_flops(GrownModel(op, checkpointing="none"))
    own = step_flops(materialise(op).train())
    tokens = ids[:, :-1].numel()
    assert counted + tokens * vocab_flops_per_token(op) == whole - own
    assert counted > 0
