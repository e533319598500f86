"""Initial values of the operator's coefficients: the classic growth heuristics as special cases."""

from __future__ import annotations

import torch

from .functional import query_to_kv_heads


def select(n_new: int, n_old: int) -> torch.Tensor:
    """B = [I; S]: unit i copies old unit i mod n_old (every old unit copied equally often when
    n_new is a multiple of n_old, which keeps norm statistics)."""
    b = torch.zeros(n_new, n_old)
    b[torch.arange(n_new), torch.arange(n_new) % n_old] = 1.0
    return b


def convex(n_new: int, n_old: int, gen: torch.Generator) -> torch.Tensor:
    """B = [I; C] with each new row a random convex combination of the old units."""
    b = select(n_new, n_old)
    if n_new > n_old:
        c = torch.rand(n_new - n_old, n_old, generator=gen)
        b[n_old:] = c / c.sum(dim=1, keepdim=True)
    return b


def width_matrix(kind: str, n_new: int, n_old: int, gen: torch.Generator) -> torch.Tensor:
    return convex(n_new, n_old, gen) if kind == "random" else select(n_new, n_old)


def add_width_noise(b: torch.Tensor, n_old: int, noise: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise on the rows of new units only; old units stay exact copies."""
    if noise > 0 and b.shape[0] > n_old:
        b = b.clone()
        b[n_old:] += noise * torch.randn(b.shape[0] - n_old, b.shape[1], generator=gen)
    return b


def head_matrices(kind: str, src_heads: int, src_kv: int, tgt_heads: int, tgt_kv: int,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(E_q, E_kv): kv heads by `kind`; query heads follow their kv head, so every query head starts
    attending with the kv head its source head used (the GQA grouping is kept)."""
    e_kv = width_matrix(kind, tgt_kv, src_kv, gen)
    return query_to_kv_heads(e_kv, src_heads, tgt_heads), e_kv


def depth_matrix(kind: str, n_tgt: int, n_src: int, gen: torch.Generator, *, output_projection: bool = False):
    """w (L2 x L1). For `zero`, output projections (attention-out, MLP-down) of new layers are zero rows."""
    w = torch.zeros(n_tgt, n_src)
    i = torch.arange(n_tgt)
    if kind == "stack":
        w[i, i % n_src] = 1.0
    elif kind == "interpolate":
        w[i, i * n_src // n_tgt] = 1.0
    elif kind == "random":
        w = torch.rand(n_tgt, n_src, generator=gen)
        w /= w.sum(dim=1, keepdim=True)
    elif kind == "zero":
        kept = torch.arange(n_src) * n_tgt // n_src  # where source layer j lands
        predecessor = torch.searchsorted(kept, i, right=True) - 1
        w[i, predecessor] = 1.0
        if output_projection:
            new = torch.ones(n_tgt, dtype=torch.bool)
            new[kept] = False
            w[new] = 0.0
    else:
        raise AssertionError(kind)
    return w


def add_depth_noise(w: torch.Tensor, noise: float, gen: torch.Generator) -> torch.Tensor:
    if noise <= 0:
        return w
    live = w.sum(dim=1, keepdim=True) != 0
    noisy = w + noise * torch.rand(w.shape, generator=gen)
    noisy = noisy / noisy.sum(dim=1, keepdim=True)
    return torch.where(live, noisy, w)
