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

from ..errors import ConfigError
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
    model computes what the source does (Net2Net deepening, LLaMA-Pro).

    With fewer target layers nothing keeps the function: the target keeps evenly spaced source layers, the
    first and the last among them. Dropping the first layer costs most (on Pythia 410M -> 1B's analogue,
    6 -> 4 layers: +0.16 nats keeping 0, 2, 3, 5; +1.1 to +2.4 for every choice without layer 0)."""
    w = torch.zeros(n_tgt, n_src)
    i = torch.arange(n_tgt)
    if n_tgt < n_src:
        w[i, kept_when_shallower(n_tgt, n_src)] = 1.0
        return w
    kept = torch.arange(n_src) * n_tgt // n_src  # where source layer j lands
    predecessor = torch.searchsorted(kept, i, right=True) - 1
    w[i, predecessor] = 1.0
    if output_projection:
        new = torch.ones(n_tgt, dtype=torch.bool)
        new[kept] = False
        w[new] = 0.0
    return w


def kept_when_shallower(n_tgt: int, n_src: int) -> torch.Tensor:
    """The source layers a shallower target keeps: evenly spaced from the first to the last."""
    if n_tgt == 1:
        return torch.zeros(1, dtype=torch.long)
    return torch.round(torch.arange(n_tgt, dtype=torch.float64) * (n_src - 1) / (n_tgt - 1)).long()


# ---- layers of several kinds (Gemma 3's sliding and full attention) ----------------------------------


def depth_matrix(
    name: str,
    n_tgt: int,
    n_src: int,
    gen: torch.Generator,
    output_projection: bool,
    types: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
) -> torch.Tensor:
    """The depth init `name`'s matrix, kept within each layer kind when the layers have kinds (`types`:
    the source's and the target's). A sliding layer's weights mixed into a full one would attend with the
    wrong window and RoPE base: `zero` places each source layer on a target layer of its kind (the
    function stays the source's), the others take only source layers of the target layer's kind."""
    if types is None:
        return DEPTH_INITS[name](n_tgt, n_src, gen, output_projection=output_projection)
    here = torch.empty(0).device  # the default device: meta under `plan`, where there are no values to read
    with torch.device("cpu"):  # a few L2 x L1 numbers, decided from the kinds
        if name == "zero":
            w = zero_by_kind(*types, output_projection=output_projection)
        else:
            w = within_kinds(DEPTH_INITS[name](n_tgt, n_src, gen, output_projection=output_projection), *types)
    return w.to(here)


def within_kinds(w: torch.Tensor, src: tuple[str, ...], tgt: tuple[str, ...]) -> torch.Tensor:
    """w with each target row restricted to source layers of its kind, keeping the row's sum; a row with no
    such entry takes the same-kind source layer nearest its largest one. Kinds the source lacks are free."""
    out = w.clone()
    for i, kind in enumerate(tgt):
        same = torch.tensor([k == kind for k in src])
        total = w[i].sum()
        if not bool(same.any()) or total == 0:
            continue
        row = torch.where(same, w[i], torch.zeros_like(w[i]))
        if row.sum() == 0:
            j = int(w[i].abs().argmax())
            nearest = min((abs(j2 - j), j2) for j2 in range(len(src)) if same[j2])[1]
            row[nearest] = 1.0
        out[i] = row * (total / row.sum())
    return out


def place_by_kind(src: tuple[str, ...], tgt: tuple[str, ...]) -> list[int]:
    """Where each source layer lands: in order, each on a target layer of its kind, as near j * L2 // L1 as
    the layers after it allow. Refused, by name, where the target's kinds do not hold the source's in order."""
    n1, n2 = len(src), len(tgt)
    latest, t = [0] * n1, n2
    for j in reversed(range(n1)):  # the last place each can take with every later one still placed after it
        t = next((i for i in reversed(range(t)) if tgt[i] == src[j]), -1)
        if t < 0:
            raise ConfigError(
                f"layer kinds: the source's {n1} layers ({_count(src)}) do not fit in order into the target's "
                f"{n2} ({_count(tgt)}); --depth-init zero keeps each source layer on a layer of its kind, so "
                "expected a target whose layer_types hold the source's in order, or another depth init"
            )
        latest[j] = t
    kept, prev = [], -1
    for j in range(n1):
        options = [i for i in range(prev + 1, latest[j] + 1) if tgt[i] == src[j]]
        ideal = j * n2 // n1
        prev = next((i for i in options if i >= ideal), options[-1])
        kept.append(prev)
    return kept


def _count(kinds: tuple[str, ...]) -> str:
    return ", ".join(f"{kinds.count(k)} {k}" for k in sorted(set(kinds)))


def zero_by_kind(src: tuple[str, ...], tgt: tuple[str, ...], *, output_projection: bool) -> torch.Tensor:
    """`zero` with kinds: source layer j on target layer place_by_kind()[j]; every other target layer copies
    the last source layer of its kind placed before it (else the first of its kind), its output projections
    at zero, so it adds nothing at first."""
    kept = place_by_kind(src, tgt)
    w = torch.zeros(len(tgt), len(src))
    for j, i in enumerate(kept):
        w[i, j] = 1.0
    if output_projection:
        return w
    for i, kind in enumerate(tgt):
        if i in kept:
            continue
        same = [j for j in range(len(src)) if src[j] == kind] or list(range(len(src)))
        before = [j for j in same if kept[j] < i]
        w[i, before[-1] if before else same[0]] = 1.0
    return w


def add_depth_noise(w: torch.Tensor, noise: float, gen: torch.Generator) -> torch.Tensor:
    """U(0, noise) on the non-zero rows, renormalised; zero rows (new output projections) stay zero."""
    if noise <= 0:
        return w
    live = w.sum(dim=1, keepdim=True) != 0
    noisy = w + noise * torch.rand(w.shape, generator=gen)
    noisy = noisy / noisy.sum(dim=1, keepdim=True)
    return torch.where(live, noisy, w)
