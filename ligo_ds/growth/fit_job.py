"""What the run pipeline (training/pipeline.py) trains in a fit: the operator inside the target architecture
(GrownModel), its parameter groups and FLOPs, and the metric of how far each part of it moved."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..distributed import engine as ds_engine
from ..distributed import launch, partition
from ..distributed.ds_config import bound_zero3_sizes, fit_zero3_bounds
from ..model.compute import Compute
from ..model.config import ModelConfig
from ..model.decoder import Block as DecoderBlock
from ..model.hf_load import SourceWeights
from ..options import identity_of
from ..training.loop import Loop
from ..training.pipeline import Job
from ..training.rundir import source_record, write_json_atomic
from ..training.session import Session, model_identity
from . import rotary
from .cost import operator_flops, vocab_flops_per_token
from .grown import GrownModel, iter_grown_state
from .operator import LiGOOperator, meta_operator
from .spec import Growth, GrowthSpec

# Operator parameter groups reported in the metrics (prefix of the parameter name -> column).
MOVEMENT_GROUPS = {"residual.": "moved_residual", "layer_widths.": "moved_layer_width", "depth.": "moved_depth"}


@dataclass(frozen=True)
class FitSetup:
    """What the fit's job reads of the fit's options (fit.FitOptions)."""

    growth: Growth
    loop: Loop
    compute: Compute
    seq_len: int
    steps: int
    weight_decay: float  # the operator's


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


class FitJob(Job):
    """The operator inside the target architecture (GrownModel): what the run pipeline trains in a fit."""

    def __init__(self, fit: FitSetup, target: ModelConfig, src_cfg: ModelConfig, spec: GrowthSpec, record: dict):
        self.fit, self.cfg, self.src_cfg, self.spec = fit, target, src_cfg, spec
        self.shapes = meta_operator(src_cfg, target, spec)  # sizes and FLOPs from shapes alone: no weights read
        g = fit.growth
        self.identity = {
            **identity_of(
                g, source=str(Path(g.source).resolve()), model=model_identity(g.target, target), growth=asdict(spec)
            ),
            "fit_steps": fit.steps,
        }
        self.record = {"fit": record, "operator_params": self.shapes.param_counts(), **source_record(g.source)}

    def claimed(self, s: Session) -> None:
        """Hold the fit's ZeRO-3 buffers to about one target block (ds_config.fit_zero3_bounds), in the config
        DeepSpeed gets and in the run's ds_config.json; a knob the DeepSpeed JSON set higher is named."""
        with torch.device("meta"):
            size = sum(p.numel() for p in DecoderBlock(self.cfg).parameters())
        s.ds_config, lowered = bound_zero3_sizes(s.ds_config, fit_zero3_bounds(size, s.d.world_size))
        if s.d.is_main:
            write_json_atomic(s.run_dir.ds_config, s.ds_config)
            if lowered:
                shown = ", ".join(f"{k} {was:,} -> {now:,}" for k, (was, now) in lowered.items())
                print(f"fit: ZeRO-3 buffers held to one target block ({size:,} parameters): {shown}", flush=True)
            for line in rotary.notes(self.src_cfg, self.cfg):  # what is exact about the start, and what is not
                print(f"fit: {line}", flush=True)
        self.production_flops = operator_flops(self.shapes)

    def build(self, s: Session) -> torch.nn.Module:
        # The source is read tensor by tensor as the operator is built: under ZeRO-3 each source layer is
        # partitioned as soon as it exists, so no rank holds more than one layer of it (or of the operator).
        source = SourceWeights(self.fit.growth.source)
        c = self.fit.compute
        model = ds_engine.build_model(
            lambda: GrownModel(
                LiGOOperator(source, self.src_cfg, self.cfg, self.spec), c.activation_checkpointing, c.loss_chunk
            ),
            s.ds_config,
            s.dtype,
        )
        if c.compile:
            model.compile_blocks()
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        # Kept in the parameters' own dtype (exact), converted to float64 only in movement().
        self.initial = {
            n: partition.local_shard(p).detach().cpu().clone()
            for n, p in model.operator.named_parameters()
            if p.requires_grad
        }
        return model

    def param_groups(self, model: torch.nn.Module) -> list[dict]:
        return [{"params": self.trainable, "weight_decay": self.fit.weight_decay}]

    def started(self, engine, s: Session) -> None:
        report = ds_engine.partition_report(engine)  # collective: every rank takes part
        if s.d.is_main:
            write_json_atomic(s.run_dir.root / "partition.json", report)
        self.partitioned = partition.is_partitioned(self.trainable[0])

    def step_flops(self, s: Session) -> float:
        # Every rank produces all the weights, and back-propagates into the operator, on every micro-batch;
        # its embedding and head cost per token what vocab_flops_per_token says beyond the large model's head.
        loop = self.fit.loop
        micro_tokens = loop.micro_batch * self.fit.seq_len
        per_micro = self.production_flops + micro_tokens * vocab_flops_per_token(self.shapes)
        return float(per_micro * s.d.world_size * loop.grad_accum)

    def metrics(self, engine):
        return lambda: movement(engine.module, self.initial, self.partitioned)

    def tensors(self, engine, s: Session) -> Iterable[tuple[str, torch.Tensor]]:
        with torch.no_grad():
            yield from iter_grown_state(engine.module.operator)
