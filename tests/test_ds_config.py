"""distributed/ds_config.py: the DeepSpeed config a run hands over, and every conflict with the user's JSON refused."""

from __future__ import annotations

import pytest

from ligo_ds import ConfigError
from ligo_ds.distributed.ds_config import FLAG_KEYS, ds_config_path, preset_names, resolve_ds_config, zero_stage
from ligo_ds.options import flag_name, load_json

# The flags pretrain gives its values (session.ds_config_for builds them from the blocks that hold the values).
FLAGS = {k: flag_name(k) for k in FLAG_KEYS} | {"betas": "--beta1/--beta2"}


def resolve(user, **over):
    kw = dict(
        where="x.json",
        micro_batch=4,
        grad_accum=2,
        world_size=2,
        grad_clip=1.0,
        bf16=False,
        lr=1e-3,
        weight_decay=0.1,
        betas=(0.9, 0.95),
        on_gpu=False,
        flags=FLAGS,
    )
    return resolve_ds_config(user, **{**kw, **over})


def test_resolved_ds_config_carries_our_settings():
    out = resolve(load_json(ds_config_path("zero3", "preset"), "ds"))
    assert (out["train_micro_batch_size_per_gpu"], out["gradient_accumulation_steps"], out["train_batch_size"]) == (
        4,
        2,
        16,
    )
    assert out["gradient_clipping"] == 1.0 and out["bf16"]["enabled"] is False
    assert out["optimizer"] == {
        "type": "AdamW",
        "params": {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8, "torch_adam": True},
    }
    assert resolve({}, grad_clip=0.0)["gradient_clipping"] == 0.0, "0 must reach DeepSpeed (its default is 1.0)"
    assert "torch_adam" not in resolve({}, on_gpu=True)["optimizer"]["params"]


@pytest.mark.parametrize(
    "user, message",
    [
        ({"train_micro_batch_size_per_gpu": 8}, r"sets train_micro_batch_size_per_gpu=8 but --micro-batch gives 4"),
        ({"train_batch_size": 32}, r"sets train_batch_size=32 but --micro-batch x --grad-accum x world size gives 16"),
        ({"gradient_accumulation_steps": 1}, r"gradient_accumulation_steps=1 but --grad-accum gives 2"),
        ({"optimizer": {"type": "AdamW", "params": {"lr": 0.1}}}, r"optimizer lr=0.1 but --lr gives 0.001"),
        ({"optimizer": {"type": "Lamb"}}, r"optimizer type 'Lamb'"),
        ({"scheduler": {"type": "WarmupLR"}}, r"sets a scheduler \('WarmupLR'\)"),
        ({"fp16": {"enabled": True}}, "enables fp16"),
        ({"bf16": {"enabled": True}}, r"bf16.enabled=True but --dtype gives fp32"),
        # what the trainer's non-finite guard relies on DeepSpeed for (trainer.py)
        ({"zero_optimization": {"stage": 2, "compute_grad_norm": False}}, r"zero_optimization.compute_grad_norm=false"),
        ({"bf16": {"check_grad_overflow": False}}, r"sets bf16.check_grad_overflow=false; .*--max-bad-steps"),
    ],
)
def test_ds_config_conflicts_name_both_values(user, message):
    with pytest.raises(ConfigError, match=message):
        resolve(user)


def test_ds_config_conflicts_name_the_phases_own_flags():
    # The fit phase takes its lr from --operator-lr and, in grow, its micro-batch from --fit-micro-batch.
    flags = {**FLAGS, "lr": "--operator-lr", "micro_batch": "--fit-micro-batch"}
    with pytest.raises(ConfigError, match=r"optimizer lr=0.1 but --operator-lr gives 0.001"):
        resolve({"optimizer": {"type": "AdamW", "params": {"lr": 0.1}}}, flags=flags)
    with pytest.raises(ConfigError, match=r"train_micro_batch_size_per_gpu=8 but --fit-micro-batch gives 4"):
        resolve({"train_micro_batch_size_per_gpu": 8}, flags=flags)
    with pytest.raises(ConfigError, match=r"train_batch_size=32 but --fit-micro-batch x --grad-accum x world size"):
        resolve({"train_batch_size": 32}, flags=flags)


def test_a_bf16_run_has_deepspeed_skip_non_finite_steps():
    assert resolve({}, bf16=True)["bf16"] == {"enabled": True, "check_grad_overflow": True}
    assert resolve({}, bf16=False)["bf16"] == {"enabled": False}


def test_agreeing_ds_config_is_accepted():
    out = resolve({"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}})
    assert out["train_batch_size"] == 16


def test_missing_ds_config_names_presets(tmp_path):
    with pytest.raises(ConfigError, match="neither a file nor a preset; presets: zero1, zero2, zero3, zero3_offload"):
        ds_config_path("zero4", "--ds-config")
    with pytest.raises(ConfigError, match="does not exist"):
        load_json(tmp_path / "absent.json", "ds config")


def test_presets_ship_in_the_package():
    """The presets are package data (ligo_ds.ds_configs), not files beside a source checkout; the wheel test
    (test_packaging.py) runs one from an installed wheel."""
    assert preset_names() == ["zero1", "zero2", "zero3", "zero3_offload"]
    for name in preset_names():
        path = ds_config_path(name, "preset")
        assert path.parent.name == "ds_configs" and zero_stage(load_json(path, "preset")) == int(name[4])
    assert ds_config_path("my.json", "--ds-config").name == "my.json", "a path is taken as given"


def test_fit_bounds_zero3_buffers_to_one_block():
    from ligo_ds.distributed.ds_config import MIN_SUB_GROUP, bound_zero3_sizes, fit_zero3_bounds

    bounds = fit_zero3_bounds(8_000_000, 4)
    assert bounds["reduce_bucket_size"] == bounds["stage3_max_reuse_distance"] == 8_000_000
    assert bounds["sub_group_size"] == 2_000_000 and fit_zero3_bounds(8_000_000, 64)["sub_group_size"] == MIN_SUB_GROUP
    preset = load_json(ds_config_path("zero3", "preset"), "ds")
    out, lowered = bound_zero3_sizes(preset, bounds)
    zero = out["zero_optimization"]
    assert zero["reduce_bucket_size"] == 8_000_000 and zero["sub_group_size"] == 2_000_000
    assert lowered["reduce_bucket_size"] == (50_000_000, 8_000_000) and "sub_group_size" not in lowered
    assert preset["zero_optimization"]["reduce_bucket_size"] == 50_000_000, "the user's dict is left as it was"
    small = {"zero_optimization": {"stage": 3, "reduce_bucket_size": 1000}}
    assert bound_zero3_sizes(small, bounds)[0]["zero_optimization"]["reduce_bucket_size"] == 1000
    assert bound_zero3_sizes({"zero_optimization": {"stage": 2}}, bounds) == ({"zero_optimization": {"stage": 2}}, {})


def test_every_preset_passes_deepspeeds_own_config_class_and_a_bad_section_does_not():
    """What a run hands DeepSpeed goes through DeepSpeed's config class before the run directory records it:
    the shipped presets pass, whatever the dtype and device; a value its schema refuses is one line."""
    from ligo_ds.distributed.ds_config import validate_with_deepspeed

    for name in preset_names():
        for bf16 in (False, True):
            user = load_json(ds_config_path(name, "x"), "ds config")
            validate_with_deepspeed(resolve(user, bf16=bf16, on_gpu=bf16), name)
    bad = resolve({"zero_optimization": {"stage": 2}, "comms_logger": {"enabled": "maybe"}})
    with pytest.raises(ConfigError, match="ds config x.json: DeepSpeed's .* refuses enabled='maybe'"):
        validate_with_deepspeed(bad, "x.json")
