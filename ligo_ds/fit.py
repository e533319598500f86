"""`ligo-ds fit`: learn the LiGO operator on the large model's own language-modelling loss.

Only the operator's coefficients train; the source weights are frozen parameters. Under ZeRO-3 both
are partitioned across ranks (each rank holds about 1/N of them and of the optimizer state), and the
large model's weights are produced block by block inside its forward, with activation checkpointing.
The run directory, checkpoints, auto-resume and metrics are those of pretraining (pretrain.py); the
metrics add how far each operator group moved from its initialisation.

`--steps 0` writes the initialisation alone: the classic heuristics (stacking, interpolation, Net2Net)
as an ordinary grown model, with no DeepSpeed engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import distributed
from .config import ModelConfig
from .data import TokenData
from .errors import ConfigError
from .flops import operator_flops
from .growth import GrowthSpec, GrownModel, LiGOOperator, write_grown
from .growth.operator import iter_grown_state
from .hf_io import load_model
from .pretrain import (StopRequest, TrainState, export_dir_extras, fit, plan_resume, resume, start,
                       write_hf_from_all_ranks)
from .rundir import source_record, write_json_atomic
from .train_config import PretrainConfig

# Operator parameter groups reported in the metrics (prefix of the parameter name -> column).
MOVEMENT_GROUPS = {"residual.": "moved_residual", "layer_widths.": "moved_layer_width", "depth.": "moved_depth"}


@dataclass(frozen=True)
class FitConfig:
    source: str  # the small model: an HF checkpoint directory
    target: str  # the large model's shape: an HF config.json
    data: str
    out: str
    steps: int = 100  # operator gradient steps; 0 writes the initialisation alone
    width_init: str = "select"
    depth_init: str = "stack"
    # Exact copies (select / net2net without noise) get identical gradients and never diverge: measured, a
    # grown GPT-2's copied units were still bit-identical after 400 steps, so it kept the small model's
    # width. A little noise on the new units breaks the symmetry (Net2Net does the same); 0 gives exact copies.
    init_noise: float = 0.01
    tying: str | None = None
    order: str = "paper"
    operator_lr: float = 1e-3
    operator_min_lr: float | None = None
    operator_warmup: int = 10
    operator_weight_decay: float = 0.0  # decay pulls new channels towards zero: off by default
    ds_config: str = "zero3"
    micro_batch: int = 8
    grad_accum: int = 1
    seq_len: int = 256
    grad_clip: float = 1.0
    eval_every: int = 25
    eval_samples: int = 64
    save_every: int = 50
    log_every: int = 5
    seed: int = 1337
    dtype: str = "auto"
    peak_tflops: float | None = None

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"--steps {self.steps} must be >= 0 (0 writes the initialisation alone)")
        self.spec()  # validates the growth options

    def spec(self) -> GrowthSpec:
        return GrowthSpec(width_init=self.width_init, depth_init=self.depth_init, noise=self.init_noise,
                          tying=self.tying, order=self.order, seed=self.seed)

    def loop(self) -> PretrainConfig:
        """The training-loop options of the fit, in the shape the shared loop takes."""
        return PretrainConfig(
            model=self.target, data=self.data, out=self.out, ds_config=self.ds_config, max_steps=max(1, self.steps),
            micro_batch=self.micro_batch, grad_accum=self.grad_accum, seq_len=self.seq_len, lr=self.operator_lr,
            min_lr=self.operator_min_lr, warmup_steps=self.operator_warmup, weight_decay=self.operator_weight_decay,
            grad_clip=self.grad_clip, eval_every=self.eval_every, eval_samples=self.eval_samples,
            save_every=self.save_every, log_every=self.log_every, seed=self.seed, dtype=self.dtype,
            peak_tflops=self.peak_tflops)


def build_operator(cfg: FitConfig) -> tuple[LiGOOperator, dict]:
    """The operator from the source checkpoint (built unpartitioned: used to count and for --steps 0)."""
    source = load_model(cfg.source)
    target = ModelConfig.from_file(cfg.target)
    return LiGOOperator(source.state_dict(), source.cfg, target, cfg.spec()), source.state_dict()


def movement(model: GrownModel, initial: dict[str, torch.Tensor], partitioned: bool) -> dict[str, float]:
    """Per group: ||theta - theta_0|| / ||theta_0|| over this run's operator parameters."""
    sums = torch.zeros(2 * len(MOVEMENT_GROUPS), dtype=torch.float64)
    for name, p in model.operator.named_parameters():
        if name not in initial:
            continue
        k = next(i for i, prefix in enumerate(MOVEMENT_GROUPS) if name.startswith(prefix))
        now, start = distributed.local_shard(p).double().cpu(), initial[name]
        sums[2 * k] += (now - start).square().sum()
        sums[2 * k + 1] += start.square().sum()
    if partitioned:
        sums = distributed.all_reduce_sum(sums.to(distributed.local_shard(next(model.parameters())).device)).cpu()
    return {col: (sums[2 * k] / sums[2 * k + 1].clamp_min(1e-30)).sqrt().item()
            for k, col in enumerate(MOVEMENT_GROUPS.values())}


@dataclass
class FitResult:
    hf: Path  # the grown model as an HF checkpoint
    flops: float  # the fit's cumulative FLOPs (0 for --steps 0)
    seconds: float  # the fit's wall time inside training steps
    operator: LiGOOperator | None  # the fitted operator, still partitioned, when kept for a hand-off
    stopped: bool = False  # stopped early on request, after a checkpoint; nothing was written


def run(cfg: FitConfig, *, hf_out: str | Path | None = None, keep_operator: bool = False,
        stop_file: Path | None = None, micro_batch_flag: str = "--micro-batch") -> FitResult:
    """Fit (or resume fitting) the operator; write the grown model to `hf_out` (default RUN_DIR/hf).

    `micro_batch_flag` names the flag cfg.micro_batch came from (grow's --fit-micro-batch, when given), for
    errors about a DeepSpeed config that disagrees with it.
    """
    loop = cfg.loop()
    data = TokenData(cfg.data)
    target = ModelConfig.from_file(cfg.target)
    spec = cfg.spec()
    extra_identity = {"source": str(Path(cfg.source).resolve()), "growth": asdict(spec), "fit_steps": cfg.steps}
    if cfg.steps == 0:
        operator = _initialisation_only(cfg, target, data, extra_identity, hf_out)
        return FitResult(Path(hf_out or Path(cfg.out) / "hf"), 0.0, 0.0, operator if keep_operator else None)

    reference, source_state = build_operator(cfg)
    # The loop's lr and decay come from --operator-lr / --operator-weight-decay: DS-config errors name those.
    flags = {"lr": "--operator-lr", "weight_decay": "--operator-weight-decay", "micro_batch": micro_batch_flag}
    s = start(loop, target, data, extra_identity=extra_identity, flags=flags,
              extra_record={"fit": asdict(cfg), "operator_params": reference.param_counts(),
                            **source_record(cfg.source)})
    d = s.d
    prod_flops = distributed.broadcast_object(operator_flops(reference) if d.is_main else None)
    del reference
    src_cfg = ModelConfig.from_file(cfg.source)
    model = distributed.build_model(lambda: GrownModel(LiGOOperator(source_state, src_cfg, target, spec)),
                                    s.ds_config, s.dtype)
    trainable = [p for p in model.parameters() if p.requires_grad]
    initial = {n: distributed.local_shard(p).detach().double().cpu().clone()
               for n, p in model.operator.named_parameters() if p.requires_grad}
    tag = plan_resume(s)
    engine = distributed.make_engine(model, [{"params": trainable, "weight_decay": cfg.operator_weight_decay}],
                                     s.ds_config)
    report = distributed.partition_report(engine)  # collective: every rank takes part
    if d.is_main:
        write_json_atomic(s.run_dir.root / "partition.json", report)
    state = resume(engine, s, tag) or TrainState()
    partitioned = distributed.is_partitioned(trainable[0])
    # Every rank produces all the weights, and back-propagates into the operator, on every micro-batch.
    extra = float(prod_flops * d.world_size * cfg.grad_accum)
    stop = StopRequest(Path(stop_file or s.run_dir.root / "STOP"), d.device)
    state, stopped = fit(engine, loop, target, data, s.run_dir, d, state, extra_flops_per_step=extra,
                         extra_metrics=lambda: movement(engine.module, initial, partitioned), stop=stop)
    if stopped:
        return FitResult(Path(hf_out or s.run_dir.hf), state.flops, state.train_seconds, None, stopped=True)
    hf = Path(hf_out or s.run_dir.hf)
    with torch.no_grad():
        write_hf_from_all_ranks(target, iter_grown_state(engine.module.operator), hf, d, s.dtype)
    if d.is_main:
        export_dir_extras(data, hf)
    distributed.barrier()
    return FitResult(hf, state.flops, state.train_seconds, engine.module.operator if keep_operator else None)


def _initialisation_only(cfg: FitConfig, target: ModelConfig, data: TokenData, extra_identity: dict,
                         hf_out: str | Path | None) -> LiGOOperator:
    """--steps 0: no engine; rank 0 writes the initialised operator's model (the heuristics)."""
    from .pretrain import on_rank0
    from .rundir import RunDir, versions

    d = distributed.init()
    run_dir = RunDir(cfg.out)
    operator, _ = build_operator(cfg)
    identity = {"target": str(Path(cfg.target).resolve()), "data": str(data.dir.resolve()), **extra_identity}
    record = {"fit": asdict(cfg), **source_record(cfg.source),
              "model_config": target.to_hf(), "versions": versions(),
              "operator_params": operator.param_counts()}
    on_rank0(d, lambda: run_dir.claim(identity, record))
    hf = Path(hf_out or run_dir.hf)
    if d.is_main:
        write_grown(operator, hf)
        export_dir_extras(data, hf)
    distributed.barrier()
    return operator
