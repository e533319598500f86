"""What a run holds per rank, as closed forms in the shapes: the terms `ligo-ds plan` adds up (plan.py).

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

from dataclasses import dataclass

from ..errors import ConfigError
from ..model.config import ModelConfig

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
# The fit also imports transformers (hf_load reads the source through its model classes).
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
    # Each norm before a sublayer keeps its input and output (an RMSNorm also its normalised input, for the
    # weight's gradient) and its statistics in fp32 (a parallel block's two share their input); a norm after
    # a sublayer (Gemma's) its input and normalised input, its output going into the residual add; attention
    # keeps the fused qkv, RoPE's rotated q and k, its output (the heads' reshape is a view of it) and its
    # log-sum-exp; the MLP its up projection and what the activation (and, gated, the product) gives.
    rms = cfg.norm in ("rmsnorm", "rmsnorm_1p")
    norms = 2 * (2 * d + (d if rms else 0)) - (d if cfg.residual == "parallel" else 0)
    post_norms = 2 * 2 * d if cfg.residual == "sandwich" else 0
    stats = 2 * (1 if rms else 2) + (2 if cfg.residual == "sandwich" else 0)
    attn = (q + 2 * k) + (q + k if cfg.positions == "rope" else 0) + q
    # q/k norms keep what they give RoPE (their input is a view of qkv) and an fp32 statistic per row: per
    # head ("head") or per token ("full").
    qk_norm = (q + k) if cfg.qk_norm else 0
    qk_rows = {None: 0, "head": cfg.num_heads + cfg.num_kv_heads, "full": 2}[cfg.qk_norm]
    mlp = 2 * mlp_in
    return norms + post_norms + attn + qk_norm + mlp, stats + cfg.num_heads + qk_rows


def block_constant_bytes(cfg: ModelConfig, seq_len: int, layer: int = 0) -> int:
    """What block `layer` keeps whatever the batch: a sliding window's attention mask, made per block (T x T,
    kept by attention as an fp32 additive mask) when the sequence is longer than the window (at 4096 tokens,
    64 MiB a block), and each (1 + w) norm's fp32 scale (Gemma's)."""
    window = cfg.window(layer)
    mask = 4 * seq_len * seq_len if window is not None and seq_len > window else 0
    scales = cfg.norms_per_block * cfg.hidden_size + cfg.q_norm_size + cfg.k_norm_size
    return mask + (4 * scales if cfg.norm_offset else 0)


def activation_bytes(
    cfg: ModelConfig, batch: int, seq_len: int, checkpointing: str, act_bytes: int, loss_chunk: int
) -> int:
    """What a forward keeps for its backward, at its largest: every block's share, one block's activations
    again while the backward recomputes it (checkpointing), the final norm's input and output, and the
    chunked head's peak: one chunk's fp32 logits and log-probabilities plus the head's fp32 gradient
    (compute.chunked_lm_loss computes it during the forward)."""
    tokens = batch * seq_len
    constants = [block_constant_bytes(cfg, seq_len, layer) for layer in range(cfg.num_layers)]
    kept, kept32 = block_activation_elements(cfg, checkpointing)
    blocks = cfg.num_layers * tokens * (kept * act_bytes + kept32 * 4) + (
        sum(constants) if checkpointing == "none" else 0
    )
    if checkpointing != "none":
        again, again32 = block_activation_elements(cfg, "none")
        blocks += tokens * (again * act_bytes + again32 * 4) + max(constants)
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
    small = [d] * (cfg.norms_per_block * cfg.num_layers + 1) * (2 if cfg.norm_bias else 1)
    small += [cfg.q_size + 2 * cfg.kv_size] * cfg.num_layers * cfg.qkv_bias + [d] * cfg.num_layers * cfg.out_bias
    small += [cfg.q_norm_size, cfg.k_norm_size] * cfg.num_layers * (cfg.qk_norm is not None)
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
