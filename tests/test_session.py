"""training/session.py: what a run's identity holds (what may not change when it resumes), derived from the
options declared part of it, and the inputs a run refuses before it starts."""

from __future__ import annotations

import json

import pytest
import torch

from ligo_ds import ConfigError, ModelConfig
from ligo_ds.data.order import DATA_ORDER
from ligo_ds.data.reading import TokenData
from ligo_ds.distributed.launch import Dist
from ligo_ds.growth.fit import FitOptions
from ligo_ds.options import from_values, to_flat
from ligo_ds.training.pretrain import DecoderJob, PretrainOptions
from ligo_ds.training.session import check_data_fits, ds_config_for, run_identity

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


def identity(o: PretrainOptions, cfg, data, world: int, stage: int, dtype: str) -> dict:
    """A pretraining run's whole identity: the training options' and the model's (its job's)."""
    return {**run_identity(o.spec(), data, world, stage, dtype), **DecoderJob(o, cfg, None, {}).identity}


def test_run_identity_keys_and_values(data):
    cfg = ModelConfig.from_hf(TINY)
    ident = identity(opts(micro_batch=2, grad_accum=3, lr=1e-3), cfg, data, world=4, stage=3, dtype="fp32")
    assert sorted(ident) == IDENTITY_KEYS
    assert (ident["global_batch"], ident["lr"], ident["zero_stage"]) == (24, 1e-3, 3)
    again = identity(opts(micro_batch=2, grad_accum=3, lr=1e-3, log_every=1, eval_every=5), cfg, data, 4, 3, "fp32")
    assert again == ident, "cadence is not identity: a resume may log or evaluate more often"
    assert identity(opts(micro_batch=6, lr=1e-3), cfg, data, 4, 3, "fp32") == ident, "the same global batch"
    assert identity(opts(seed=2), cfg, data, 4, 3, "fp32")["seed"] == 2
    assert ident["data_order"] == DATA_ORDER, "a run resumes only with the order it started with"
    branched = identity(opts(branch_from="r/checkpoints/step10"), cfg, data, 4, 3, "fp32")
    assert sorted(branched) == sorted([*IDENTITY_KEYS, "branched_from"]), "an entry only branched runs have"


def test_inputs_that_do_not_fit_the_model(data):
    o = opts(seq_len=128)
    with pytest.raises(ConfigError, match="--seq-len 128 exceeds the model's 64 positions"):
        check_data_fits(ModelConfig.from_hf(TINY), o.model, data, o.data, "--model")
    o = opts(seq_len=32)
    with pytest.raises(ConfigError, match="vocabulary of 320 tokens, larger than the model's vocab_size 256"):
        check_data_fits(ModelConfig.from_hf({**TINY, "vocab_size": 256}), o.model, data, o.data, "--model")


def test_ds_config_for_a_cpu_run_names_the_flags_it_was_given(tmp_path):
    cpu = Dist(rank=0, world_size=2, local_rank=0, local_world_size=2, device=torch.device("cpu"), launcher="single")
    ds, dtype = ds_config_for(opts(micro_batch=4, grad_clip=0.0).spec(), cpu)
    assert dtype == "fp32" and ds["train_batch_size"] == 8 and ds["gradient_clipping"] == 0.0
    assert ds["zero_optimization"]["stage"] == 2, "the default preset"
    (tmp_path / "ds.json").write_text(json.dumps({"optimizer": {"type": "AdamW", "params": {"lr": 0.5}}}))
    with pytest.raises(ConfigError, match="optimizer lr=0.5 but --lr gives 0.0006"):
        ds_config_for(opts(ds_config=str(tmp_path / "ds.json")).spec(), cpu)
    # The fit trains with the operator's lr, and its flag travels with it: the message names --operator-lr.
    fit = from_values(
        FitOptions, {"source": "s", "target": "t.json", "data": "d", "out": "o", "ds_config": str(tmp_path / "ds.json")}
    )
    with pytest.raises(ConfigError, match="optimizer lr=0.5 but --operator-lr gives 0.001"):
        ds_config_for(fit.run_spec(None, None), cpu)
    (tmp_path / "sched.json").write_text(json.dumps({"scheduler": {"type": "WarmupLR"}}))
    fit = from_values(
        FitOptions,
        {"source": "s", "target": "t.json", "data": "d", "out": "o", "ds_config": str(tmp_path / "sched.json")},
    )
    with pytest.raises(ConfigError, match=r"itself \(--operator-lr, --operator-min-lr, --operator-warmup\)"):
        ds_config_for(fit.run_spec(None, None), cpu)


def test_tokenizer_mismatch_is_checked_and_waived_by_its_flag(tmp_path, text_folder):
    from ligo_ds.data.prepare import PrepareOptions, prepare

    from conftest import make_tokenizer

    prepare(PrepareOptions(source=str(text_folder), out=str(tmp_path / "d"), vocab_size=320, val_fraction=0.1))
    data, model = TokenData(tmp_path / "d"), make_tokenizer(tmp_path / "model", "llama2")
    cfg = ModelConfig.from_hf(TINY)
    o = opts(model=str(model), seq_len=32)
    with pytest.raises(ConfigError, match="than the --target model .*model' has.*--allow-tokenizer-mismatch"):
        check_data_fits(cfg, o.model, data, o.data, "--target")
    o = opts(model=str(model), seq_len=32, allow_tokenizer_mismatch=True)
    check_data_fits(cfg, o.model, data, o.data, "--target")


def test_the_record_holds_the_options_as_pretrain_takes_them():
    """config.json's "options" (what `eval` and `export` read back) is pretrain's flat options for a pretrain
    run, and the same keys, with the operator's schedule and decay, for a fit."""
    o = opts(micro_batch=2, lr=1e-3, schedule="wsd", keep_last=2)
    assert o.spec().options() == to_flat(o)
    fit = from_values(FitOptions, {"source": "s", "target": "t.json", "data": "d", "out": "f", "steps": 70})
    record = fit.run_spec(None, None).options()
    assert list(record) == list(to_flat(o))
    assert (record["model"], record["max_steps"], record["lr"], record["weight_decay"]) == ("t.json", 70, 1e-3, 0.0)
