"""Run options, the DeepSpeed config we hand over, the schedule, the data order and FLOPs: pure pieces."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from conftest import HF_CASES

from ligo_ds import ConfigError, ModelConfig
from ligo_ds.data import SampleOrder
from ligo_ds.flops import matmul_params, peak_flops, train_flops_per_token
from ligo_ds.model import Decoder
from ligo_ds.pretrain import lr_at
from ligo_ds.rundir import RunDir
from ligo_ds.train_config import PretrainConfig, ds_config_path, from_dict, load_json, resolve_ds_config

BASE = dict(model="m.json", data="d", out="o", max_steps=10)


def resolve(user, **over):
    kw = dict(where="x.json", micro_batch=4, grad_accum=2, world_size=2, grad_clip=1.0, bf16=False, lr=1e-3,
              weight_decay=0.1, betas=(0.9, 0.95), on_gpu=False)
    return resolve_ds_config(user, **{**kw, **over})


def test_resolved_ds_config_carries_our_settings():
    out = resolve(load_json(ds_config_path("zero3"), "ds"))
    assert (out["train_micro_batch_size_per_gpu"], out["gradient_accumulation_steps"], out["train_batch_size"]) == (4, 2, 16)
    assert out["gradient_clipping"] == 1.0 and out["bf16"]["enabled"] is False
    assert out["optimizer"] == {"type": "AdamW", "params": {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.95],
                                                            "eps": 1e-8, "torch_adam": True}}
    assert resolve({}, grad_clip=0.0)["gradient_clipping"] == 0.0, "0 must reach DeepSpeed (its default is 1.0)"
    assert "torch_adam" not in resolve({}, on_gpu=True)["optimizer"]["params"]


@pytest.mark.parametrize("user, message", [
    ({"train_micro_batch_size_per_gpu": 8}, r"sets train_micro_batch_size_per_gpu=8 but --micro-batch gives 4"),
    ({"train_batch_size": 32}, r"sets train_batch_size=32 but --micro-batch x --grad-accum x world size gives 16"),
    ({"gradient_accumulation_steps": 1}, r"gradient_accumulation_steps=1 but --grad-accum gives 2"),
    ({"optimizer": {"type": "AdamW", "params": {"lr": 0.1}}}, r"optimizer lr=0.1 but --lr gives 0.001"),
    ({"optimizer": {"type": "Lamb"}}, r"optimizer type 'Lamb'"),
    ({"scheduler": {"type": "WarmupLR"}}, r"sets a scheduler \('WarmupLR'\)"),
    ({"fp16": {"enabled": True}}, "enables fp16"),
    ({"bf16": {"enabled": True}}, r"bf16.enabled=True but --dtype gives fp32"),
])
def test_ds_config_conflicts_name_both_values(user, message):
    with pytest.raises(ConfigError, match=message):
        resolve(user)


def test_ds_config_conflicts_name_the_phases_own_flags():
    # The fit phase takes its lr from --operator-lr and, in grow, its micro-batch from --fit-micro-batch.
    flags = {"lr": "--operator-lr", "micro_batch": "--fit-micro-batch"}
    with pytest.raises(ConfigError, match=r"optimizer lr=0.1 but --operator-lr gives 0.001"):
        resolve({"optimizer": {"type": "AdamW", "params": {"lr": 0.1}}}, flags=flags)
    with pytest.raises(ConfigError, match=r"train_micro_batch_size_per_gpu=8 but --fit-micro-batch gives 4"):
        resolve({"train_micro_batch_size_per_gpu": 8}, flags=flags)
    with pytest.raises(ConfigError, match=r"train_batch_size=32 but --fit-micro-batch x --grad-accum x world size"):
        resolve({"train_batch_size": 32}, flags=flags)


def test_agreeing_ds_config_is_accepted():
    out = resolve({"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}})
    assert out["train_batch_size"] == 16


def test_unknown_key_in_our_config():
    with pytest.raises(ConfigError, match=r"unknown key 'learning_rate'.*valid keys: model, data"):
        from_dict(PretrainConfig, {**BASE, "learning_rate": 1e-3}, "run.json")
    with pytest.raises(ConfigError, match=r"unknown key 'micro_bach' \(did you mean 'micro_batch'\?\)"):
        from_dict(PretrainConfig, {**BASE, "micro_bach": 2}, "run.json")


@pytest.mark.parametrize("over, message", [
    ({"max_steps": None}, "exactly one of --max-steps"),
    ({"max_tokens": 100}, "exactly one of --max-steps"),
    ({"micro_batch": 0}, "--micro-batch 0 must be at least 1"),
    ({"min_lr": 1.0}, r"--min-lr \(1.0\) <= --lr"),
    ({"dtype": "fp16"}, "--dtype 'fp16'"),
])
def test_option_validation(over, message):
    with pytest.raises(ConfigError, match=message):
        PretrainConfig(**{**BASE, **over})


def test_missing_ds_config_names_presets(tmp_path):
    with pytest.raises(ConfigError, match="neither a file nor a preset; presets: zero1, zero2, zero3, zero3_offload"):
        ds_config_path("zero4")
    with pytest.raises(ConfigError, match="does not exist"):
        load_json(tmp_path / "absent.json", "ds config")


def test_schedule_warmup_then_cosine_to_floor():
    cfg = PretrainConfig(**{**BASE, "lr": 1.0, "min_lr": 0.1, "warmup_steps": 4})
    lrs = [lr_at(s, 20, cfg) for s in range(21)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and lrs[20] == pytest.approx(0.1)
    assert lrs[12] == pytest.approx(0.55)  # halfway through the cosine
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_total_steps_from_tokens():
    cfg = PretrainConfig(**{**BASE, "max_steps": None, "max_tokens": 10_001, "micro_batch": 2, "seq_len": 100})
    assert cfg.total_steps(world_size=2) == 26  # 400 tokens per step, rounded up


def test_sample_order_is_a_permutation_per_epoch():
    order = SampleOrder(num_tokens=1001, seq_len=10, seed=3)
    assert order.num_windows == 100
    epoch0 = order.starts(0, 100)
    assert sorted(epoch0) == list(range(0, 1000, 10))
    assert not np.array_equal(epoch0, order.starts(100, 100)), "a new permutation each epoch"
    assert np.array_equal(order.starts(37, 5), epoch0[37:42]), "any position can be reached directly"
    assert np.array_equal(SampleOrder(1001, 10, 3).starts(0, 100), epoch0)


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


def test_run_dir_refuses_a_different_run_and_touches_nothing(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.claim({"model": "a", "seq_len": 128}, {"x": 1}) is False
    before = run.config.read_bytes()
    assert run.claim({"model": "a", "seq_len": 128}, {"x": 2}) is True
    with pytest.raises(ConfigError, match=r"belongs to a different run.*seq_len: 128 in the run, 256 now"):
        run.claim({"model": "a", "seq_len": 256}, {})
    assert run.config.read_bytes() == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists, is not empty and holds no ligo_ds run"):
        RunDir(other).claim({}, {})


def test_truncate_metrics(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(6)))
    run.truncate_metrics(3)
    assert [json.loads(x)["step"] for x in run.metrics.read_text().splitlines()] == [0, 1, 2, 3]


def test_grow_fit_micro_batch_applies_to_the_fit_only():
    from ligo_ds.grow import GrowConfig

    grow = dict(source="s", target="t.json", data="d", out="o", max_steps=10, micro_batch=16)
    cfg = GrowConfig(**grow, fit_micro_batch=4)
    assert (cfg.fit_config().micro_batch, cfg.pretrain_config().micro_batch) == (4, 16)
    assert GrowConfig(**grow).fit_config().micro_batch == 16
    with pytest.raises(ConfigError, match=r"--fit-micro-batch 0 must be >= 1"):
        GrowConfig(**grow, fit_micro_batch=0)


def _deepspeed_gencode(monkeypatch, arch_list: str) -> list[str]:
    """What DeepSpeed's own op builder makes of an arch list (its cross-compile path runs on any machine)."""
    from deepspeed.ops.op_builder.fused_adam import FusedAdamBuilder
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", arch_list)
    return FusedAdamBuilder().compute_capability_args()


@pytest.mark.parametrize("user, fixed", [
    ("9.0a", "9.0"),
    ("8.0;9.0a", "8.0;9.0"),
    ("8.0 9.0a+PTX", "8.0;9.0+PTX"),
    ("9.0;9.0a;10.0f", "9.0;10.0"),
])
def test_arch_specific_entries_are_rewritten_so_deepspeed_builds_fused_adam(monkeypatch, user, fixed):
    from ligo_ds import distributed
    with pytest.raises(ValueError, match="invalid literal for int"):  # the bug in DeepSpeed 0.19.8
        _deepspeed_gencode(monkeypatch, user)
    assert distributed.deepspeed_arch_list(user) == fixed
    built = {m for arg in _deepspeed_gencode(monkeypatch, fixed) for m in re.findall(r"sm_(\d+)", arg)}
    assert built == {major + minor for major, minor in re.findall(r"(\d+)\.(\d+)", user)}  # every arch asked for


@pytest.mark.parametrize("plain", ["9.0", "8.0;8.6+PTX", "7.5;8.0;9.0;10.0+PTX"])
def test_parsable_arch_lists_are_left_alone(monkeypatch, capsys, plain):
    from ligo_ds import distributed
    assert distributed.deepspeed_arch_list(plain) == plain
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", plain)
    with distributed.arch_list_for_deepspeed(rank=0, on_cuda=True):
        assert os.environ["TORCH_CUDA_ARCH_LIST"] == plain
    assert capsys.readouterr().out == ""


def test_arch_list_is_fixed_only_while_deepspeed_builds(monkeypatch, capsys):
    from ligo_ds import distributed
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0a")
    with distributed.arch_list_for_deepspeed(rank=0, on_cuda=False):  # CPU: nothing is built for CUDA
        assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0a"
    with distributed.arch_list_for_deepspeed(rank=0, on_cuda=True):
        assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0"
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0a"
    assert "'8.0;9.0a'" in capsys.readouterr().out


def test_arch_list_that_is_no_compute_capability_is_refused_by_name():
    from ligo_ds import distributed
    with pytest.raises(ConfigError, match=r"entry 'Hopper' is not a compute capability like 9\.0"):
        distributed.deepspeed_arch_list("8.0;Hopper")
