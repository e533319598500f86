"""`ligo-ds plan`: what a fit and a pretraining run hold per rank, and how long a step takes, before a job
is queued. From config.json files alone: no weights are read, nothing is built but the operator on the
meta device (for its exact size and FLOPs). Each phase is a sum of named terms (memory.py says each one's
formula); when a phase does not fit, the changes that would make it fit are planned and named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache

from ..distributed.ds_config import MIN_SUB_GROUP, ds_config_path, fit_zero3_bounds
from ..errors import ConfigError
from ..growth.cost import operator_flops, vocab_flops_per_token
from ..growth.operator import meta_operator
from ..growth.spec import GrowthSpec
from ..model.config import ModelConfig
from ..training.flops import train_flops_per_token
from .memory import (
    DTYPE_BYTES,
    FIT_RUNTIME,
    RUNTIME_HOST,
    TERMS,
    GiB,
    Zero,
    activation_bytes,
    block_activation_elements,
    block_constant_bytes,
    largest_module,
    persistent_params,
    zero3_gathered,
    zero_states,
)

# ---- the plan --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    device: dict[str, int]  # term -> bytes per rank
    host: dict[str, int]
    flops_per_step: float  # the whole job's, all ranks
    seconds_per_step: float | None

    @property
    def device_total(self) -> int:
        return sum(self.device.values())

    @property
    def host_total(self) -> int:
        return sum(self.host.values())


@dataclass(frozen=True)
class Setup:
    """Everything a plan depends on besides the models."""

    world_size: int
    zero: Zero
    dtype: str  # bf16 | fp32
    device: str  # cuda | cpu
    micro_batch: int
    fit_micro_batch: int
    seq_len: int
    checkpointing: str
    fit_checkpointing: str
    loss_chunk: int
    mfu: float
    peak_flops: float | None

    @property
    def w(self) -> int:
        return DTYPE_BYTES[self.dtype]


def _place(terms: dict[str, tuple[int, int]], setup: Setup) -> tuple[dict[str, int], dict[str, int]]:
    """Split (device, host) terms; on the CPU the device is the host, so everything lands in `device`,
    and the runtime joins it."""
    device = {k: d + (h if setup.device == "cpu" else 0) for k, (d, h) in terms.items()}
    host = {k: h for k, (d, h) in terms.items() if setup.device != "cpu" and h}
    runtime = RUNTIME_HOST[setup.device]
    if setup.device == "cpu":
        device["runtime"] = runtime
    else:
        host["runtime"] = runtime
    return device, host


def _seconds(flops: float, setup: Setup) -> float | None:
    if not setup.peak_flops:
        return None
    return flops / setup.world_size / (setup.mfu * setup.peak_flops)


def pretrain_phase(cfg: ModelConfig, setup: Setup, name: str = "pretrain") -> Phase:
    w, tokens = setup.w, setup.micro_batch * setup.seq_len
    terms = zero_states(cfg.num_params(), 0, setup.zero, setup.world_size, w, setup.device)
    if setup.zero.stage == 3:
        gathered = zero3_gathered(largest_module(cfg), cfg.num_params(), setup.zero, w)
        gathered += w * persistent_params(cfg, setup.zero.persistence_threshold)
        terms["buffers"] = (terms["buffers"][0] + gathered, terms["buffers"][1])
    act = activation_bytes(cfg, setup.micro_batch, setup.seq_len, setup.checkpointing, w, setup.loss_chunk)
    terms["activations"] = (act, 0)
    device, host = _place(terms, setup)
    flops = train_flops_per_token(cfg, setup.seq_len) * tokens * setup.world_size
    return Phase(name, device, host, flops, _seconds(flops, setup))


@cache  # the suggestions of what would fit re-plan the same growth many times
def operator_sizes(src: ModelConfig, tgt: ModelConfig, order: str) -> tuple[int, int, int, int]:
    """(learned coefficients, frozen source parameters, FLOPs of one fit step's own production, FLOPs per
    token of the fit's embedding and head beyond the large model's head), exact, from the operator built on
    the meta device (what fit.py counts)."""
    op = meta_operator(src, tgt, GrowthSpec(order=order))
    counts = op.param_counts()
    return counts["operator"], counts["source"], operator_flops(op), vocab_flops_per_token(op)


def block_params(cfg: ModelConfig) -> int:
    return (cfg.num_params(embeddings=False) - cfg.hidden_size * (2 if cfg.norm_bias else 1)) // cfg.num_layers


def fit_phase(src: ModelConfig, tgt: ModelConfig, setup: Setup, order: str) -> Phase:
    """The operator's fit: the coefficients train, the source is frozen, and every step produces the
    target's weights block by block from them.

    Beyond the ZeRO states (T coefficients, F source parameters) a rank holds the coefficients' starting
    values (for the `moved` metric) and, under ZeRO-3, the buffers fit.py sizes to one target block of B
    parameters (ds_config.fit_zero3_bounds): the gradient bucket and the optimizer's sub-group gradient
    buffer. A step's working set is the larger of two moments:
      the head   the source's vocabulary matrix gathered (the fit runs its head at the source's width and
                 never produces the V x D2 matrices), one loss chunk's fp32 logits and log-probabilities,
                 the batch's embedding rows
      a block    its produced weights, the depth mix's term of every source layer (kept for the mixing
                 coefficients' gradients), and its activations while the backward recomputes it (with
                 --fit-activation-checkpointing none every block's are kept, in `activations`)
    and at the end the export produces the V x D2 embedding once. On the CPU a gather over several ranks
    briefly holds the gathered tensor twice (measured; gloo's all-gather fills a flat copy).
    """
    w, n, world = setup.w, setup.fit_micro_batch * setup.seq_len, setup.world_size
    coeffs, frozen, op_flops, vocab_flops = operator_sizes(src, tgt, order)
    block, src_block = block_params(tgt), block_params(src)
    zero = setup.zero
    if zero.stage == 3:
        bounds = fit_zero3_bounds(block, world)
        zero = replace(
            zero,
            reduce_bucket=min(zero.reduce_bucket, bounds["reduce_bucket_size"]),
            prefetch_bucket=min(zero.prefetch_bucket, bounds["stage3_prefetch_bucket_size"]),
        )
    terms = zero_states(coeffs, frozen, zero, world, w, setup.device)
    extra = -(-w * coeffs // world)  # the starting coefficients, in their own dtype
    if zero.stage == 3:
        sub_group = max(-(-block // world), MIN_SUB_GROUP)
        widest = tgt.intermediate_size * src.intermediate_size  # the largest coefficient matrix
        extra += 4 * min(coeffs, world * sub_group + widest)
    terms["optimizer"] = (terms["optimizer"][0] + extra, terms["optimizer"][1])

    d1, d2, v = src.hidden_size, tgt.hidden_size, tgt.vocab_size
    twice = 2 if setup.device == "cpu" and world > 1 and zero.stage == 3 else 1
    none_el, none32 = block_activation_elements(tgt, "none")
    one_block = n * (none_el * w + none32 * 4) + max(
        block_constant_bytes(tgt, setup.seq_len, layer) for layer in range(tgt.num_layers)
    )
    produced = w * (block + src.num_layers * src_block)
    if setup.fit_checkpointing == "none":
        kept = tgt.num_layers * (one_block + produced)
        block_moment = 0
    else:
        el, el32 = block_activation_elements(tgt, setup.fit_checkpointing)
        kept = tgt.num_layers * n * (el * w + el32 * 4)
        block_moment = produced + one_block + w * block * twice  # and the next block's prefetch
    head_moment = twice * w * v * d1 + 8 * min(n, setup.loss_chunk) * v + n * (d1 + d2) * w
    export = w * v * d2 + twice * w * v * d1
    terms["activations"] = (kept, 0)
    terms["working"] = (max(head_moment, block_moment, export), 0)
    device, host = _place(terms, setup)
    if setup.device == "cpu":
        device["runtime"] += FIT_RUNTIME
    else:
        host["runtime"] += FIT_RUNTIME
    tokens = n * world
    flops = (train_flops_per_token(tgt, setup.seq_len) + vocab_flops) * tokens + op_flops * world
    return Phase("fit", device, host, flops, _seconds(flops, setup))


def plan(tgt: ModelConfig, src: ModelConfig | None, setup: Setup, order: str = "paper") -> list[Phase]:
    phases = [] if src is None else [fit_phase(src, tgt, setup, order)]
    return [*phases, pretrain_phase(tgt, setup)]


def load_zero(name: str, what: str) -> Zero:
    """The memory knobs of a DeepSpeed JSON or preset; `what`: where its name came from (its flag)."""
    p = ds_config_path(name, what)
    try:
        return Zero.from_config(json.loads(p.read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{what} {name}: cannot read it as JSON ({e})") from e


# ---- what would fit --------------------------------------------------------------------------------------


def alternatives(setup: Setup) -> list[tuple[dict, Setup]]:
    """Changes a user can make, cheapest first, each as (the options changed, by name, and the setup). A
    DeepSpeed preset is planned with its own knobs, as the ds_config option naming it would run it."""
    z3, offload = load_zero("zero3", "preset"), load_zero("zero3_offload", "preset")
    out: list[tuple[dict, Setup]] = []
    if setup.checkpointing != "full":
        out.append(({"activation_checkpointing": "full"}, replace(setup, checkpointing="full")))
    if setup.zero.stage < 3:
        out.append(({"ds_config": "zero3"}, replace(setup, zero=z3)))
    if not setup.zero.offload_optimizer:
        out.append(({"ds_config": "zero3_offload"}, replace(setup, zero=offload)))
    for n in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024):
        if n > setup.world_size:
            out.append(({"ds_config": "zero3", "world_size": n}, replace(setup, zero=z3, world_size=n)))
    micro = setup.micro_batch
    while micro > 1:
        micro //= 2
        smaller = replace(setup, micro_batch=micro, fit_micro_batch=min(micro, setup.fit_micro_batch))
        out.append(({"micro_batch": micro}, smaller))
    return out


def check_fits(phases: list[Phase], limit: int | None, rebuild, setup: Setup, spell) -> None:
    """Refuse a plan whose device memory exceeds `limit` bytes per rank, naming what would fit; `spell`
    writes a change of options (alternatives) as the user's command line would give it."""
    if limit is None:
        return
    over = [p for p in phases if p.device_total > limit]
    if not over:
        return
    worst = max(over, key=lambda p: p.device_total)
    fixes = []
    for changes, alt in alternatives(setup):
        need = max(p.device_total for p in rebuild(alt))
        if need <= limit:
            fixes.append(f"{spell(changes)} ({need / GiB:.1f} GiB)")
        if len(fixes) == 3:
            break
    tried = "activation checkpointing, ZeRO-3, offload, up to 1024 ranks, micro-batch 1"
    would = "; it would fit with " + ", or ".join(fixes) if fixes else f"; nothing tried fits ({tried})"
    raise ConfigError(
        f"does not fit: {worst.name} needs {worst.device_total / GiB:.1f} GiB per rank, more than the "
        f"{limit / GiB:g} GiB given{would}"
    )


# ---- the table -------------------------------------------------------------------------------------------


def _gib(b: int) -> str:
    return f"{b / GiB:.2f}"


def render(phases: list[Phase], setup: Setup, sizes: dict[str, int]) -> str:
    where = "CPU (device = host)" if setup.device == "cpu" else "GPU"
    lines = [
        ", ".join(f"{k} {v:,}" for k, v in sizes.items()),
        f"{setup.world_size} ranks on {where}, ZeRO-{setup.zero.stage}"
        + (" (optimizer offloaded)" if setup.zero.offload_optimizer else "")
        + f", {setup.dtype}, micro-batch {setup.micro_batch} (fit {setup.fit_micro_batch}) x {setup.seq_len} tokens, "
        f"activation checkpointing {setup.checkpointing} (fit {setup.fit_checkpointing})",
        "",
        "| phase | " + " | ".join(TERMS) + " | device per rank (GiB) | host per rank (GiB) | TFLOPs per step | "
        f"s per step at {setup.mfu:.0%} MFU |",
        "|---" * (len(TERMS) + 5) + "|",
    ]
    for p in phases:
        secs = "n/a (no peak: --peak-tflops)" if p.seconds_per_step is None else f"{p.seconds_per_step:.3g}"
        cells = [_gib(p.device.get(t, 0) + p.host.get(t, 0)) for t in TERMS]
        lines.append(
            f"| {p.name} | " + " | ".join(cells) + f" | {_gib(p.device_total)} | {_gib(p.host_total)} | "
            f"{p.flops_per_step / 1e12:.3g} | {secs} |"
        )
    runtime = (
        "runtime (torch, DeepSpeed) included in the device column"
        if setup.device == "cpu"
        else (
            f"host includes {_gib(RUNTIME_HOST['cuda'])} GiB of runtime; the device column is what torch allocates "
            "(the CUDA context, about 0.5 GiB, comes on top)"
        )
    )
    lines += ["", f"terms are per rank, in GiB, on whichever side holds them; {runtime}"]
    return "\n".join(lines)
