"""`ligo-ds plan`: per-rank memory, FLOPs and time per step of a fit and of pretraining, from configs alone
(the work: analysis/plan.py, its terms analysis/memory.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ..analysis.plan import GiB, Setup, check_fits, load_zero, operator_sizes, plan, render
from ..data.reading import Data
from ..distributed.ds_config import DeepSpeed
from ..growth.grow import FitPhase
from ..growth.spec import Growth
from ..model.compute import Compute
from ..model.config import ModelConfig
from ..options import Command, at_least, between, block, flag_of, option
from ..training.flops import PEAK_TFLOPS
from ..training.loop import Loop

DEVICES = ("cuda", "cpu")


@dataclass(frozen=True, kw_only=True)
class PlanOptions(Command):
    target: str = option(
        help="the model to train (or grow into): an HF config.json or a directory holding one",
        metavar="CONFIG",
        hub="config",
    )
    source: str | None = option(
        None,
        "the small model to grow from (its config.json or directory): adds the fit's row",
        metavar="CONFIG",
        hub="config",
    )
    growth: Growth = block(Growth, only=("order",))  # the operator's order sets its size
    world_size: int = option(8, "data-parallel ranks (GPUs, or processes on the CPU)", check=at_least(1))
    loop: Loop = block(Loop, only=("micro_batch",))
    phase: FitPhase = block(FitPhase)
    data: Data = block(Data, only=("seq_len",))
    deepspeed: DeepSpeed = block(DeepSpeed, ds_config="zero3")
    compute: Compute = block(Compute, only=("activation_checkpointing", "loss_chunk"))
    device: str = option("cuda", "where training runs: on cpu the device's memory is the host's", choices=DEVICES)
    gpu_memory: float | None = option(
        80.0, "memory per rank to fit in, GiB (0: do not check)", check=at_least(0), metavar="GIB"
    )
    mfu: float = option(0.4, "model FLOPs utilisation for the time per step", check=between(0.0, 1.0))


Options = PlanOptions
CONFIG_FILE = True


def setup_of(opts: PlanOptions, positions: int) -> Setup:
    """Everything a plan depends on besides the models, from the command's options (`positions`: the
    target's, which a --seq-len not given follows)."""
    d = opts.deepspeed
    # Without --peak-tflops a GPU is taken to be an H100/H200 (flops.PEAK_TFLOPS); a CPU has no time column.
    peak = d.peak_tflops * 1e12 if d.peak_tflops else (PEAK_TFLOPS["H100"] * 1e12 if opts.device == "cuda" else None)
    micro = opts.loop.micro_batch
    return Setup(
        world_size=opts.world_size,
        zero=load_zero(d.ds_config, d.flag("ds_config")),
        dtype=d.dtype_on(opts.device),
        device=opts.device,
        micro_batch=micro,
        fit_micro_batch=opts.phase.fit_micro_batch or micro,
        seq_len=opts.data.for_model(positions).seq_len,
        checkpointing=opts.compute.activation_checkpointing,
        fit_checkpointing=opts.phase.fit_activation_checkpointing,
        loss_chunk=opts.compute.loss_chunk,
        mfu=opts.mfu,
        peak_flops=peak,
    )


def run(opts: PlanOptions) -> int:
    """Per-rank memory of a fit and of pretraining, the operator's size, FLOPs and time per step, as a table.

    Reads config.json files only (TARGET, and SOURCE for the fit's row) and the DeepSpeed JSON; builds
    nothing but the operator on the meta device. Memory is a sum of named terms (ligo_ds/analysis/memory.py
    says each one's formula); bench/plan.py checks them against measured peaks. Exits 2, naming what would
    fit, when a phase needs more than --gpu-memory per rank.
    """
    tgt = ModelConfig.from_file(opts.target)
    src = None if opts.source is None else ModelConfig.from_file(opts.source)
    order = opts.growth.order
    setup = setup_of(opts, tgt.max_positions)
    phases = plan(tgt, src, setup, order)
    sizes = {"target parameters": tgt.num_params()}
    if src is not None:
        coeffs, frozen, _, _ = operator_sizes(src, tgt, order)
        sizes = {"source parameters": frozen, "operator coefficients": coeffs, **sizes}
    print(render(phases, setup, sizes))
    limit = int(opts.gpu_memory * GiB) if opts.gpu_memory and opts.device == "cuda" else None

    def spell(changes: dict) -> str:
        return " ".join(f"{flag_of(PlanOptions, name)} {value}" for name, value in changes.items())

    check_fits(phases, limit, lambda alt: plan(tgt, src, alt, order), setup, spell)
    return 0
