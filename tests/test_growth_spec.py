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
        ("gpt_neox", dict(rotary_pct=0.5), "partial_rotary: source 0.25, target 0.5"),
        ("gemma3", dict(query_pre_attn_scalar=32), "query_pre_attn_scalar: source 24.0, target 32.0"),
    ],
)
def test_refused_pairs(case, change, message):
    src = random_source(case)
    with pytest.raises(ConfigError, match=message):
        operator_from(src, ModelConfig.from_hf({**HF_CASES[case], **change}), GrowthSpec())


@pytest.mark.parametrize(
    "case, change, said",
    [
        (
            "llama",
            dict(rope_scaling={"rope_type": "linear", "factor": 2.0}),
            "(rope base 10000 -> base 10000 linear x2)",
        ),
        ("llama3_rope", dict(rope_theta=1e6), "(rope base 500000 llama3 x8 -> base 1e+06 llama3 x8)"),
        # Gemma 3 1B -> 4B scales its global RoPE by 8 and doubles the window
        (
            "gemma3",
            dict(rope_scaling={"rope_type": "linear", "factor": 8.0}, sliding_window=16),
            "sliding window 8 -> 16",
        ),
    ],
)
def test_another_rope_kind_or_window_grows_and_the_notes_say_how_far(case, change, said):
    """A published pair is not refused for its RoPE: each pair goes to the nearest frequency, and the fit's
    log says how far the rotations drift apart (or that a window changed)."""
    from ligo_ds.growth.rotary import notes

    src = random_source(case)
    tgt = ModelConfig.from_hf({**HF_CASES[case], **change})
    operator_from(src, tgt, GrowthSpec())
    assert said in " ".join(notes(src.cfg, tgt))


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
