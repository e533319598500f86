"""`ligo-ds plan`: what a fit and a pretraining run hold per rank, and how long a step takes, before a job
is queued. From config.json files alone: no weights are read, nothing is built but the operator on the
meta device (for its exact size and FLOPs).

Memory per rank is a sum of named terms, each a closed form in the shapes (P trainable parameters, F frozen
ones, N data-parallel ranks, w the weights' bytes: 2 in bf16, 4 in fp32):

    weights      ZeRO-1/2: w(P + F)             ZeRO-3: w(P + F)/N, plus parameters below the persistence
                                                threshold (norms, biases) kept whole on every rank
    gradients    ZeRO-1: wP (every rank reduces the whole gradient)      ZeRO-2/3: wP/N
    optimizer    16P/N: DeepSpeed's fp32 master partition (kept in fp32 training too), the fp32 gradient
                 partition the step reads, and AdamW's two fp32 moments
    buffers      the gradient-reduction bucket (contiguous gradients) and, under ZeRO-3, the largest module
                 gathered whole plus the prefetch bucket
    activations  what the blocks keep for the backward (--activation-checkpointing: every block's
                 activations, only each block's input plus one block's again in the backward, or the
                 matmul and attention outputs), plus the chunked head's logits and its fp32 gradient
    working      the fit only: one target block's weights produced from the operator, the produced
                 embedding and head with their gradients, and the source layers the production reads
    runtime      what the process holds before any model exists (torch, DeepSpeed, its comm ops): a
                 measured constant, not a formula

Offloading (`offload_optimizer`, `offload_param` in the DeepSpeed JSON) moves the optimizer (and the fp32
gradient partition) or the weights to host memory. With `--device cpu` the device is the host, and the two
columns add up: that is how the tests check the plan against a CPU run's peak resident set.

Per block and token, the activations kept without checkpointing (block_activation_elements: D hidden,
Q = heads x head_dim, K = kv heads x head_dim, I the MLP width; each storage counted once, however many
ops read it) are exactly what autograd saves in this project's blocks: tests/test_plan.py counts them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache

from ..errors import ConfigError
from ..model.config import ModelConfig
from ..training.flops import train_flops_per_token

GiB = 2**30
DTYPE_BYTES = {"bf16": 2, "fp32": 4}
# A process's resident memory before any model exists: torch, DeepSpeed and its shared-memory comm op on
# the CPU (measured on this project's CPU runs, bench/plan.py); torch, CUDA's libraries and DeepSpeed on a
# GPU node's host. The device side of a GPU is what torch allocates (max_memory_allocated), so the CUDA
# context (about 0.5 GiB) is left out of it and named in the report instead.
RUNTIME_HOST = {"cpu": 0.40 * GiB, "cuda": 2.0 * GiB}
# DeepSpeed's defaults for the knobs read here (deepspeed/runtime/zero/config.py, 0.19.8).
ZERO_DEFAULTS = {
    "reduce_bucket_size": 500_000_000,
    "allgather_bucket_size": 500_000_000,
    "stage3_prefetch_bucket_size": 50_000_000,
    "stage3_max_live_parameters": 1_000_000_000,
    "stage3_param_persistence_threshold": 100_000,
    "contiguous_gradients": True,
}
# The fit also imports transformers (hf_io reads the source through its model classes).
FIT_RUNTIME = 0.07 * GiB
TERMS = ("weights", "gradients", "optimizer", "buffers", "activations", "working")


@dataclass(frozen=True)
class Zero:
    """The DeepSpeed JSON's knobs that set memory."""

    stage: int
    reduce_bucket: int
    prefetch_bucket: int
    max_live: int
    persistence_threshold: int
    contiguous_gradients: bool
    overlap_comm: bool
    offload_optimizer: bool
    offload_param: bool

    @classmethod
    def from_config(cls, ds: dict) -> Zero:
        z = {**ZERO_DEFAULTS, **ds.get("zero_optimization", {})}
        stage = int(z.get("stage", 0))
        if stage not in (1, 2, 3):
            raise ConfigError(f"zero_optimization.stage {stage}: ligo_ds plans ZeRO stages 1, 2 and 3")

        def off(key: str) -> bool:
            return (z.get(key) or {}).get("device", "none") not in ("none", None)

        return cls(
            stage=stage,
            reduce_bucket=int(z["reduce_bucket_size"]),
            prefetch_bucket=int(z["stage3_prefetch_bucket_size"]),
            max_live=int(z["stage3_max_live_parameters"]),
            persistence_threshold=int(z["stage3_param_persistence_threshold"]),
            contiguous_gradients=bool(z["contiguous_gradients"]),
            overlap_comm=bool(z.get("overlap_comm", stage == 3)),  # DeepSpeed's default
            offload_optimizer=off("offload_optimizer"),
            offload_param=off("offload_param"),
        )


# ---- the closed forms --------------------------------------------------------------------------------------


def block_activation_elements(cfg: ModelConfig, checkpointing: str) -> tuple[int, int]:
    """(elements in the activations' dtype, fp32 elements) one block keeps per token for its backward."""
    d, q, k, i = cfg.hidden_size, cfg.q_size, cfg.kv_size, cfg.intermediate_size
    mlp_in = i * (2 if cfg.gated_mlp else 1)
    if checkpointing == "full":
        return d, 0  # the block's input; the block is recomputed in the backward
    if checkpointing == "selective":
        # the input, and the outputs compute.SAVED_OPS names: qkv, attention (and its log-sum-exp), the
        # output projection, the up and down projections
        return d + (q + 2 * k) + q + d + mlp_in + d, cfg.num_heads
    # Each norm keeps its input and output (an RMSNorm also its normalised input, for the weight's gradient)
    # and its statistics in fp32; attention keeps the fused qkv, RoPE's rotated q and k, its output (the
    # heads' reshape is a view of it) and its log-sum-exp; the MLP its up projection and what the activation
    # (and, gated, the product) gives.
    rms = cfg.norm == "rmsnorm"
    norms = 2 * (2 * d + (d if rms else 0))
    attn = (q + 2 * k) + (q + k if cfg.positions == "rope" else 0) + q
    mlp = 2 * mlp_in
    return norms + attn + mlp, 2 * (1 if rms else 2) + cfg.num_heads


def window_mask_bytes(cfg: ModelConfig, seq_len: int) -> int:
    """A sliding-window model's attention mask, made per block (T x T, kept by attention as an fp32 additive
    mask) when the sequence is longer than the window: at 4096 tokens, 64 MiB a block."""
    return 4 * seq_len * seq_len if cfg.sliding_window is not None and seq_len > cfg.sliding_window else 0


def activation_bytes(
    cfg: ModelConfig, batch: int, seq_len: int, checkpointing: str, act_bytes: int, loss_chunk: int
) -> int:
    """What a forward keeps for its backward, at its largest: every block's share, one block's activations
    again while the backward recomputes it (checkpointing), the final norm's input and output, and the
    chunked head's peak: one chunk's fp32 logits and log-probabilities plus the head's fp32 gradient
    (compute.chunked_lm_loss computes it during the forward)."""
    tokens, mask = batch * seq_len, window_mask_bytes(cfg, seq_len)
    kept, kept32 = block_activation_elements(cfg, checkpointing)
    blocks = cfg.num_layers * (tokens * (kept * act_bytes + kept32 * 4) + (mask if checkpointing == "none" else 0))
    if checkpointing != "none":
        again, again32 = block_activation_elements(cfg, "none")
        blocks += tokens * (again * act_bytes + again32 * 4) + mask
    d, v = cfg.hidden_size, cfg.vocab_size
    head = 2 * min(tokens, loss_chunk) * v * 4 + v * d * 4
    return blocks + 2 * tokens * d * act_bytes + head


def largest_module(cfg: ModelConfig) -> int:
    """Parameters of the largest module ZeRO-3 gathers at once: the embedding (or head), or one linear."""
    d = cfg.hidden_size
    mlp_up = d * cfg.intermediate_size * (2 if cfg.gated_mlp else 1)
    return max(cfg.vocab_size * d, mlp_up, d * (cfg.q_size + 2 * cfg.kv_size))


def persistent_params(cfg: ModelConfig, threshold: int) -> int:
    """Parameters ZeRO-3 keeps whole on every rank: tensors of at most `threshold` elements (norms, biases)."""
    d = cfg.hidden_size
    small = [d] * (2 * cfg.num_layers + 1) * (2 if cfg.norm_bias else 1)
    small += [cfg.q_size + 2 * cfg.kv_size] * cfg.num_layers * cfg.qkv_bias + [d] * cfg.num_layers * cfg.out_bias
    if cfg.mlp_bias:
        small += [cfg.intermediate_size * (2 if cfg.gated_mlp else 1), d] * cfg.num_layers
    return sum(n for n in small if n <= threshold)


def zero_states(trainable: int, frozen: int, zero: Zero, world: int, w: int, device: str) -> dict[str, tuple[int, int]]:
    """weights, gradients, optimizer and the gradient buckets: term -> (device bytes, host bytes) per rank.

    As DeepSpeed 0.19.8 allocates them (bench/plan.py's probe lists the live tensors of a step):
      ZeRO-1/2  the flat weights, whole; the gradient bucket (reduce_bucket_size elements, two with
                overlap_comm; fp32 under ZeRO-1, which accumulates there); ZeRO-2's gradient partition
      ZeRO-3    the weight partition; the gradient partition; one flat gradient bucket
      all       the fp32 master partition and AdamW's two moments (12P/N), and at the step the fp32
                gradient partition the optimizer reads (4P/N; under ZeRO-3 in fp32 training, the
                partition itself)
    On the CPU a bucket counts only the pages gradients are written to (at most the model's size):
    torch.empty's untouched pages are not resident.
    """

    def per_rank(n: int) -> int:
        return -(-n // world)

    params = trainable + frozen
    weights = w * params if zero.stage < 3 else per_rank(w * params)
    fp32_step = per_rank(4 * trainable)
    # ZeRO-1 reduces into its fp32 bucket and hands the step an fp32 partition; ZeRO-2/3 keep a partition in
    # the weights' dtype, and the step reads an fp32 copy of it unless that is what it already is
    grads = fp32_step if zero.stage == 1 else per_rank(w * trainable) + (fp32_step if w < 4 else 0)
    bucket_bytes = 4 if zero.stage == 1 else w
    buckets = 1 if zero.stage == 3 or not zero.overlap_comm else 2
    elements = zero.reduce_bucket * buckets if zero.stage == 3 or zero.contiguous_gradients else 0
    if device == "cpu":
        elements = min(elements, trainable)
    return {
        "weights": (0, weights) if zero.offload_param else (weights, 0),
        "gradients": (0, grads) if zero.offload_optimizer else (grads, 0),
        "optimizer": (0, per_rank(12 * trainable)) if zero.offload_optimizer else (per_rank(12 * trainable), 0),
        "buffers": (bucket_bytes * elements, 0),
    }


def zero3_gathered(largest: int, total: int, zero: Zero, w: int) -> int:
    """Bytes of parameters gathered whole at a time under ZeRO-3: the `largest` module's and what the
    prefetch bucket fetches ahead (never more than the `total`, nor than stage3_max_live_parameters)."""
    ahead = min(zero.prefetch_bucket, total - largest)
    return w * min(zero.max_live, largest + ahead)


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
    from ..growth import meta_operator
    from ..growth.spec import GrowthSpec
    from ..training.flops import operator_flops, vocab_flops_per_token

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
    from ..distributed.ds_config import MIN_SUB_GROUP, fit_zero3_bounds

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
    one_block = n * (none_el * w + none32 * 4) + window_mask_bytes(tgt, setup.seq_len)
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


def load_zero(path: str) -> Zero:
    from ..distributed.ds_config import ds_config_path

    p = ds_config_path(path)
    try:
        return Zero.from_config(json.loads(p.read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"--ds-config {path}: cannot read it as JSON ({e})") from e


# ---- what would fit --------------------------------------------------------------------------------------


def alternatives(setup: Setup) -> list[tuple[str, Setup]]:
    """Changes a user can make, cheapest first, each as (the flags, the setup). A DeepSpeed preset is
    planned with its own knobs, as `--ds-config PRESET` would run it."""
    z3, offload = load_zero("zero3"), load_zero("zero3_offload")
    out = []
    if setup.checkpointing != "full":
        out.append(("--activation-checkpointing full", replace(setup, checkpointing="full")))
    if setup.zero.stage < 3:
        out.append(("--ds-config zero3", replace(setup, zero=z3)))
    if not setup.zero.offload_optimizer:
        out.append(("--ds-config zero3_offload", replace(setup, zero=offload)))
    for n in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024):
        if n > setup.world_size:
            out.append((f"--ds-config zero3 --world-size {n}", replace(setup, zero=z3, world_size=n)))
    micro = setup.micro_batch
    while micro > 1:
        micro //= 2
        smaller = replace(setup, micro_batch=micro, fit_micro_batch=min(micro, setup.fit_micro_batch))
        out.append((f"--micro-batch {micro}", smaller))
    return out


def check_fits(phases: list[Phase], limit: int | None, rebuild, setup: Setup) -> None:
    """Refuse a plan whose device memory exceeds `limit` bytes per rank, naming what would fit."""
    if limit is None:
        return
    over = [p for p in phases if p.device_total > limit]
    if not over:
        return
    worst = max(over, key=lambda p: p.device_total)
    fixes = []
    for flags, alt in alternatives(setup):
        need = max(p.device_total for p in rebuild(alt))
        if need <= limit:
            fixes.append(f"{flags} ({need / GiB:.1f} GiB)")
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
