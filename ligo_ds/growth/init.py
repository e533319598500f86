"""Initial values of the operator's coefficients: the classic growth heuristics as special cases.

Two registries, name -> function, which the CLI offers as choices of --width-init and --depth-init.
A new initialisation is one decorated function here:

    @width_init("mine")
    def mine(n_new: int, n_old: int, gen: torch.Generator) -> torch.Tensor:   # B, n_new x n_old
        ...

    @depth_init("mine")
    def mine(n_tgt, n_src, gen, *, output_projection: bool) -> torch.Tensor:   # w, L2 x L1
        ...

A width initialisation may need a particular tying of the consumers' input sides to their producers'
output sides (spec.py): Net2Net divides the consumers by the copy counts, which is the 'inverse' tying.
Initialisations must draw from `gen` only, and in a fixed order: the operator's initial value is then a
function of the seed alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .functional import query_to_kv_heads

WidthFn = Callable[[int, int, torch.Generator], torch.Tensor]
DepthFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class WidthInit:
    matrix: WidthFn  # (units of the target, units of the source, generator) -> B
    tying: str | None  # the tying this initialisation needs (spec.TYINGS), or None for any


WIDTH_INITS: dict[str, WidthInit] = {}
DEPTH_INITS: dict[str, DepthFn] = {}


def width_init(name: str, *, tying: str | None = None) -> Callable[[WidthFn], WidthFn]:
    def register(fn: WidthFn) -> WidthFn:
        WIDTH_INITS[name] = WidthInit(fn, tying)
        return fn

    return register


def depth_init(name: str) -> Callable[[DepthFn], DepthFn]:
    def register(fn: DepthFn) -> DepthFn:
        DEPTH_INITS[name] = fn
        return fn

    return register


# ---- width: B (n_new x n_old), the first n_old rows the identity -----------------------------------


@width_init("select")
def select(n_new: int, n_old: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """B = [I; S]: unit i copies old unit i mod n_old (every old unit copied equally often when n_new is
    a multiple of n_old, which keeps norm statistics)."""
    b = torch.zeros(n_new, n_old)
    b[torch.arange(n_new), torch.arange(n_new) % n_old] = 1.0
    return b


@width_init("random")
def convex(n_new: int, n_old: int, gen: torch.Generator) -> torch.Tensor:
    """B = [I; C] with each new row a random convex combination of the old units (the official code's
    'rand')."""
    b = select(n_new, n_old)
    if n_new > n_old:
        c = torch.rand(n_new - n_old, n_old, generator=gen)
        b[n_old:] = c / c.sum(dim=1, keepdim=True)
    return b


@width_init("net2net", tying="inverse")
def net2net(n_new: int, n_old: int, gen: torch.Generator) -> torch.Tensor:
    """Net2Net / bert2BERT: copies, with the consumers' input sides divided by the copy counts (the
    'inverse' tying), so the grown model computes what the source does."""
    return select(n_new, n_old, gen)


def add_width_noise(b: torch.Tensor, n_old: int, noise: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise on the rows of new units only; old units stay exact copies."""
    if noise > 0 and b.shape[0] > n_old:
        b = b.clone()
        b[n_old:] += noise * torch.randn(b.shape[0] - n_old, b.shape[1], generator=gen)
    return b


def head_matrices(
    init: WidthInit, src_heads: int, src_kv: int, tgt_heads: int, tgt_kv: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(E_q, E_kv): kv heads by `init`; query heads follow their kv head, so every query head starts
    attending with the kv head its source head used (the GQA grouping is kept)."""
    e_kv = init.matrix(tgt_kv, src_kv, gen)
    return query_to_kv_heads(e_kv, src_heads, tgt_heads), e_kv


# ---- depth: w (L2 x L1) -------------------------------------------------------------------------------


@depth_init("stack")
def stack(n_tgt: int, n_src: int, gen: torch.Generator, *, output_projection: bool = False) -> torch.Tensor:
    """Layer i copies source layer i mod L1 (StackBERT / G_stack)."""
    w = torch.zeros(n_tgt, n_src)
    i = torch.arange(n_tgt)
    w[i, i % n_src] = 1.0
    return w


@depth_init("interpolate")
def interpolate(n_tgt: int, n_src: int, gen: torch.Generator, *, output_projection: bool = False) -> torch.Tensor:
    """Layer i copies source layer i * L1 // L2 (each source layer repeated in place)."""
    w = torch.zeros(n_tgt, n_src)
    i = torch.arange(n_tgt)
    w[i, i * n_src // n_tgt] = 1.0
    return w


@depth_init("random")
def random_mix(n_tgt: int, n_src: int, gen: torch.Generator, *, output_projection: bool = False) -> torch.Tensor:
    """Each layer a random convex mix of the source layers."""
    w = torch.rand(n_tgt, n_src, generator=gen)
    return w / w.sum(dim=1, keepdim=True)


@depth_init("zero")
def zero(n_tgt: int, n_src: int, gen: torch.Generator, *, output_projection: bool = False) -> torch.Tensor:
    """Source layer j stays at j * L2 // L1; the others copy their predecessor, with their output
    projections (attention-out, MLP-down) at zero, so each new layer adds nothing at first and the grown
    model computes what the source does (Net2Net deepening, LLaMA-Pro)."""
    w = torch.zeros(n_tgt, n_src)
    i = torch.arange(n_tgt)
    kept = torch.arange(n_src) * n_tgt // n_src  # where source layer j lands
    predecessor = torch.searchsorted(kept, i, right=True) - 1
    w[i, predecessor] = 1.0
    if output_projection:
        new = torch.ones(n_tgt, dtype=torch.bool)
        new[kept] = False
        w[new] = 0.0
    return w


def add_depth_noise(w: torch.Tensor, noise: float, gen: torch.Generator) -> torch.Tensor:
    """U(0, noise) on the non-zero rows, renormalised; zero rows (new output projections) stay zero."""
    if noise <= 0:
        return w
    live = w.sum(dim=1, keepdim=True) != 0
    noisy = w + noise * torch.rand(w.shape, generator=gen)
    noisy = noisy / noisy.sum(dim=1, keepdim=True)
    return torch.where(live, noisy, w)
