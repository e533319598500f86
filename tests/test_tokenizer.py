"""model/tokenizer.py: the fingerprint that tells vocabularies apart, the data/model check, and the files an
export carries (loaded back by AutoTokenizer and GenerationConfig)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, GenerationConfig

from ligo_ds import ConfigError
from ligo_ds.data.prepare import PrepareOptions, prepare
from ligo_ds.data.reading import TokenData
from ligo_ds.model import tokenizer
from ligo_ds.model.hf_load import load_model
from ligo_ds.model.hf_save import save_model, write_checkpoint
from ligo_ds.options import derive, from_values
from ligo_ds.training.pretrain import PretrainOptions
from ligo_ds.training.session import check_tokenizer

from conftest import make_hf_model, make_tokenizer


@pytest.fixture
def llama2_data(tmp_path, text_folder):
    model = make_tokenizer(tmp_path / "model", "llama2")
    prepare(PrepareOptions(source=str(text_folder), out=str(tmp_path / "data"), tokenizer=str(model), val_fraction=0.1))
    return model, tmp_path / "data"


def test_fingerprint_follows_the_vocabulary_not_the_files(tmp_path, llama2_data):
    model, data = llama2_data
    fp = tokenizer.fingerprint(tokenizer.load(model))
    assert fp == tokenizer.fingerprint(tokenizer.load(data))  # re-saved into DATA_DIR, same ids
    tok = tokenizer.load(model)
    tok.eos_token, tok.pad_token = "<s>", "</s>"  # special-token roles change no id
    assert tokenizer.fingerprint(tok) == fp
    assert tokenizer.fingerprint(tokenizer.load(make_tokenizer(tmp_path / "other", "llama3"))) != fp
    assert tokenizer.fingerprint(tokenizer.load(make_tokenizer(tmp_path / "bigger", "llama2", 330))) != fp


def test_data_from_another_tokenizer_is_refused_unless_allowed(tmp_path, llama2_data):
    model, data = llama2_data
    meta = json.loads((data / "meta.json").read_text())
    token_data = TokenData(data)
    strict = from_values(PretrainOptions, {"model": "m", "data": str(data), "out": "o", "max_steps": 100}).data
    check_tokenizer(token_data, strict, model, "--model")  # its own: fine
    other = make_tokenizer(tmp_path / "other", "llama3")
    assert tokenizer.mismatch(data, meta, other, "--source") == (
        meta["tokenizer_fingerprint"],
        tokenizer.fingerprint(tokenizer.load(other)),
    )
    with pytest.raises(ConfigError, match=r"tokenized with another tokenizer \(fingerprint sha256:\w+\) than the "):
        check_tokenizer(token_data, strict, other, "--source")
    with pytest.raises(ConfigError, match="prepare the data with --tokenizer .*, or pass --allow-tokenizer-mismatch"):
        check_tokenizer(token_data, strict, other, "--source")
    check_tokenizer(token_data, derive(strict, allow_tokenizer_mismatch=True), other, "--source")
    (tmp_path / "bare").mkdir()  # a model directory without a tokenizer, or a config.json: nothing to compare
    check_tokenizer(token_data, strict, tmp_path / "bare", "--model")
    check_tokenizer(token_data, strict, tmp_path / "bare" / "config.json", "--model")


def test_data_dirs_from_before_the_fingerprint_get_it_computed(llama2_data):
    model, data = llama2_data
    meta = json.loads((data / "meta.json").read_text())
    del meta["tokenizer_fingerprint"]
    assert tokenizer.data_fingerprint(data, meta) == tokenizer.fingerprint(tokenizer.load(model))


def _tiny_model(tmp_path, vocab_size: int):
    config = {**make_hf_model("llama_gqa_tied").config.to_dict(), "vocab_size": vocab_size}
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    return load_model(tmp_path / "config.json")


def test_checkpoint_carries_tokenizer_and_generation_config(tmp_path, llama2_data):
    _, data = llama2_data
    meta = json.loads((data / "meta.json").read_text())
    model = _tiny_model(tmp_path, meta["vocab_size"])
    extra = tokenizer.export_files(data, meta["eos_id"])
    out = write_checkpoint(model.cfg, model.state_dict().items(), tmp_path / "hf", extra=extra)
    tok = AutoTokenizer.from_pretrained(out)
    assert (tok.eos_token, tok.bos_token, tok.unk_token) == ("</s>", "<s>", "<unk>")
    generation = GenerationConfig.from_pretrained(out)
    assert generation.eos_token_id == meta["eos_id"] == tok.eos_token_id
    assert generation.bos_token_id == tok.bos_token_id
    config = json.loads((out / "config.json").read_text())
    assert (config["eos_token_id"], config["bos_token_id"]) == (tok.eos_token_id, tok.bos_token_id)
    assert load_model(out).cfg == model.cfg


def test_export_names_the_datas_separator_whatever_the_tokenizer_said(tmp_path, text_folder):
    """prepare --eos-token <pad> on a tokenizer without eos: exports must say <pad> ends a document."""
    model_dir = make_tokenizer(tmp_path / "model", "no_eos")
    opts = PrepareOptions(source=str(text_folder), out=str(tmp_path / "d"), tokenizer=str(model_dir), eos_token="<pad>")
    meta = prepare(opts)
    model = _tiny_model(tmp_path, meta["vocab_size"])
    extra = tokenizer.export_files(tmp_path / "d", meta["eos_id"])
    out = write_checkpoint(model.cfg, model.state_dict().items(), tmp_path / "hf", extra=extra)
    assert AutoTokenizer.from_pretrained(out).eos_token == "<pad>"
    assert GenerationConfig.from_pretrained(out).eos_token_id == meta["eos_id"] == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["eos_token_id"], config["bos_token_id"], config["pad_token_id"]) == (0, None, None)


def test_missing_tokenizer_is_refused_and_weights_alone_have_none(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="--tokenizer .*empty' holds no tokenizer \\(expected one of tokenizer.json"):
        tokenizer.load(tmp_path / "empty", "--tokenizer")
    save_model(_tiny_model(tmp_path, 96), tmp_path / "weights_only")
    assert not tokenizer.has_tokenizer(tmp_path / "weights_only")


def test_a_tokenizer_that_needs_its_own_code_is_refused_in_one_line(tmp_path):
    tok = make_tokenizer(tmp_path / "custom", "gpt2")
    config = json.loads((tok / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "CustomTokenizer"  # no class of transformers: only its own code loads it
    config["auto_map"] = {"AutoTokenizer": ["tokenization_custom.CustomTokenizer", None]}
    (tok / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(
        ConfigError, match="custom' needs its own Python code to load \\(auto_map in tokenizer_config"
    ) as e:
        tokenizer.load(tok, "--tokenizer")
    assert "\n" not in str(e.value) and "trust_remote_code" not in str(e.value)
