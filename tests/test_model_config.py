"""model/config.py: ModelConfig parsing for every family, old and new config.json spellings, clear errors."""

from __future__ import annotations

import pytest

from ligo_ds import ConfigError, ModelConfig
from ligo_ds.model.config import SUPPORTED_MODEL_TYPES
from ligo_ds.model.config_checks import MAX_LAYERS, MAX_PARAMS

from conftest import HF_CASES


def test_gpt2_fields():
    cfg = ModelConfig.from_hf(HF_CASES["gpt2"])
    assert (cfg.family, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.head_dim) == ("gpt2", 2, 64, 4, 16)
    assert cfg.intermediate_size == 256 and cfg.tie_embeddings and cfg.positions == "learned"
    assert cfg.activation == "gelu_tanh"


def test_rope_theta_old_and_new_spelling():
    base = dict(HF_CASES["llama"])
    assert ModelConfig.from_hf({**base, "rope_theta": 5e5}).rope_theta == 5e5
    assert (
        ModelConfig.from_hf({**base, "rope_parameters": {"rope_type": "default", "rope_theta": 3e4}}).rope_theta == 3e4
    )
    assert ModelConfig.from_hf(base).rope_theta == 10000.0


def test_qwen2_has_qkv_bias_only():
    cfg = ModelConfig.from_hf(HF_CASES["qwen2_gqa"])
    assert cfg.qkv_bias and not cfg.out_bias and not cfg.mlp_bias and cfg.num_kv_heads == 2


def test_explicit_head_dim_is_honoured():
    cfg = ModelConfig.from_hf(HF_CASES["mistral_window_headdim"])
    assert cfg.head_dim == 32 and cfg.q_size == 128 and cfg.sliding_window == 8


@pytest.mark.parametrize(
    "update, message",
    [
        (
            {"model_type": "bert"},
            "unsupported model_type 'bert'; supported: "
            "gemma3_text, gpt2, gpt_neox, llama, mistral, olmo2, qwen2, qwen3",
        ),
        ({"hidden_size": 66}, "hidden size 66 is not divisible by the number of attention heads 4"),
        ({"num_key_value_heads": 3}, r"num_attention_heads \(4\) is not divisible by num_key_value_heads \(3\)"),
        (
            {"rope_scaling": {"rope_type": "longrope", "factor": 4.0}},
            "rope type 'longrope' is not supported; supported: default, linear, dynamic, yarn, llama3",
        ),
        (
            {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
            r"RoPE parameters \{'rope_type': 'llama3', 'factor': 8.0\} do not describe a 'llama3' scaling: .*"
            "high_freq_factor",
        ),
        ({"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4}}, "do not describe a 'linear' scaling"),
        ({"rope_scaling": {"factor": 4.0}}, r"RoPE parameters \{'factor': 4.0\} given without a scaling type"),
        ({"partial_rotary_factor": 0.5}, "partial_rotary_factor=0.5 is not supported"),
        ({"hidden_act": "mish"}, "hidden_act='mish' is not supported"),
        ({"num_hidden_layers": 0}, "num_hidden_layers=0, expected a positive integer"),
    ],
)
def test_bad_llama_config(update, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_hf({**HF_CASES["llama"], **update})


@pytest.mark.parametrize(
    "case, kind, scaling",
    [
        ("llama3_rope", "llama3", {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0}),
        ("llama_linear_rope", "linear", {"factor": 4.0}),
        ("mistral_dynamic_rope", "dynamic", {"factor": 2.0}),
        ("qwen2_yarn_rope", "yarn", {"factor": 4.0, "original_max_position_embeddings": 16}),
    ],
)
def test_rope_scaling_is_read_from_every_config_layout(case, kind, scaling):
    cfg = ModelConfig.from_hf(HF_CASES[case])
    assert cfg.rope_type == kind
    assert {k: v for k, v in dict(cfg.rope_scaling).items() if k in scaling} == scaling
    assert ModelConfig.from_hf(HF_CASES["llama"]).rope_scaling == ()


def test_bad_gpt2_heads():
    with pytest.raises(ConfigError, match="hidden size 64 is not divisible by the number of attention heads 5"):
        ModelConfig.from_hf({**HF_CASES["gpt2"], "n_head": 5})


def test_supported_list_is_the_table():
    assert SUPPORTED_MODEL_TYPES == ("gemma3_text", "gpt2", "gpt_neox", "llama", "mistral", "olmo2", "qwen2", "qwen3")


def test_family_defaults_are_the_classes():
    """A key the file leaves out takes the transformers class's default: Qwen3's head_dim is 128 whatever
    hidden / heads is, OLMo 2's norm eps 1e-5; both have MLPs without biases whatever mlp_bias says."""
    import transformers

    shape = dict(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=96,
    )
    for model_type in ("qwen3", "olmo2"):
        hf = dict(model_type=model_type, **shape, mlp_bias=True)
        ours = ModelConfig.from_hf(hf)
        theirs = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**hf))
        assert ours.num_params() == theirs.num_parameters(), model_type
        assert ours.norm_eps == theirs.config.rms_norm_eps and not ours.mlp_bias
    assert ModelConfig.from_hf(dict(model_type="qwen3", **shape)).head_dim == 128


@pytest.mark.parametrize(
    "update",
    [{"use_sliding_window": True}, {"layer_types": ["full_attention", "sliding_attention"]}],
)
def test_sliding_layers_are_refused_by_name(update):
    hf = dict(model_type="qwen3", hidden_size=64, num_attention_heads=4, num_hidden_layers=2, **update)
    with pytest.raises(ConfigError, match="sliding-window layers .* not supported; expected use_sliding_window false"):
        ModelConfig.from_hf(hf)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ModelConfig.from_file(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        ModelConfig.from_file(tmp_path / "bad.json")


# ---- values as the file has them, and sizes no machine holds (config_checks.py) ------------------------------


@pytest.mark.parametrize(
    "update, message",
    [
        ({"hidden_size": True}, "hidden_size=true, expected a positive integer"),
        ({"hidden_size": 64.0}, "hidden_size=64.0, expected a positive integer"),
        ({"vocab_size": "96"}, 'vocab_size="96", expected a positive integer'),
        ({"intermediate_size": -1}, "intermediate_size=-1, expected a positive integer"),
        ({"rms_norm_eps": "nan"}, 'rms_norm_eps="nan", expected a finite number above 0'),
        ({"rms_norm_eps": float("nan")}, "rms_norm_eps=NaN, expected a finite number above 0"),
        ({"rope_theta": float("inf")}, "rope_theta=Infinity, expected a finite number above 0"),
        ({"rms_norm_eps": 0}, "rms_norm_eps=0, expected a finite number above 0"),
        ({"initializer_range": False}, "initializer_range=false, expected a finite number of at least 0"),
        ({"tie_word_embeddings": "false"}, 'tie_word_embeddings="false", expected true or false'),
        ({"rope_scaling": "linear"}, 'rope_scaling="linear", expected a JSON object'),
        ({"rope_parameters": {"rope_theta": "1e4"}}, 'rope_parameters.rope_theta="1e4", expected a finite number'),
        ({"hidden_act": ["silu"]}, 'hidden_act=\\["silu"\\], expected a string'),
        ({"model_type": ["llama"]}, 'model config: model_type=\\["llama"\\], expected a string'),
    ],
)
def test_values_are_checked_as_the_file_has_them(update, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_hf({**HF_CASES["llama"], **update})


def test_null_is_an_absent_key():
    cfg = ModelConfig.from_hf({**HF_CASES["gpt2"], "n_inner": None})
    assert cfg.intermediate_size == 4 * cfg.hidden_size
    assert ModelConfig.from_hf({**HF_CASES["llama"], "head_dim": None, "rope_scaling": None}).head_dim == 16


def test_sizes_no_machine_holds_are_refused_before_anything_is_built():
    with pytest.raises(ConfigError, match=f"1,000,000,000,000 layers, more than the {MAX_LAYERS:,}"):
        ModelConfig.from_hf({**HF_CASES["llama"], "num_hidden_layers": 10**12})
    with pytest.raises(ConfigError, match=r"describes [\d,]+ parameters \(hidden size 1,000,000,000, 2 layers"):
        ModelConfig.from_hf({**HF_CASES["llama"], "hidden_size": 10**9, "num_attention_heads": 4})
    # the bound itself: every dense model trained so far is far inside it
    assert (
        ModelConfig.from_hf({**HF_CASES["llama"], "hidden_size": 2**14, "num_hidden_layers": 126}).num_params()
        < MAX_PARAMS
    )


def test_a_path_that_is_not_a_file_or_folder(tmp_path):
    with pytest.raises(ConfigError, match="'/dev/zero' is not a regular file or folder"):
        ModelConfig.from_file("/dev/zero")
    (tmp_path / "config.json").mkdir()
    with pytest.raises(ConfigError, match="is a folder; expected an HF config.json file"):
        ModelConfig.from_file(tmp_path)
