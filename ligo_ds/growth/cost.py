"""What the LiGO operator costs on top of the large model's own training FLOPs (training/flops.py), per fit
step: `operator_flops`, producing every large weight and back-propagating into the coefficients, counted by
running it once; and per token `vocab_flops_per_token`, what the fit's embedding and head cost beyond the
large model's head (negative: the fit never produces the vocabulary x D2 matrices and runs its head at the
source's width, operator.py LiGOOperator.head).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .operator import LiGOOperator


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
