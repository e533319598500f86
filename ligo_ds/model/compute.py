"""How the forward and backward run, memory against speed: activation checkpointing per block, the LM head
and its loss over chunks of tokens, and torch.compile per block (the Compute block's options).

None of them changes what is computed beyond float rounding, so none is part of a run's identity: a run
may switch any of them when it resumes.

Shape legend: N tokens (batch x time, flattened), C tokens in a chunk, D hidden, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from ..options import Block, at_least, option

CHECKPOINTING = ("none", "full", "selective")

# Tokens per chunk of the LM head + loss. A chunk's fp32 logits and log-probabilities (turned into their
# gradient in place) take 8 * C * V bytes: 1 GiB at a 128k vocabulary, where whole-batch fp32 logits, their
# log-softmax and its gradient take 12 * N * V (47 GiB for 8 x 4096 tokens; bench/README.md measures
# both). 1024 rows keep the head's matmuls large enough to run at full speed.
LOSS_CHUNK = 1024


@dataclass(frozen=True, kw_only=True)
class Compute(Block):
    """How the forward and backward run: memory against speed. None of these changes the numbers beyond float
    rounding, so none is part of a run's identity: a resumed run may switch them."""

    activation_checkpointing: str = option(
        "none",
        "what each block keeps for the backward: everything (none), only its input, recomputing the block "
        "(full), or its matmul and attention outputs, recomputing norms, activations and rope (selective)",
        choices=CHECKPOINTING,
        identity=False,
    )
    loss_chunk: int = option(
        LOSS_CHUNK,
        "tokens per chunk of the LM head and loss: no more than this many tokens' logits exist at once",
        check=at_least(1),
        identity=False,
    )
    compile: bool = option(
        False, "torch.compile each block's forward (needs a C++ compiler on the CPU)", identity=False
    )


_aten = torch.ops.aten
# What selective checkpointing keeps of a block: the outputs of its matmuls and of attention, the ops
# whose recomputation costs FLOPs. Norms, activations, rope and residual adds are recomputed in the
# backward from those (they cost memory traffic only). Every SDPA kernel is listed: which one runs
# depends on the device, the dtype and the mask.
SAVED_OPS = {
    getattr(_aten, name).default
    for name in (
        "mm",
        "addmm",
        "bmm",
        "baddbmm",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable",
    )
    if hasattr(_aten, name)
}


def save_matmuls(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """The selective checkpointing policy: keep SAVED_OPS' outputs, recompute everything else. A plain
    function, so that torch.compile can trace a checkpoint that uses it (an object would break the graph)."""
    return CheckpointPolicy.MUST_SAVE if op in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


class Selective:
    """save_matmuls while `on`; off, everything is recomputed. For the fit, whose checkpoint is not compiled.

    The fit starts it off and turns it on only around a block's own computation (`saving`), so the
    operator's production of the block's weights, matmuls too, is recomputed in the backward: keeping
    those outputs would keep every block's weights, which is what checkpointing the fit's blocks avoids.
    """

    def __init__(self, on: bool = True):
        self.on = on

    def __call__(self, ctx, op, *args, **kwargs) -> CheckpointPolicy:
        return save_matmuls(ctx, op) if self.on else CheckpointPolicy.PREFER_RECOMPUTE

    @contextmanager
    def saving(self) -> Iterator[None]:
        was, self.on = self.on, True
        try:
            yield
        finally:
            self.on = was


def checkpointed(mode: str, fn: Callable, *args, policy: Callable = save_matmuls):
    """fn(*args) under activation checkpointing `mode`: none keeps whatever fn's backward needs; full keeps
    only the arguments and reruns fn in the backward; selective keeps what `policy` says and reruns the
    rest. Without grad mode (evaluation) nothing is kept anyway."""
    if mode == "none" or not torch.is_grad_enabled():
        return fn(*args)
    if mode == "full":
        return checkpoint(fn, *args, use_reentrant=False)
    assert mode == "selective", mode
    context = partial(create_selective_checkpoint_contexts, policy)
    return checkpoint(fn, *args, use_reentrant=False, context_fn=context)


def compile_forward(module: nn.Module) -> None:
    """torch.compile `module.forward` in place. Unlike nn.Module.compile, the module's hooks (ZeRO-3's
    parameter gathers) stay outside the compiled code, and the parameter names stay what they were."""
    module.forward = torch.compile(module.forward)


# ---- the LM head and loss over chunks of tokens -------------------------------------------------------


class _ChunkedLMLoss(torch.autograd.Function):
    """Mean cross-entropy of (h @ w.T) against targets, a chunk of rows at a time. The gradients are
    computed in the forward, chunk by chunk, so no logits outlive their chunk: the backward only scales
    them. Each chunk's logits are computed in the compute dtype (as the plain head does), then in fp32
    for the log-softmax; the head's gradient is summed over chunks in fp32."""

    @staticmethod
    def forward(ctx, h_ND, w_VD, targets_N, chunk, grad_h, grad_w):
        N = h_ND.shape[0]
        loss_N = torch.empty(N, dtype=torch.float32, device=h_ND.device)
        dh_ND = torch.empty_like(h_ND) if grad_h else None
        dw_VD = torch.zeros(w_VD.shape, dtype=torch.float32, device=w_VD.device) if grad_w else None
        for start in range(0, N, chunk):
            rows = slice(start, start + chunk)
            loss_N[rows] = _ChunkedLMLoss.chunk(h_ND[rows], w_VD, targets_N[rows], N, dh_ND, rows, dw_VD)
        ctx.w_dtype = w_VD.dtype
        ctx.save_for_backward(dh_ND, dw_VD)
        # Summed in float64: the CPU's F.cross_entropy sums exactly enough for a float32 sum to differ from it
        # by an ulp of the loss (1e-6 at a loss of 10); this agrees with it bit for bit there.
        return (loss_N.sum(dtype=torch.float64) / N).float()

    @staticmethod
    def chunk(h_CD, w_VD, t_C, N: int, dh_ND, rows: slice, dw_VD) -> torch.Tensor:
        """One chunk's token losses; its gradients written into dh_ND[rows] and added to dw_VD (either may
        be None). A function of its own so that the chunk's logits are freed before the next chunk's exist."""
        # F.cross_entropy's own log-softmax kernel, so each token's loss is the one it computes
        logp_CV = torch.log_softmax((h_CD @ w_VD.T).float(), dim=-1)
        loss_C = -logp_CV.gather(1, t_C[:, None]).squeeze(1)
        if dh_ND is None and dw_VD is None:
            return loss_C
        # d(mean loss)/d logits = (softmax - onehot) / N, written over the chunk's log-probabilities
        g_CV = logp_CV.exp_()
        g_CV[torch.arange(len(t_C), device=t_C.device), t_C] -= 1
        g_CV = g_CV.div_(N).to(h_CD.dtype)
        if dh_ND is not None:
            dh_ND[rows] = g_CV @ w_VD
        if dw_VD is not None:
            dw_VD += (g_CV.T @ h_CD).float()
        return loss_C

    @staticmethod
    def backward(ctx, grad_loss):
        dh_ND, dw_VD = ctx.saved_tensors
        dh = None if dh_ND is None else dh_ND * grad_loss.to(dh_ND.dtype)
        dw = None if dw_VD is None else (dw_VD * grad_loss).to(ctx.w_dtype)
        return dh, dw, None, None, None, None


def chunked_lm_loss(h_BTD: torch.Tensor, w_VD: torch.Tensor, targets_BT: torch.Tensor, chunk: int) -> torch.Tensor:
    """Mean next-token cross-entropy of the head `w_VD` on hidden states `h_BTD`, as
    model.lm_loss(F.linear(h, w), targets) computes it, without ever holding the whole batch's logits.
    Under ZeRO-3 call it where `w_VD` is gathered: inside the head module's forward (model.LMHead)."""
    grad = torch.is_grad_enabled()
    return _ChunkedLMLoss.apply(
        h_BTD.flatten(0, 1),
        w_VD,
        targets_BT.flatten(),
        chunk,
        grad and h_BTD.requires_grad,
        grad and w_VD.requires_grad,
    )
