"""Run options: typed, frozen, validated once; and the DeepSpeed config derived from them.

Batch sizes, the optimizer, the learning-rate schedule and clipping have one home: these dataclasses
(set from the CLI or a JSON file). `ds_configs/*.json` hold only DeepSpeed knobs (ZeRO stage,
offload, bucket sizes); a ds config that also sets one of ours must agree with it, or it is refused
with both values named. Unknown keys in our own config files are errors (DeepSpeed silently drops
unknown keys, so a typo there would go unnoticed; ours do not).
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

DS_CONFIG_DIR = Path(__file__).resolve().parent.parent / "ds_configs"


@dataclass(frozen=True)
class PretrainConfig:
    model: str  # HF config.json (train from scratch) or HF checkpoint directory (continue it)
    data: str  # a DATA_DIR written by `ligo-ds prepare`
    out: str  # RUN_DIR; rerunning on an existing RUN_DIR resumes it
    ds_config: str = "zero2"  # a preset name in ds_configs/ or a path to a DeepSpeed JSON
    max_steps: int | None = None  # optimizer steps; exactly one of max_steps / max_tokens
    max_tokens: int | None = None
    micro_batch: int = 8  # sequences per rank per forward
    grad_accum: int = 1
    seq_len: int = 256
    lr: float = 6e-4
    min_lr: float | None = None  # cosine floor; default lr / 10
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on matrices only, never on norms or biases
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables
    eval_every: int = 100
    eval_samples: int = 64  # validation windows of seq_len tokens, the same set at every evaluation
    save_every: int = 500
    log_every: int = 10
    seed: int = 1337
    dtype: str = "auto"  # bf16 on GPU, fp32 on CPU
    peak_tflops: float | None = None  # for MFU when the device is not in flops.PEAK_TFLOPS

    def __post_init__(self) -> None:
        if (self.max_steps is None) == (self.max_tokens is None):
            raise ConfigError(f"give exactly one of --max-steps ({self.max_steps}) and --max-tokens "
                              f"({self.max_tokens})")
        for name in ("micro_batch", "grad_accum", "seq_len", "eval_every", "eval_samples", "save_every",
                     "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)} must be at least 1")
        for name in ("max_steps", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {value} must be at least 1")
        if self.warmup_steps < 0:
            raise ConfigError(f"--warmup-steps {self.warmup_steps} must be >= 0")
        if self.lr <= 0 or (self.min_lr is not None and not 0 <= self.min_lr <= self.lr):
            raise ConfigError(f"learning rates must satisfy 0 <= --min-lr ({self.min_lr}) <= --lr ({self.lr}), lr > 0")
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"--dtype {self.dtype!r}: expected auto, bf16 or fp32")
        if self.grad_clip < 0:
            raise ConfigError(f"--grad-clip {self.grad_clip} must be >= 0 (0 disables clipping)")

    @property
    def floor_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr

    def total_steps(self, world_size: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        per_step = self.micro_batch * self.grad_accum * world_size * self.seq_len
        return -(-self.max_tokens // per_step)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def from_dict(cls, values: dict[str, Any], where: str):
    """Build a config dataclass from a dict, refusing unknown keys with a suggestion."""
    names = [f.name for f in fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(names)}")
    try:
        return cls(**values)
    except TypeError as e:  # a required key is missing
        raise ConfigError(f"{where}: {e}") from None


def load_json(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what} {str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what} {str(path)!r} must hold a JSON object, not {type(value).__name__}")
    return value


def ds_config_path(name_or_path: str) -> Path:
    """A preset name (zero1, zero2, zero3, zero3_offload) or a path to a DeepSpeed JSON."""
    path = Path(name_or_path)
    if path.suffix != ".json" and not path.exists():
        path = DS_CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            presets = sorted(p.stem for p in DS_CONFIG_DIR.glob("*.json"))
            raise ConfigError(f"--ds-config {name_or_path!r} is neither a file nor a preset; presets: "
                              f"{', '.join(presets)}")
    return path


_OURS = "set it on the ligo_ds command line instead"


# The command-line flag behind each value the DeepSpeed config must agree with, as `pretrain` spells it.
# A phase that takes the value from another flag (the fit's lr is --operator-lr) passes its own names.
PRETRAIN_FLAGS = {"micro_batch": "--micro-batch", "grad_accum": "--grad-accum", "grad_clip": "--grad-clip",
                  "lr": "--lr", "weight_decay": "--weight-decay", "betas": "--beta1/--beta2"}


def resolve_ds_config(user: dict, *, where: str, micro_batch: int, grad_accum: int, world_size: int,
                      grad_clip: float, bf16: bool, lr: float, weight_decay: float, betas: tuple[float, float],
                      on_gpu: bool, flags: dict[str, str] | None = None) -> dict:
    """The exact dict DeepSpeed receives: the user's knobs plus ours, with every conflict refused, naming
    the flag that set ours (`flags` overrides PRETRAIN_FLAGS' names)."""
    flag = {**PRETRAIN_FLAGS, **(flags or {})}
    derived = {
        "train_micro_batch_size_per_gpu": (micro_batch, flag["micro_batch"]),
        "gradient_accumulation_steps": (grad_accum, flag["grad_accum"]),
        "train_batch_size": (micro_batch * grad_accum * world_size,
                             f"{flag['micro_batch']} x {flag['grad_accum']} x world size"),
        # DeepSpeed 0.19.8 defaults to clipping at 1.0 when this is absent: always set it explicitly.
        "gradient_clipping": (grad_clip, flag["grad_clip"]),
    }
    for key, (ours, name) in derived.items():
        if key in user and user[key] != ours:
            raise ConfigError(f"ds config {where} sets {key}={user[key]!r} but {name} gives {ours!r}; {_OURS}")
    if "scheduler" in user:
        raise ConfigError(f"ds config {where} sets a scheduler ({user['scheduler'].get('type')!r}); ligo_ds "
                          "schedules the learning rate itself (--lr, --min-lr, --warmup-steps): remove it")
    if user.get("fp16", {}).get("enabled"):
        raise ConfigError(f"ds config {where} enables fp16; ligo_ds trains in bf16 or fp32 (--dtype)")
    if "enabled" in user.get("bf16", {}) and bool(user["bf16"]["enabled"]) != bf16:
        raise ConfigError(f"ds config {where} sets bf16.enabled={user['bf16']['enabled']} but --dtype gives "
                          f"{'bf16' if bf16 else 'fp32'}")
    ours_opt = {"lr": lr, "weight_decay": weight_decay, "betas": list(betas)}
    if "optimizer" in user:
        opt = user["optimizer"]
        if opt.get("type", "").lower() not in ("adam", "adamw"):
            raise ConfigError(f"ds config {where} sets optimizer type {opt.get('type')!r}; ligo_ds trains with "
                              "AdamW: remove the optimizer section")
        for key, value in opt.get("params", {}).items():
            if key in ours_opt and value != ours_opt[key]:
                raise ConfigError(f"ds config {where} sets optimizer {key}={value!r} but {flag[key]} gives "
                                  f"{ours_opt[key]!r}; {_OURS}")
    out = copy.deepcopy(user)
    out.update({key: ours for key, (ours, _) in derived.items()})
    out["bf16"] = {**user.get("bf16", {}), "enabled": bf16}
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
