"""ModelConfig parsing: every family, old and new config.json spellings, and clear errors."""

from __future__ import annotations

import json

import pytest
from conftest import HF_CASES

from ligo_ds import ConfigError, ModelConfig, load_model
from ligo_ds.config import SUPPORTED_MODEL_TYPES


def test_gpt2_fields():
    cfg = ModelConfig.from_hf(HF_CASES["gpt2"])
    assert (cfg.family, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.head_dim) == ("gpt2", 2, 64, 4, 16)
    assert cfg.intermediate_size == 256 and cfg.tie_embeddings and cfg.positions == "learned"
    assert cfg.activation == "gelu_tanh"


def test_rope_theta_old_and_new_spelling():
    base = dict(HF_CASES["llama"])
    assert ModelConfig.from_hf({**base, "rope_theta": 5e5}).rope_theta == 5e5
    assert ModelConfig.from_hf({**base, "rope_parameters": {"rope_type": "default", "rope_theta": 3e4}}).rope_theta == 3e4
    assert ModelConfig.from_hf(base).rope_theta == 10000.0


def test_qwen2_has_qkv_bias_only():
    cfg = ModelConfig.from_hf(HF_CASES["qwen2_gqa"])
    assert cfg.qkv_bias and not cfg.out_bias and not cfg.mlp_bias and cfg.num_kv_heads == 2


def test_explicit_head_dim_is_honoured():
    cfg = ModelConfig.from_hf(HF_CASES["mistral_window_headdim"])
    assert cfg.head_dim == 32 and cfg.q_size == 128 and cfg.sliding_window == 8


@pytest.mark.parametrize("update, message", [
    ({"model_type": "bert"}, "unsupported model_type 'bert'; supported: gpt2, llama, mistral, qwen2"),
    ({"hidden_size": 66}, "hidden size 66 is not divisible by the number of attention heads 4"),
    ({"num_key_value_heads": 3}, r"num_attention_heads \(4\) is not divisible by num_key_value_heads \(3\)"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn' is not supported"),
    ({"hidden_act": "mish"}, "hidden_act='mish' is not supported"),
    ({"num_hidden_layers": 0}, "num_layers=0, expected a positive integer"),
])
def test_bad_llama_config(update, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_hf({**HF_CASES["llama"], **update})


def test_bad_gpt2_heads():
    with pytest.raises(ConfigError, match="hidden size 64 is not divisible by the number of attention heads 5"):
        ModelConfig.from_hf({**HF_CASES["gpt2"], "n_head": 5})


def test_supported_list_is_the_table():
    assert SUPPORTED_MODEL_TYPES == ("gpt2", "llama", "mistral", "qwen2")


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ModelConfig.from_file(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        ModelConfig.from_file(tmp_path / "bad.json")


def test_checkpoint_shape_mismatch_names_tensor_and_shapes(hf_checkpoint):
    _, directory = hf_checkpoint("llama")
    config = json.loads((directory / "config.json").read_text())
    config["intermediate_size"] = 128
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"'model.layers.0.mlp.gate_proj.weight' has shape \(96, 64\), "
                                          r"but the config expects \(128, 64\)"):
        load_model(directory)


def test_checkpoint_with_more_layers_than_config(hf_checkpoint):
    _, directory = hf_checkpoint("gpt2")
    config = json.loads((directory / "config.json").read_text())
    config["n_layer"] = 1
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"tensor\(s\) its config does not describe: transformer.h.1"):
        load_model(directory)


def test_checkpoint_missing_tensor(hf_checkpoint):
    _, directory = hf_checkpoint("gpt2")
    config = json.loads((directory / "config.json").read_text())
    config["n_layer"] = 3
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="lacks tensor 'transformer.h.2.ln_1.weight'"):
        load_model(directory)


def test_truncated_safetensors(hf_checkpoint):
    _, directory = hf_checkpoint("gpt2")
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ConfigError, match="model.safetensors"):
        load_model(directory)


def test_directory_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(HF_CASES["gpt2"]))
    with pytest.raises(ConfigError, match="no weights in .*pass a config.json file for a random init"):
        load_model(tmp_path)
