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


def expand_heads(
    w: torch.Tensor, e_HH: torch.Tensor, head_dim: int, dim: int, p_EE: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply (E kron P) along `dim` of `w` without materialising the Kronecker product: E (H2 x H1) mixes
    whole heads, P (E2 x E1) places each dim of a head in a wider one (rotary.py; the identity when None).

    `dim` has size H1 * head_dim and becomes H2 * E2; new head a = sum_b E[a, b] * P old head b.
    """
    h2, h1 = e_HH.shape
    w = w.movedim(dim, 0)
    rest = w.shape[1:]
    assert w.shape[0] == h1 * head_dim, f"dim {dim} has {w.shape[0]} rows, expected {h1} heads x {head_dim}"
    heads = w.reshape(h1, head_dim, *rest)
    if p_EE is None:
        out = torch.einsum("ab,be...->ae...", e_HH, heads)
    else:
        out = torch.einsum("ab,fe,be...->af...", e_HH, p_EE, heads)
    return out.reshape(h2 * out.shape[1], *rest).movedim(0, dim)


def mix_depth(w_TS: torch.Tensor, stack_S: torch.Tensor, layer: int) -> torch.Tensor:
    """Target layer `layer` as the w-weighted sum of the source layers stacked along dim 0."""
    return torch.einsum("s,s...->...", w_TS[layer], stack_S)


def placed(b: torch.Tensor) -> torch.Tensor | None:
    """The indices of the source units an expansion B writes somewhere (its nonzero columns); None on the
    meta device, where `plan` builds operators with no values. Read once, when the operator is built."""
    return None if b.device.type == "meta" else torch.nonzero((b != 0).any(dim=0)).flatten().cpu()


def left_inverse(b: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
    """A = B (B^T B)^-1 over the source units `columns` (indices; default: the ones B writes, placed(b)),
    zero for the others, so that A^T B = I on those units: a consumer reading through A sees exactly what
    the producer wrote through B. For a 0/1 selection it is B divided by copy counts.

    A unit no output copies (a source head a smaller group or fewer target heads have no slot for) is read
    by nobody. The operator fixes `columns` at its initialisation: once a fit writes such a unit faintly
    (a column of 1e-4), reading it back exactly would take weights of 1e4, and with fewer target units than
    source ones B^T B is singular; the units placed at the start stay well conditioned as B moves. Indices,
    not a mask: a boolean mask would make the GPU wait on every block the fit produces."""
    if b.device.type != "meta" and columns is None:
        columns = placed(b)
    if columns is None or len(columns) == b.shape[1]:  # every unit placed (any growth), or plan's meta sizes
        return torch.linalg.solve(b.T @ b, b.T).T
    index = columns.to(b.device)
    kept = b.index_select(1, index)
    return torch.zeros_like(b).index_copy(1, index, torch.linalg.solve(kept.T @ kept, kept.T).T)


def query_to_kv_heads(e_kv: torch.Tensor, heads_src: int, heads_tgt: int) -> torch.Tensor:
    """Spread a key-value head expansion (K2 x K1) to the query heads that read those kv heads (H2 x H1).

    Query head i of the target reads kv head g = i // g2 and sits at slot s = i mod g2 of its group (g2 =
    H2/K2 heads per group, g1 = H1/K1 in the source); it takes old query head j when j's kv head
    corresponds by e_kv and j sits at the slot s takes. When the group shrinks (g2 < g1) one target group
    cannot hold a source group's heads: its ceil(g1/g2) chunks go to successive copies of the kv head
    (target kv head g holds chunk (g // K1) mod c), so with K2 >= K1 * c every source query head has a
    place. This is also the input side of attention-out: the attention output of head i carries the values
    of its kv head. With one head per group (MHA) it is e_kv itself.
    """
    k2, k1 = e_kv.shape
    g2, g1 = heads_tgt // k2, heads_src // k1
    chunks = -(-g1 // g2)
    i = torch.arange(heads_tgt, device=e_kv.device)
    j = torch.arange(heads_src, device=e_kv.device)
    chunk = (i // g2 // k1) % chunks if chunks > 1 else torch.zeros_like(i)
    same_slot = ((chunk * g2 + i % g2) % g1)[:, None] == (j[None, :] % g1)
    return e_kv[i // g2][:, j // g1] * same_slot.to(e_kv.dtype)
