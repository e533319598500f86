"""Shared fixtures: tiny Hugging Face models of every supported family, made here with random weights."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# One row per supported layout: family switches, GQA, tied/untied, biases, rope_theta, explicit head_dim,
# sliding window. Shapes are tiny so every test runs in milliseconds.
HF_CASES: dict[str, dict] = {
    "gpt2": dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, vocab_size=96, n_positions=64),
    "gpt2_untied_gelu": dict(model_type="gpt2", n_embd=48, n_layer=3, n_head=3, n_inner=80, vocab_size=96,
                             n_positions=64, activation_function="gelu", tie_word_embeddings=False),
    "llama": dict(model_type="llama", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, vocab_size=96, max_position_embeddings=64),
    "llama_gqa_tied": dict(model_type="llama", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, vocab_size=96, max_position_embeddings=64,
                           tie_word_embeddings=True,
                           rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
    "llama_bias": dict(model_type="llama", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=1, vocab_size=96, max_position_embeddings=64,
                       attention_bias=True, mlp_bias=True,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000.0}),
    "qwen2_gqa": dict(model_type="qwen2", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=96, max_position_embeddings=64,
                      tie_word_embeddings=True),
    "mistral_window_headdim": dict(model_type="mistral", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=96,
                                   max_position_embeddings=64, sliding_window=8),
}


def make_hf_model(case: str | dict, seed: int = 0, std: float = 0.2):
    """A transformers causal LM of the given tiny shape, every weight (biases and norms too) random."""
    import transformers

    spec = dict(HF_CASES[case]) if isinstance(case, str) else dict(case)
    config = transformers.AutoConfig.for_model(**spec)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    with torch.no_grad():
        for p in model.parameters():  # HF init leaves biases at 0 and norms at 1: they would test nothing
            p.normal_(0.0, std)
    return model.eval()


def make_inputs(root, line: str, *, docs: int = 60, repeat: int = 6, small: dict | None = None,
                large: dict | None = None, seed: int = 3):
    """A run's inputs under `root`: a corpus of `docs` files (`line` formatted with the index, repeated),
    its prepared DATA_DIR (vocabulary 320), and optionally a random small HF model and a large config."""
    import json

    from ligo_ds.data import PrepareOptions, prepare

    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    for i in range(docs):
        (corpus / f"{i:03d}.txt").write_text(line.format(i=i, m=i % 5) * repeat)
    prepare(PrepareOptions(source=str(corpus), out=str(root / "data"), vocab_size=320, val_fraction=0.1))
    if small is not None:
        make_hf_model(small, seed=seed, std=0.05).save_pretrained(root / "small")
    if large is not None:
        (root / "large.json").write_text(json.dumps(large))
    return root


@pytest.fixture
def hf_checkpoint(tmp_path):
    """Factory: save a random tiny HF model of `case` and return (model, directory)."""

    def make(case: str | dict, seed: int = 0):
        model = make_hf_model(case, seed)
        directory = tmp_path / f"hf_{case if isinstance(case, str) else 'custom'}_{seed}"
        model.save_pretrained(directory)
        return model, directory

    return make


@pytest.fixture(autouse=True)
def _restore_torch_state():
    """Tests must not leak global torch state into each other."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)
