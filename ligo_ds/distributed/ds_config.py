"""The DeepSpeed side of a run: its options (the DeepSpeed and Optimizer blocks: DeepSpeed builds the AdamW),
and the config it trains with: the user's JSON (a file, or a preset shipped in the package) plus the values
ligo_ds owns, with every conflict refused.

Batch sizes, the optimizer, the learning-rate schedule and clipping are ligo_ds options; a DeepSpeed JSON
that also sets one of them must agree with it, or it is refused with both values named. DeepSpeed silently
drops unknown keys and keeps defaults we do not want (clipping at 1.0), so every value of ours is written
explicitly. DeepSpeed is imported only to check a config against its schema (check_schema), when a run
starts: `plan` and the other commands that never train read these presets without it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ConfigError
from ..options import Block, above, at_least, load_json, option, unit_interval

# The presets live in the top-level ds_configs/ folder, which the package build maps to ligo_ds.ds_configs
# (pyproject.toml): a wheel or an editable install finds them the same way.
PRESETS = "ligo_ds.ds_configs"
DTYPES = ("auto", "bf16", "fp32")


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in resources.files(PRESETS).iterdir() if p.name.endswith(".json"))


@dataclass(frozen=True, kw_only=True)
class DeepSpeed(Block):
    """The DeepSpeed side of a run: its JSON knobs, the training dtype, and the device's peak for MFU."""

    ds_config: str = option(
        "zero2",
        "DeepSpeed JSON, or a preset: zero1, zero2, zero3, zero3_offload",
        metavar="JSON_OR_PRESET",
        identity="zero_stage",  # what the JSON decides that a resume must keep
    )
    dtype: str = option("auto", "training dtype; auto is bf16 on GPU, fp32 on CPU", choices=DTYPES, identity="dtype")
    peak_tflops: float | None = option(
        None, "device peak for MFU when it is not in the built-in table", check=above(0), identity=False
    )

    def dtype_on(self, device_type: str) -> str:
        """The training dtype on a device ("cuda" or "cpu"): auto is bf16 on a GPU, fp32 on a CPU."""
        return self.dtype if self.dtype != "auto" else ("bf16" if device_type == "cuda" else "fp32")

    def path(self) -> Path:
        return ds_config_path(self.ds_config, self.flag("ds_config"))

    def user_config(self) -> dict:
        """The DeepSpeed JSON as the user gave it (a preset's, when named)."""
        return load_json(self.path(), "ds config")


@dataclass(frozen=True, kw_only=True)
class Optimizer(Block):
    """AdamW's settings besides the learning rate."""

    weight_decay: float = option(0.1, "AdamW decay on matrices, never on norms or biases", check=at_least(0))
    beta1: float = option(0.9, "AdamW beta1", check=unit_interval)
    beta2: float = option(0.95, "AdamW beta2", check=unit_interval)


def ds_config_path(name_or_path: str, what: str) -> Path:
    """A preset name (zero1, zero2, zero3, zero3_offload) or a path to a DeepSpeed JSON; `what` names where
    the name came from (its flag)."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        return path
    preset = resources.files(PRESETS) / f"{name_or_path}.json"
    if not preset.is_file():
        raise ConfigError(
            f"{what} {name_or_path!r} is neither a file nor a preset; presets: {', '.join(preset_names())}"
        )
    return Path(str(preset))


def zero_stage(ds_config: dict) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


ZERO_STAGES = (0, 1, 2, 3)


def validate_with_deepspeed(ds_config: dict, where: str) -> None:
    """The whole resolved config as DeepSpeed's own config class reads it (every section it models), so that
    what it would refuse when the engine is built is refused in one line before the run directory records
    anything. The batch size is left to it to derive (micro-batch x accumulation x its world size), which
    is what ours is."""
    from deepspeed.runtime.config import DeepSpeedConfig
    from pydantic import ValidationError

    try:
        DeepSpeedConfig({k: v for k, v in ds_config.items() if k != "train_batch_size"})
    except ValidationError as e:
        first = e.errors()[0]
        at = ".".join(map(str, first["loc"]))
        raise ConfigError(
            f"ds config {where}: DeepSpeed's {e.title} refuses {at}={first.get('input')!r}: {first['msg']}"
        ) from None
    except (AssertionError, ValueError, TypeError, KeyError) as e:
        raise ConfigError(
            f"ds config {where}: DeepSpeed refuses it: {str(e).splitlines()[0] if str(e) else e!r}"
        ) from None


def check_schema(ds_config: dict, where: str) -> None:
    """The config through DeepSpeed's own schema for what it validates (its ZeRO section), so that a bad
    value is refused in one line before the run directory records it, not in a traceback from the engine.
    The one place outside engine.py that imports deepspeed, and only when a run starts."""
    zero = ds_config.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise ConfigError(f"ds config {where}: zero_optimization is {zero!r}, expected an object")
    stage = zero.get("stage", 0)
    if isinstance(stage, bool) or stage not in ZERO_STAGES:
        stages = ", ".join(map(str, ZERO_STAGES))
        raise ConfigError(f"ds config {where}: zero_optimization.stage is {stage!r}, expected one of {stages}")
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from pydantic import ValidationError

    try:
        DeepSpeedZeroConfig(**zero)
    except ValidationError as e:
        first = e.errors()[0]
        at = ".".join(map(str, ("zero_optimization", *first["loc"])))
        raise ConfigError(
            f"ds config {where}: {at} is {first.get('input')!r}: {first['msg']} (DeepSpeed's schema)"
        ) from None


_OURS = "set it on the ligo_ds command line instead"
# The flags behind the values a DeepSpeed JSON must agree with, as the run's command spells them (the fit's
# lr is --operator-lr): `flags` of resolve_ds_config, built from the blocks that hold the values.
FLAG_KEYS = ("micro_batch", "grad_accum", "grad_clip", "lr", "min_lr", "warmup_steps", "weight_decay", "betas")
FLAG_KEYS += ("dtype", "max_bad_steps")


def resolve_ds_config(
    user: dict,
    *,
    where: str,
    micro_batch: int,
    grad_accum: int,
    world_size: int,
    grad_clip: float,
    bf16: bool,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    on_gpu: bool,
    flags: Mapping[str, str],
) -> dict:
    """The exact dict DeepSpeed receives: the user's knobs plus ours, with every conflict refused, naming
    the flag that set ours (`flags`: FLAG_KEYS -> flag)."""
    assert set(FLAG_KEYS) <= set(flags), sorted(set(FLAG_KEYS) - set(flags))
    derived = {
        "train_micro_batch_size_per_gpu": (micro_batch, flags["micro_batch"]),
        "gradient_accumulation_steps": (grad_accum, flags["grad_accum"]),
        "train_batch_size": (
            micro_batch * grad_accum * world_size,
            f"{flags['micro_batch']} x {flags['grad_accum']} x world size",
        ),
        # DeepSpeed 0.19.8 defaults to clipping at 1.0 when this is absent: always set it explicitly.
        "gradient_clipping": (grad_clip, flags["grad_clip"]),
    }
    for key, (ours, name) in derived.items():
        if key in user and user[key] != ours:
            raise ConfigError(f"ds config {where} sets {key}={user[key]!r} but {name} gives {ours!r}; {_OURS}")
    ours_opt = {"lr": lr, "weight_decay": weight_decay, "betas": list(betas)}
    _refuse_sections(user, where, bf16, ours_opt, flags)
    out = copy.deepcopy(user)
    out.update({key: ours for key, (ours, _) in derived.items()})
    out["bf16"] = {**user.get("bf16", {}), "enabled": bf16}
    if bf16:
        out["bf16"]["check_grad_overflow"] = True
    offload = out.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none") != "none"
    params = {**ours_opt, "eps": 1e-8}
    if not on_gpu:
        # On the CPU: torch's AdamW instead of DeepSpeed's JIT-built kernels (a ~45 s compile per machine).
        params["torch_adam"] = True
        if offload:
            out["zero_force_ds_cpu_optimizer"] = False
    out["optimizer"] = {"type": "AdamW", "params": params}
    out.setdefault("steps_per_print", 2**31 - 1)  # we log ourselves
    out.setdefault("wall_clock_breakdown", False)
    return out


def _refuse_sections(user: dict, where: str, bf16: bool, ours_opt: dict, flags: Mapping[str, str]) -> None:
    """Refuse the DeepSpeed JSON's sections that would take over what ligo_ds does itself."""
    if "scheduler" in user:
        schedule = ", ".join(flags[k] for k in ("lr", "min_lr", "warmup_steps"))
        raise ConfigError(
            f"ds config {where} sets a scheduler ({user['scheduler'].get('type')!r}); ligo_ds "
            f"schedules the learning rate itself ({schedule}): remove it"
        )
    if user.get("fp16", {}).get("enabled"):
        raise ConfigError(f"ds config {where} enables fp16; ligo_ds trains in bf16 or fp32 ({flags['dtype']})")
    if "enabled" in user.get("bf16", {}) and bool(user["bf16"]["enabled"]) != bf16:
        raise ConfigError(
            f"ds config {where} sets bf16.enabled={user['bf16']['enabled']} but {flags['dtype']} gives "
            f"{'bf16' if bf16 else 'fp32'}"
        )
    if "optimizer" in user:
        opt = user["optimizer"]
        if opt.get("type", "").lower() not in ("adam", "adamw"):
            raise ConfigError(
                f"ds config {where} sets optimizer type {opt.get('type')!r}; ligo_ds trains with "
                "AdamW: remove the optimizer section"
            )
        for key, value in opt.get("params", {}).items():
            if key in ours_opt and value != ours_opt[key]:
                ours = f"{flags[key]} gives {ours_opt[key]!r}"
                raise ConfigError(f"ds config {where} sets optimizer {key}={value!r} but {ours}; {_OURS}")
    # The trainer's non-finite guard (training/trainer.py) relies on DeepSpeed skipping a step whose gradient
    # norm is NaN or infinite, which every ZeRO stage does in 0.19.8 as long as it computes the norm (and, in
    # bf16, checks for overflow).
    for section, key in (("zero_optimization", "compute_grad_norm"), ("bf16", "check_grad_overflow")):
        if user.get(section, {}).get(key) is False:
            raise ConfigError(
                f"ds config {where} sets {section}.{key}=false; ligo_ds needs it to skip steps with a "
                f"non-finite gradient norm (see {flags['max_bad_steps']}): remove it"
            )


# ---- the fit's ZeRO-3 sizes ------------------------------------------------------------------------

# The ZeRO-3 knobs that size what a rank holds beyond its own partition, with DeepSpeed 0.19.8's defaults
# (deepspeed/runtime/zero/config.py), none of which depends on the number of ranks:
#   reduce_bucket_size           the gradient bucket, allocated whole with contiguous_gradients
#   stage3_prefetch_bucket_size  parameters gathered ahead of the module that needs them
#   stage3_max_live_parameters   gathered parameters beyond which nothing more is prefetched
#   stage3_max_reuse_distance    a module whose parameters are read again within this many elements keeps
#                                them gathered (the fit reads every source layer for every target block)
#   sub_group_size               optimizer sub-groups; DeepSpeed zero-fills a gradient buffer the size of the
#                                largest sub-group's whole (unpartitioned) parameters, and the optimizer's
#                                step works on one sub-group at a time
ZERO3_SIZE_DEFAULTS = {
    "reduce_bucket_size": 500_000_000,
    "stage3_prefetch_bucket_size": 50_000_000,
    "stage3_max_live_parameters": 1_000_000_000,
    "stage3_max_reuse_distance": 1_000_000_000,
    "sub_group_size": 1_000_000_000,
}
# Optimizer sub-groups of at least this many elements per rank: each is a separate optimizer step, and on
# GPUs thousands of tiny steps would cost more in launches than their buffers save.
MIN_SUB_GROUP = 1_000_000


def fit_zero3_bounds(block_params: int, world_size: int) -> dict[str, int]:
    """Upper bounds for the fit's ZeRO-3 size knobs: each buffer at most one target block of `block_params`
    parameters, so that what a rank holds beyond its partition does not grow with the model's depth, and
    the optimizer's sub-groups about one block in all (a rank's share of it, at least MIN_SUB_GROUP)."""
    b = block_params
    return {
        "reduce_bucket_size": b,
        "stage3_prefetch_bucket_size": b,
        "stage3_max_live_parameters": 2 * b,  # the module running plus one block prefetched
        "stage3_max_reuse_distance": b,
        "sub_group_size": max(-(-b // world_size), MIN_SUB_GROUP),
    }


def bound_zero3_sizes(ds_config: dict, bounds: dict[str, int]) -> tuple[dict, dict[str, tuple[int, int]]]:
    """(ds_config with each knob of `bounds` at most its bound, {knob: (was, now)} for the knobs the config
    set above it). A ZeRO-1/2 config is returned as it is."""
    if zero_stage(ds_config) != 3:
        return ds_config, {}
    out = copy.deepcopy(ds_config)
    zero = out["zero_optimization"]
    lowered = {}
    for key, bound in bounds.items():
        was = int(zero.get(key, ZERO3_SIZE_DEFAULTS[key]))
        zero[key] = min(was, bound)
        if key in ds_config["zero_optimization"] and was > bound:
            lowered[key] = (was, bound)
    return out, lowered
