"""growth/spec.py: what the operator may be asked to do, and which source/target pairs it refuses."""

from __future__ import annotations

import pytest

from ligo_ds import ConfigError, ModelConfig
from ligo_ds.growth import GrowthSpec, operator_from

from conftest import HF_CASES, random_source


@pytest.mark.parametrize(
    "case, change, message",
    [
        # Fewer layers or heads are fine in a larger model; a smaller one in total is not.
        ("llama", dict(num_hidden_layers=1), "target is smaller than the source: [\\d,]+ parameters < [\\d,]+$"),
        ("llama", dict(intermediate_size=64), "intermediate_size 64 < 96"),
        ("llama", dict(vocab_size=128), "vocabularies differ: source vocab_size 96, target 128"),
        ("llama", dict(head_dim=8), "head_dim 8 < 16"),
        ("llama", dict(tie_word_embeddings=True), "tie_embeddings: source False, target True"),
        ("gpt2", dict(n_positions=128), "learned position tables differ in length"),
        (
            "llama3_rope",
            dict(rope_scaling={"rope_type": "llama3", "factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0}),
            "rope_scaling: source {'factor': 8.0, .*'original_max_position_embeddings': 16}, target {'factor': 32.0",
        ),
        (
            "llama",
            dict(rope_scaling={"rope_type": "linear", "factor": 2.0}),
            "rope_type: source 'default', target 'linear'",
        ),
    ],
)
def test_refused_pairs(case, change, message):
    src = random_source(case)
    with pytest.raises(ConfigError, match=message):
        operator_from(src, ModelConfig.from_hf({**HF_CASES[case], **change}), GrowthSpec())


def test_family_mismatch_and_bad_target():
    with pytest.raises(ConfigError, match="source is a gpt2 model \\(gpt2 family\\), target a llama model"):
        operator_from(random_source("gpt2"), ModelConfig.from_hf({**HF_CASES["llama"], "vocab_size": 96}), GrowthSpec())
    with pytest.raises(ConfigError, match="hidden size 130 is not divisible by the number of attention heads 8"):
        ModelConfig.from_hf({**HF_CASES["llama"], "hidden_size": 130, "num_attention_heads": 8})


def test_spec_validation():
    # Built by code, the refusals name GrowthSpec's fields; built from a command, the Growth block names the
    # flags (test_options.py, test_growth_init.py).
    with pytest.raises(
        ConfigError, match="width_init net2net needs tying inverse .* cannot be combined with tying paper"
    ):
        GrowthSpec(width_init="net2net", tying="paper")
    with pytest.raises(ConfigError, match="depth_init 'copy': expected one of stack, interpolate, random, zero"):
        GrowthSpec(depth_init="copy")
    assert GrowthSpec(width_init="net2net").resolved_tying == "inverse"
    assert GrowthSpec().resolved_tying == "paper"
