"""`ligo-ds grow`: fit the operator, hand the grown model to DeepSpeed pretraining, train it on.

    RUN_DIR/fit/      the operator fit (checkpoints, metrics, partition.json)
    RUN_DIR/grown/    the grown model as an HF checkpoint
    RUN_DIR/train/    pretraining of the grown model (checkpoints, metrics, hf/)

Hand-off: in the same process the fitted operator produces the target's weights one tensor at a time
on every rank, and each rank keeps only its own ZeRO-3 partition of them (distributed.load_weights), so
no rank ever holds the whole target. Rerunning the command resumes in whichever phase it stopped: a
finished fit is not redone, and once pretraining has a checkpoint the operator is not needed at all
(a restart between the two loads RUN_DIR/grown/ the same per-partition way). The pretraining metrics
count FLOPs from the start of the fit, so a grown run compares with a scratch run on one axis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from .errors import ConfigError
from .faults import crash_point
from .fit import FitConfig
from .rundir import read_metrics
from .train_config import PretrainConfig

@dataclass(frozen=True)
class GrowConfig:
    source: str
    target: str
    data: str
    out: str
    # the operator fit (defaults are FitConfig's)
    fit_steps: int = FitConfig.steps
    width_init: str = FitConfig.width_init
    depth_init: str = FitConfig.depth_init
    init_noise: float = FitConfig.init_noise
    tying: str | None = FitConfig.tying
    order: str = FitConfig.order
    operator_lr: float = FitConfig.operator_lr
    operator_min_lr: float | None = FitConfig.operator_min_lr
    operator_warmup: int = FitConfig.operator_warmup
    operator_weight_decay: float = FitConfig.operator_weight_decay
    # Sequences per rank per fit step (default: micro_batch). A smaller fit batch makes the fit cheaper;
    # the operator still produces every weight on every step, so its own cost does not shrink.
    fit_micro_batch: int | None = None
    # pretraining of the grown model
    max_steps: int | None = None
    max_tokens: int | None = None
    lr: float = 6e-4
    min_lr: float | None = None
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    # both phases
    ds_config: str = "zero3"
    micro_batch: int = 8
    grad_accum: int = 1
    seq_len: int = 256
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_samples: int = 64
    save_every: int = 500
    log_every: int = 10
    seed: int = 1337
    dtype: str = "auto"
    peak_tflops: float | None = None

    def __post_init__(self) -> None:
        if self.fit_micro_batch is not None and self.fit_micro_batch < 1:
            raise ConfigError(f"--fit-micro-batch {self.fit_micro_batch} must be >= 1 (or left out: --micro-batch)")
        self.fit_config()
        self.pretrain_config()  # both phases validate their options now, not after the fit

    def fit_config(self) -> FitConfig:
        names = {f.name for f in fields(FitConfig)}
        values = {k: v for k, v in asdict(self).items() if k in names}
        return FitConfig(**{**values, "steps": self.fit_steps, "out": str(Path(self.out) / "fit"),
                            "micro_batch": self.micro_batch if self.fit_micro_batch is None else self.fit_micro_batch,
                            "eval_every": min(self.eval_every, max(1, self.fit_steps)),
                            "save_every": min(self.save_every, max(1, self.fit_steps)),
                            "log_every": min(self.log_every, max(1, self.fit_steps))})

    def pretrain_config(self) -> PretrainConfig:
        names = {f.name for f in fields(PretrainConfig)}
        values = {k: v for k, v in asdict(self).items() if k in names}
        return PretrainConfig(**{**values, "model": str(Path(self.out) / "grown"), "out": str(Path(self.out) / "train")})


def _grown_weights(operator):
    """(name, shape) -> tensor for the target model, produced block by block (one block cached)."""
    cache: dict = {"block": None, "tensors": None}
    globals_ = {}
    depth = operator.depth()

    def get(name: str, shape: torch.Size) -> torch.Tensor:
        with torch.no_grad():
            if not name.startswith("blocks."):
                if not globals_:
                    globals_.update(operator.global_weights())
                return globals_[name]
            _, index, rest = name.split(".", 2)
            if cache["block"] != int(index):
                cache["block"], cache["tensors"] = int(index), operator.block(int(index), depth)
            return cache["tensors"][rest]

    return get


def _fit_totals(fit_dir: Path) -> tuple[float, float]:
    """(FLOPs, seconds) the finished fit spent, from its metrics."""
    rows = read_metrics(fit_dir / "metrics.jsonl") if (fit_dir / "metrics.jsonl").is_file() else []
    return (rows[-1]["flops"], rows[-1]["train_seconds"]) if rows else (0.0, 0.0)


def run(cfg: GrowConfig) -> Path | None:
    """Returns the trained model's HF directory, or None when a phase stopped early on request
    (RUN_DIR/STOP, SIGTERM or SIGUSR1) after checkpointing."""
    from . import distributed
    from . import fit as fit_phase
    from . import pretrain

    out = Path(cfg.out)
    train_cfg = cfg.pretrain_config()
    train_dir = Path(train_cfg.out)
    trained_before = (train_dir / "checkpoints" / "latest").is_file()
    grown = out / "grown"
    # What the grown model came from; logging and saving cadence may change on a resume.
    identity = {"grown_from": {k: v for k, v in asdict(cfg.fit_config()).items()
                               if k not in ("eval_every", "eval_samples", "save_every", "log_every", "peak_tflops")}}
    if trained_before:
        if not (grown / "config.json").is_file():
            raise ConfigError(f"{str(train_dir)!r} has checkpoints but {str(grown)!r} is missing; the run directory "
                              "is damaged")
        flops, seconds = _fit_totals(out / "fit")
        return pretrain.run(train_cfg, initial_flops=flops, initial_seconds=seconds, extra_identity=identity,
                            stop_file=out / "STOP")
    # The training phase's DeepSpeed config is checked now (the fit checks its own as it starts): a conflict
    # found only after the fit would waste it.
    pretrain.ds_config_for(train_cfg, distributed.init())
    result = fit_phase.run(cfg.fit_config(), hf_out=grown, keep_operator=True, stop_file=out / "STOP",
                           micro_batch_flag="--micro-batch" if cfg.fit_micro_batch is None else "--fit-micro-batch")
    if result.stopped:
        return None
    crash_point("handoff")
    init = _grown_weights(result.operator) if result.operator is not None else None
    hf = pretrain.run(train_cfg, initial_flops=result.flops, initial_seconds=result.seconds, init_weights=init,
                      extra_identity=identity, stop_file=out / "STOP")
    distributed.barrier()
    return hf
