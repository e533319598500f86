"""Training FLOPs and MFU: one axis on which scratch and grown runs compare.

Per trained token (forward + backward = 3 x forward):

    flops_per_token = 6 * N_matmul + 12 * L * T * d_attn

N_matmul counts the parameters that take part in matrix products: every block weight and the LM head
(tied or not; the head is a real V x D product, and for small models with large vocabularies it is most
of the compute). Embedding and position lookups cost no FLOPs and are left out, as are norms and biases'
elementwise work. The second term is attention's QK^T and AV products, 2 * 2 * T * d_attn per layer
and token forward, counted over the full T x T square (the PaLM convention, which is what MFU figures
are usually quoted against), with d_attn = heads x head_dim.

A LiGO fit step adds the operator's own work, `operator_flops`: producing every large weight and
back-propagating into the coefficients, counted by running it once; and per token `vocab_flops_per_token`,
what the fit's embedding and head cost beyond the large model's head (negative: the fit never produces the
vocabulary x D2 matrices and runs its head at the source's width, growth/operator.py LiGOOperator.head).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..model.config import ModelConfig

if TYPE_CHECKING:
    from ..growth import LiGOOperator


def matmul_params(cfg: ModelConfig) -> int:
    d, f = cfg.hidden_size, cfg.intermediate_size
    attn = d * (cfg.q_size + 2 * cfg.kv_size) + cfg.q_size * d
    mlp = d * f * (3 if cfg.gated_mlp else 2)
    return cfg.num_layers * (attn + mlp) + cfg.vocab_size * d


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    return 6 * matmul_params(cfg) + 12 * cfg.num_layers * seq_len * cfg.q_size


def forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    return train_flops_per_token(cfg, seq_len) // 3


def operator_flops(operator: LiGOOperator) -> int:
    """FLOPs of one fit step's own work beyond the large model's: producing all its weights once, forward,
    and back-propagating into the operator's coefficients.

    Counted as torch's FlopCounterMode counts matrix products, by running one production and its backward,
    so nothing is assumed about the backward's cost: it is not the usual 2x the forward, because no
    gradient flows into the frozen source weights (about 1.2x for a learned width expansion), but the
    'inverse' tying's Gram products add to it. Every target block costs the same, so one block is counted
    and multiplied. As with training FLOPs, what block checkpointing recomputes is not counted, nor are
    the inverse tying's small solves.
    """
    learned = [p for p in operator.parameters() if p.requires_grad]

    def count(produce) -> int:
        # autograd.grad, not backward: the gradients are returned and dropped, so no .grad is touched.
        with torch.enable_grad(), FlopCounterMode(display=False) as counter:
            tensors = [t for t in produce().values() if t.requires_grad]
            torch.autograd.grad(tensors, learned, [torch.ones_like(t) for t in tensors], allow_unused=True)
        return counter.get_total_flops()

    blocks = operator.tgt.num_layers * count(lambda: operator.block(0, operator.depth()))
    residual = count(lambda: operator.residual(groups=operator.vocab_groups()))  # what embed and head read
    return count(lambda: operator.global_weights(vocab=False)) + residual + blocks


def vocab_flops_per_token(operator: LiGOOperator) -> int:
    """Per trained token, the fit's embedding and head less the large model's head (6 V D2, counted in
    train_flops_per_token). The fit widens each token's embedding row (2 D1 D2, and as much again for the
    residual matrix's gradient), takes the head's input to the source's width, h M (2 D2 D1; its backward
    twice that), and runs the source's head on it (2 V D1, and its input gradient as much again: the
    source's matrix is frozen)."""
    d1, d2, v = operator.src.hidden_size, operator.tgt.hidden_size, operator.tgt.vocab_size
    return 4 * d1 * d2 + 6 * d2 * d1 + 4 * v * d1 - 6 * v * d2


# Dense bf16 tensor-core peaks from vendor datasheets, matched as substrings of the device name.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 125.0,
    "L4": 121.0,
    "V100": 125.0,
}


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    """Peak FLOP/s for MFU: the user's figure, else the table's, else None (no MFU reported)."""
    if override_tflops:
        return override_tflops * 1e12
    for key, tflops in PEAK_TFLOPS.items():
        if key in device_name:
            return tflops * 1e12
    return None
