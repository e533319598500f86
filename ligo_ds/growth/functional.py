"""The growth math: a few pure tensor functions.

LiGO maps small weights to large ones linearly, factored into width and depth:
  width  W' = B W A^T        B expands the output side, A the input side (both D2 x D1)
  depth  W'_i = sum_j w[i, j] W_j     one L2 x L1 matrix per module kind
Head-structured expansions act on whole heads: B = E kron I_head_dim with E (H2 x H1), which commutes
with RoPE (it never mixes the rotary pairs inside a head) and keeps heads intact.

Shape legend: O out dim, I in dim, L layers (S source, T target), H heads, E head_dim.
"""

from __future__ import annotations

import torch


def expand(w_OI: torch.Tensor, out_B: torch.Tensor | None, in_A: torch.Tensor | None) -> torch.Tensor:
    """B W A^T for a matrix, B W for a vector (bias, norm weight); None leaves that side unchanged."""
    if out_B is not None:
        w_OI = out_B @ w_OI
    if in_A is not None:
        assert w_OI.dim() == 2, "a vector has no input side"
        w_OI = w_OI @ in_A.T
    return w_OI


def expand_rows(x: torch.Tensor, in_A: torch.Tensor) -> torch.Tensor:
    """x A^T over the last dim of x (any leading dims): rows of W, expanded as expand(W, None, A) would."""
    return (x.flatten(0, -2) @ in_A.T).unflatten(0, x.shape[:-1])


def expand_heads(w: torch.Tensor, e_HH: torch.Tensor, head_dim: int, dim: int) -> torch.Tensor:
    """Apply (E kron I_head_dim) along `dim` of `w` without materialising the Kronecker product.

    `dim` has size H1 * head_dim and becomes H2 * head_dim; new head a = sum_b E[a, b] * old head b.
    """
    h2, h1 = e_HH.shape
    w = w.movedim(dim, 0)
    rest = w.shape[1:]
    assert w.shape[0] == h1 * head_dim, f"dim {dim} has {w.shape[0]} rows, expected {h1} heads x {head_dim}"
    out = torch.einsum("ab,be...->ae...", e_HH, w.reshape(h1, head_dim, *rest))
    return out.reshape(h2 * head_dim, *rest).movedim(0, dim)


def mix_depth(w_TS: torch.Tensor, stack_S: torch.Tensor, layer: int) -> torch.Tensor:
    """Target layer `layer` as the w-weighted sum of the source layers stacked along dim 0."""
    return torch.einsum("s,s...->...", w_TS[layer], stack_S)


def left_inverse(b: torch.Tensor) -> torch.Tensor:
    """A = B (B^T B)^-1, so that A^T B = I: a consumer reading through A sees exactly what the producer
    wrote through B, for any B of full column rank. For a 0/1 selection it is B divided by copy counts."""
    gram = b.T @ b
    return torch.linalg.solve(gram, b.T).T


def query_to_kv_heads(e_kv: torch.Tensor, heads_src: int, heads_tgt: int) -> torch.Tensor:
    """Spread a key-value head expansion (K2 x K1) to the query heads that read those kv heads (H2 x H1).

    Query head i of the target reads kv head i // (H2/K2) and sits at position (i mod H2/K2) within its
    group; it takes old query head j when j's group corresponds by e_kv and the positions match (modulo
    the old group size). This is the input side of attention-out: the attention output of head i carries
    the values of its kv head. With one head per group (MHA) it is e_kv itself.
    """
    k2, k1 = e_kv.shape
    g2, g1 = heads_tgt // k2, heads_src // k1
    i = torch.arange(heads_tgt, device=e_kv.device)
    j = torch.arange(heads_src, device=e_kv.device)
    same_slot = ((i[:, None] % g2) % g1) == (j[None, :] % g1)
    return e_kv[i // g2][:, j // g1] * same_slot.to(e_kv.dtype)
