"""`ligo-ds fit`: learn the LiGO operator on the large model's own language-modelling loss.

Only the operator's coefficients train; the source weights are frozen parameters. Under ZeRO-3 both
are partitioned across ranks (each rank holds about 1/N of them and of the optimizer state), and the
large model's weights are produced block by block inside its forward, with activation checkpointing.
The loop, run directory, checkpoints, auto-resume and metrics are the trainer's (trainer.py); the
metrics add how far each operator group moved from its initialisation.

`--steps 0` writes the initialisation alone: the classic heuristics (stacking, interpolation, Net2Net)
as an ordinary grown model, with no DeepSpeed engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..data.reading import TokenData, open_data
from ..distributed import engine as ds_engine
from ..distributed import launch, partition
from ..distributed.ds_config import bound_zero3_sizes, ds_config_path, fit_zero3_bounds, zero_stage
from ..errors import ConfigError
from ..model import tokenizer
from ..model.config import ModelConfig
from ..model.decoder import Block
from ..model.hf_io import SourceWeights
from ..options import FitOptions, load_json, to_flat
from ..training import session
from ..training.flops import operator_flops, vocab_flops_per_token
from ..training.rundir import RunDir, source_record, versions, write_json_atomic
from ..training.trainer import StopRequest, Trainer, TrainState
from . import GrownModel, LiGOOperator, iter_grown_state, meta_operator

# Operator parameter groups reported in the metrics (prefix of the parameter name -> column).
MOVEMENT_GROUPS = {"residual.": "moved_residual", "layer_widths.": "moved_layer_width", "depth.": "moved_depth"}


def build_operator(opts: FitOptions) -> LiGOOperator:
    """The operator from the source checkpoint, unpartitioned (--steps 0)."""
    source = SourceWeights(opts.growth.source)
    return LiGOOperator(source, source.cfg, ModelConfig.from_file(opts.growth.target), opts.spec())


def movement(model: GrownModel, initial: dict[str, torch.Tensor], partitioned: bool) -> dict[str, float]:
    """Per group: ||theta - theta_0|| / ||theta_0|| over this run's operator parameters."""
    sums = torch.zeros(2 * len(MOVEMENT_GROUPS), dtype=torch.float64)
    for name, p in model.operator.named_parameters():
        if name not in initial:
            continue
        k = next(i for i, prefix in enumerate(MOVEMENT_GROUPS) if name.startswith(prefix))
        now, start = partition.local_shard(p).double().cpu(), initial[name].double()
        sums[2 * k] += (now - start).square().sum()
        sums[2 * k + 1] += start.square().sum()
    if partitioned:
        sums = launch.all_reduce_sum(sums.to(partition.local_shard(next(model.parameters())).device)).cpu()
    return {
        col: (sums[2 * k] / sums[2 * k + 1].clamp_min(1e-30)).sqrt().item()
        for k, col in enumerate(MOVEMENT_GROUPS.values())
    }


def check_compute(opts: FitOptions, checkpointing_flag: str) -> None:
    """Refuse selective checkpointing in a ZeRO-3 fit. A block's region recomputed in the backward holds
    the production of its weights, whose operator modules ZeRO-3 gathers and releases by hooks inside
    that region; selective checkpointing replays the region op for op, and the hooks' ops differ between
    the forward and the replay (DeepSpeed 0.19.8, torch 2.13: "aten.empty.memory_format encountered during
    backward but not found in storage"). Pretraining has no such hooks inside a block (gather_whole)."""
    if opts.compute.activation_checkpointing != "selective":
        return
    ds = opts.deepspeed.ds_config
    if zero_stage(load_json(ds_config_path(ds), "ds config")) == 3:
        raise ConfigError(
            f"{checkpointing_flag} selective cannot run in a fit under ZeRO-3 (--ds-config {ds}): ZeRO-3 "
            "gathers the operator's weights inside each block's recomputed region; use full or none, or ZeRO-1/2"
        )


def _bound_zero3(s: session.Session, target: ModelConfig) -> None:
    """Hold the fit's ZeRO-3 buffers to about one target block (ds_config.fit_zero3_bounds), in the config
    DeepSpeed gets and in the run's ds_config.json; a knob the DeepSpeed JSON set higher is named."""
    with torch.device("meta"):
        block = sum(p.numel() for p in Block(target).parameters())
    s.ds_config, lowered = bound_zero3_sizes(s.ds_config, fit_zero3_bounds(block, s.d.world_size))
    if s.d.is_main:
        write_json_atomic(s.run_dir.ds_config, s.ds_config)
        if lowered:
            shown = ", ".join(f"{k} {was:,} -> {now:,}" for k, (was, now) in lowered.items())
            print(f"fit: ZeRO-3 buffers held to one target block ({block:,} parameters): {shown}", flush=True)


@dataclass
class FitResult:
    hf: Path  # the grown model as an HF checkpoint
    flops: float  # the fit's cumulative FLOPs (0 for --steps 0)
    seconds: float  # the fit's wall time inside training steps
    operator: LiGOOperator | None  # the fitted operator, still partitioned, when kept for a hand-off
    stopped: bool = False  # stopped early on request, after a checkpoint; nothing was written


def run(
    opts: FitOptions,
    *,
    hf_out: str | Path | None = None,
    keep_operator: bool = False,
    stop_file: Path | None = None,
    micro_batch_flag: str = "--micro-batch",
    checkpointing_flag: str = "--activation-checkpointing",
) -> FitResult:
    """Fit (or resume fitting) the operator; write the grown model to `hf_out` (default RUN_DIR/hf).

    `micro_batch_flag` names the flag the fit's micro-batch came from (grow's --fit-micro-batch, when
    given), for errors about a DeepSpeed config that disagrees with it; `checkpointing_flag` likewise.
    """
    loop = opts.training_loop()
    data = open_data(opts.data.data)
    target = ModelConfig.from_file(opts.growth.target)
    spec = opts.spec()
    # The source's weights were trained on its tokenizer's ids (the target, a config, checks at session.start)
    tokenizer.check_matches(data.dir, data.meta, opts.growth.source, "--source", opts.data.allow_tokenizer_mismatch)
    extra_identity = {
        "source": str(Path(opts.growth.source).resolve()),
        "growth": asdict(spec),
        "fit_steps": opts.fit.steps,
    }
    if opts.fit.steps == 0:
        # No operator is kept: a hand-off reads the grown model back from disk, tensor by tensor, on every rank.
        return FitResult(_initialisation_only(opts, target, data, extra_identity, hf_out), 0.0, 0.0, None)

    check_compute(opts, checkpointing_flag)
    src_cfg = ModelConfig.from_file(opts.growth.source)
    shapes = meta_operator(src_cfg, target, spec)  # sizes and FLOPs from shapes alone: no weights read
    flags = {**opts.fit.FLAGS, "micro_batch": micro_batch_flag, "model": "--target"}
    s = session.start(
        loop,
        target,
        data,
        extra_identity=extra_identity,
        flags=flags,
        extra_record={
            "fit": to_flat(opts),
            "operator_params": shapes.param_counts(),
            **source_record(opts.growth.source),
        },
    )
    d = s.d
    _bound_zero3(s, target)
    prod_flops = operator_flops(shapes)
    # The source is read tensor by tensor as the operator is built: under ZeRO-3 each source layer is
    # partitioned as soon as it exists, so no rank holds more than one layer of it (or of the operator).
    source_state = SourceWeights(opts.growth.source)
    c = opts.compute
    model = ds_engine.build_model(
        lambda: GrownModel(LiGOOperator(source_state, src_cfg, target, spec), c.activation_checkpointing, c.loss_chunk),
        s.ds_config,
        s.dtype,
    )
    if c.compile:
        model.compile_blocks()
    trainable = [p for p in model.parameters() if p.requires_grad]
    # Kept in the parameters' own dtype (exact), converted to float64 only in movement().
    initial = {
        n: partition.local_shard(p).detach().cpu().clone()
        for n, p in model.operator.named_parameters()
        if p.requires_grad
    }
    tag = session.plan_resume(s)
    engine = ds_engine.make_engine(
        model, [{"params": trainable, "weight_decay": opts.fit.operator_weight_decay}], s.ds_config
    )
    report = ds_engine.partition_report(engine)  # collective: every rank takes part
    if d.is_main:
        write_json_atomic(s.run_dir.root / "partition.json", report)
    partitioned = partition.is_partitioned(trainable[0])
    # Every rank produces all the weights, and back-propagates into the operator, on every micro-batch; its
    # embedding and head cost per token what vocab_flops_per_token says beyond the large model's head.
    micro_tokens = opts.loop.micro_batch * opts.data.seq_len
    per_micro = prod_flops + micro_tokens * vocab_flops_per_token(shapes)
    extra = float(per_micro * d.world_size * opts.loop.grad_accum)
    trainer = Trainer(
        engine,
        s,
        loop,
        target,
        data,
        extra_flops_per_step=extra,
        extra_metrics=lambda: movement(engine.module, initial, partitioned),
    )
    state = trainer.resume(tag, TrainState())
    stop = StopRequest(Path(stop_file or s.run_dir.root / "STOP"), d.device)
    hf = Path(hf_out or s.run_dir.hf)
    if trainer.train(state, stop):
        return FitResult(hf, state.flops, state.train_seconds, None, stopped=True)
    with torch.no_grad():
        session.write_hf(target, iter_grown_state(engine.module.operator), hf, d, s.dtype, data)
    return FitResult(hf, state.flops, state.train_seconds, engine.module.operator if keep_operator else None)


def _initialisation_only(
    opts: FitOptions, target: ModelConfig, data: TokenData, extra_identity: dict, hf_out: str | Path | None
) -> Path:
    """--steps 0: no engine; rank 0 builds the initialised operator and writes its model (the heuristics)."""
    d = launch.init()
    run_dir = RunDir(opts.out)
    shapes = meta_operator(ModelConfig.from_file(opts.growth.source), target, opts.spec())
    identity = {"target": str(Path(opts.growth.target).resolve()), "data": str(data.dir.resolve()), **extra_identity}
    record = {
        "fit": to_flat(opts),
        **source_record(opts.growth.source),
        "model_config": target.to_hf(),
        "versions": versions(),
        "operator_params": shapes.param_counts(),
        **session.hub_record(),
    }
    launch.on_rank0(d, lambda: run_dir.claim(identity, record))
    hf = Path(hf_out or run_dir.hf)
    tensors = iter_grown_state(build_operator(opts)) if d.is_main else iter(())
    return session.write_hf(target, tensors, hf, d, torch.float32, data, collective=False)
