"""session.py: what a run's identity holds (what may not change when it resumes) and the inputs a run
refuses before it starts."""

from __future__ import annotations

import json

import pytest
import torch

from ligo_ds import ConfigError, ModelConfig
from ligo_ds.data.order import DATA_ORDER
from ligo_ds.data.reading import TokenData
from ligo_ds.distributed.launch import Dist
from ligo_ds.options import PretrainOptions, from_values
from ligo_ds.training.session import check_inputs, ds_config_for, run_identity

from conftest import TINY

# The keys of a pretraining run's identity. Run directories written before a change to this list stop
# resuming ("belongs to a different run"), so it changes only on purpose.
IDENTITY_KEYS = [
    "beta1",
    "beta2",
    "data",
    "data_order",
    "dtype",
    "global_batch",
    "grad_clip",
    "lr",
    "min_lr",
    "model",
    "seed",
    "seq_len",
    "total_steps",
    "warmup_steps",
    "weight_decay",
    "zero_stage",
]


@pytest.fixture
def data(tmp_path):
    (tmp_path / "meta.json").write_text(
        json.dumps({"format": 1, "vocab_size": 320, "eos_id": 0, "dtype": "uint16", "train_tokens": 0, "val_tokens": 0})
    )
    return TokenData(tmp_path)


def opts(**over):
    return from_values(PretrainOptions, {"model": "m.json", "data": "d", "out": "o", "max_steps": 1000, **over})


def test_run_identity_keys_and_values(data):
    cfg = ModelConfig.from_hf(TINY)
    identity = run_identity(opts(micro_batch=2, grad_accum=3, lr=1e-3), cfg, data, world=4, stage=3, dtype="fp32")
    assert sorted(identity) == IDENTITY_KEYS
    assert (identity["global_batch"], identity["lr"], identity["zero_stage"]) == (24, 1e-3, 3)
    again = run_identity(opts(micro_batch=2, grad_accum=3, lr=1e-3, log_every=1, eval_every=5), cfg, data, 4, 3, "fp32")
    assert again == identity, "cadence is not identity: a resume may log or evaluate more often"
    assert run_identity(opts(seed=2), cfg, data, 4, 3, "fp32")["seed"] == 2
    assert identity["data_order"] == DATA_ORDER, "a run resumes only with the order it started with"


def test_inputs_that_do_not_fit_the_model(data):
    with pytest.raises(ConfigError, match="--seq-len 128 exceeds the model's 64 positions"):
        check_inputs(opts(seq_len=128), ModelConfig.from_hf(TINY), data)
    with pytest.raises(ConfigError, match="vocabulary of 320 tokens, larger than the model's vocab_size 256"):
        check_inputs(opts(seq_len=32), ModelConfig.from_hf({**TINY, "vocab_size": 256}), data)


def test_ds_config_for_a_cpu_run_names_the_flags_it_was_given(tmp_path):
    cpu = Dist(rank=0, world_size=2, local_rank=0, local_world_size=2, device=torch.device("cpu"), launcher="single")
    ds, dtype = ds_config_for(opts(micro_batch=4, grad_clip=0.0), cpu)
    assert dtype == "fp32" and ds["train_batch_size"] == 8 and ds["gradient_clipping"] == 0.0
    assert ds["zero_optimization"]["stage"] == 2, "the default preset"
    (tmp_path / "ds.json").write_text(json.dumps({"optimizer": {"type": "AdamW", "params": {"lr": 0.5}}}))
    with pytest.raises(ConfigError, match="optimizer lr=0.5 but --operator-lr gives 0.0006"):
        ds_config_for(opts(ds_config=str(tmp_path / "ds.json")), cpu, flags={"lr": "--operator-lr"})


def test_tokenizer_mismatch_is_checked_and_waived_by_its_flag(tmp_path, text_folder):
    from ligo_ds.data.prepare import prepare
    from ligo_ds.options import PrepareOptions

    from conftest import make_tokenizer

    prepare(PrepareOptions(source=str(text_folder), out=str(tmp_path / "d"), vocab_size=320, val_fraction=0.1))
    data, model = TokenData(tmp_path / "d"), make_tokenizer(tmp_path / "model", "llama2")
    cfg = ModelConfig.from_hf(TINY)
    with pytest.raises(ConfigError, match="than the --target model .*model' has"):
        check_inputs(opts(model=str(model), seq_len=32), cfg, data, "--target")
    check_inputs(opts(model=str(model), seq_len=32, allow_tokenizer_mismatch=True), cfg, data, "--target")
