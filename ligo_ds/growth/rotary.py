"""Growing head_dim: where each dimension of a source head goes in a wider target head.

Why a map at all. RoPE rotates dims in pairs, each pair at its own frequency; in transformers' rotate-half
layout pair i of a head of E dims is (i, i + E/2), turning at inv_freq[i] = theta^(-2i/E) for plain RoPE.
Heads are mixed whole (functional.expand_heads), so growing the number of heads never touches a pair; a
wider head (E1 -> E2) must put each source pair somewhere. If source pair i lands on a target pair turning
at the same frequency, the rotation of position t commutes with the map (R_t P = P R_t on the source's
dims), and q.k at every distance is what the source computed. With the same base and E2 = m E1, target
pair m i has frequency theta^(-2 m i / (m E1)) = source pair i's: the map is exact, for any integer m, for
every kind whose frequencies are those of plain RoPE scaled per frequency (linear, llama3, YaRN as
transformers computes them from head_dim). The target pairs between (frequencies the source never had)
start at zero: they add nothing to q.k until the fit (or training) moves them.

Where no target pair has the source pair's frequency (another rope base, as SmolLM2 360M -> 1.7B; a ratio
that is not an integer; a kind whose frequencies depend on head_dim otherwise), each source pair goes to
the unused target pair of the nearest frequency (in log frequency, keeping their order), and
`mapping_error` says how far apart the two rotations drift over the source's positions: the fit learns
the rest. v has no rotation; it takes the same placement (any would do; this one keeps v and q alike).

Under partial rotary (GPT-NeoX turns the first quarter of each head) the pairs are those of the rotary dims,
placed as above among the target's rotary dims; the dims RoPE leaves alone follow them, free of any
frequency.

The softmax scale is 1/sqrt(head_dim) (decoder.py): a target head would divide the same q.k by
sqrt(E2/E1) more, so the q side carries that factor, and the function is kept: q's projection, or, where
q and k are normed (Qwen3, OLMo 2), q's norm weight (projection_scales says why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model.config import ModelConfig
from ..model.rope import frequencies


def _inv_freq(cfg: ModelConfig) -> torch.Tensor:
    # On the CPU whatever the default device: the placement is decided from numbers (plan builds the
    # operator on the meta device, where there are none).
    with torch.device("cpu"):
        return frequencies(cfg, cfg.max_positions, device="cpu")[0].double()


def pair_targets(src: ModelConfig, tgt: ModelConfig) -> list[int]:
    """For each source pair, the target pair it goes to: the same frequency where there is one, else the
    nearest unused one in log frequency, in order (frequencies fall with the pair index in both heads)."""
    n1, n2 = src.rotary_dim // 2, tgt.rotary_dim // 2
    if src.positions != "rope":  # no rotation: spread the dims evenly
        return [(i * n2) // n1 for i in range(n1)]
    f1, f2 = _inv_freq(src).log(), _inv_freq(tgt).log()
    out, lo = [], 0
    for i in range(n1):
        hi = n2 - (n1 - i)  # leave a pair for each source pair still to place
        p = lo + int(torch.argmin((f2[lo : hi + 1] - f1[i]).abs()))
        out.append(p)
        lo = p + 1
    return out


def placed_dims(src: ModelConfig, tgt: ModelConfig) -> list[tuple[int, int]]:
    """(target dim, source dim) for each source dim of a head: both halves of each rotary pair (the first
    R dims of a head, rotate-half over those R), then the dims RoPE leaves alone under partial rotary
    (GPT-NeoX), in order after the target's rotary ones: they carry no frequency, so any place keeps them."""
    r1, r2 = src.rotary_dim, tgt.rotary_dim
    rotary = [(t + h * r2 // 2, i + h * r1 // 2) for i, t in enumerate(pair_targets(src, tgt)) for h in (0, 1)]
    return rotary + [(r2 + j, r1 + j) for j in range(src.head_dim - r1)]


def within_head(src: ModelConfig, tgt: ModelConfig, scale: float = 1.0) -> torch.Tensor:
    """P (E2 x E1): source dim d of a head -> its target dim (both halves of each pair), times `scale`.
    Made on the default device (meta under `plan`), from indices decided on the CPU."""
    p = torch.zeros(tgt.head_dim, src.head_dim)
    rows, cols = zip(*placed_dims(src, tgt), strict=True)
    p[list(rows), list(cols)] = scale
    return p


def projection_scales(src: ModelConfig, tgt: ModelConfig) -> tuple[float, float]:
    """What q's and k's placements carry so that the target's scaled q.k is the source's.

    The target multiplies q.k by its attention scale a2 (1/sqrt(E2), or Gemma's 1/sqrt(query_pre_attn_scalar)),
    the source by a1: without q/k norms, q carries r = a1 / a2 (sqrt(E2/E1) where the scale follows head_dim).
    With them (Qwen3, OLMo 2, Gemma 3) a scale on the projection is normed away, so it serves another end: q
    and k both carry s = sqrt(E2/E1), which keeps each norm's mean square over E2 dims (the E2 - E1 new ones
    zero) equal to the source's over E1, eps included. Each normed vector then comes out s larger, q.k s^2
    larger; the norms' weights carry the rest (norm_scales). The same holds per head ("head") and over the
    whole projection ("full"), whose mean is over H E dims with every head placed alike."""
    s = math.sqrt(tgt.head_dim / src.head_dim)
    return (s, s) if src.qk_norm else (src.attn_scale / tgt.attn_scale, 1.0)


def norm_scales(src: ModelConfig, tgt: ModelConfig) -> dict[str, float]:
    """What the q and k norms' (effective) weights carry on top of their projection's placement P (which
    includes projection_scales' s): k's undoes s, so k comes out s larger than placed; q's makes the product
    r = a1 / a2, so q comes out r / s: r / s^3 on top of P's s."""
    s = math.sqrt(tgt.head_dim / src.head_dim)
    r = src.attn_scale / tgt.attn_scale
    return {"q": r / s**3, "k": 1.0 / s}


@dataclass(frozen=True)
class Mapping:
    """How the rotary pairs were placed: `exact` when every frequency matched; otherwise the largest
    angle (radians) by which a mapped pair's rotation drifts from the source's within its positions."""

    exact: bool
    max_angle: float
    positions: int

    def describe(self, src: ModelConfig, tgt: ModelConfig) -> str:
        head = f"head_dim {src.head_dim} -> {tgt.head_dim}"
        if src.positions != "rope":
            return f"{head}: learned positions, each dim placed; exact"
        if self.exact:
            return f"{head}: each rotary pair placed on the target pair of its frequency; exact"
        return (
            f"{head}: rotary pairs placed on the nearest frequencies (rope {_rope(src)} -> {_rope(tgt)}); they "
            f"drift apart by up to {self.max_angle:.3g} rad over {self.positions} positions, which the fit "
            "learns to absorb"
        )


def _rope(cfg: ModelConfig) -> str:
    """'base 500000', or with a scaling 'base 1e+06 linear x8'."""
    factor = dict(cfg.rope_scaling).get("factor")
    kind = "" if cfg.rope_type == "default" else f" {cfg.rope_type}" + (f" x{factor:g}" if factor else "")
    return f"base {cfg.rope_theta:g}{kind}"


def mapping_error(src: ModelConfig, tgt: ModelConfig) -> Mapping:
    """How far the placement of pair_targets is from commuting with RoPE, over the source's positions."""
    if src.positions != "rope":
        return Mapping(True, 0.0, src.max_positions)
    f1, f2 = _inv_freq(src), _inv_freq(tgt)[pair_targets(src, tgt)]
    gap = (f1 - f2).abs().max().item()
    exact = bool(torch.allclose(f1, f2, rtol=1e-12, atol=0.0))
    return Mapping(exact, 0.0 if exact else gap * (src.max_positions - 1), src.max_positions)


def initial_maps(
    src: ModelConfig, tgt: ModelConfig, noise: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(P_q, P_k, P_v) to start a layer's head-dim placement from, or None when head_dim is kept. The new
    dims (rows no source dim lands on) are zero, or small and random with `noise`: in q and k they pair
    with frequencies the source never had, so only the fit can give them meaning."""
    if src.head_dim == tgt.head_dim:
        return None
    used = {t for t, _ in placed_dims(src, tgt)}
    new = [r for r in range(tgt.head_dim) if r not in used]
    maps = []
    for scale in (*projection_scales(src, tgt), 1.0):
        p = within_head(src, tgt, scale)
        if noise > 0 and new:
            p[new] = noise * torch.randn(len(new), src.head_dim, generator=gen).to(p.device)
        maps.append(p)
    return tuple(maps)


def notes(src: ModelConfig, tgt: ModelConfig) -> list[str]:
    """What the fit's log says of the start where heads change shape: how the rotary pairs were placed, and
    when a source query head has no place (a smaller GQA group with too few kv heads to hold its chunks)."""
    out = []
    if src.head_dim != tgt.head_dim or (src.positions == "rope" and _rope(src) != _rope(tgt)):
        out.append(mapping_error(src, tgt).describe(src, tgt))
    g1, g2 = src.num_heads // src.num_kv_heads, tgt.num_heads // tgt.num_kv_heads
    chunks = -(-g1 // g2)
    if tgt.num_heads < src.num_heads or tgt.num_kv_heads < src.num_kv_heads * chunks:
        out.append(
            f"heads {src.num_heads}/{src.num_kv_heads} kv -> {tgt.num_heads}/{tgt.num_kv_heads} kv: not every source "
            "query head has a place of its own at the start; the head maps are learned from there"
        )
    if src.sliding_window != tgt.sliding_window and (src.sliding_window or tgt.sliding_window):
        out.append(
            f"sliding window {src.sliding_window} -> {tgt.sliding_window}: the start computes the source's "
            f"function only on sequences within the smaller window"
        )
    if tgt.num_layers < src.num_layers:
        out.append(
            f"layers {src.num_layers} -> {tgt.num_layers}: no depth init keeps the function with fewer layers "
            "(zero keeps evenly spaced source layers from the first to the last, interpolate evenly spaced ones from "
            "the first, stack the first ones); the depth map is learned from there"
        )
    return out
