"""What grows into what (the Growth block), what the operator is asked to do (GrowthSpec) and what may
grow into what (check_growable).

The kinds of growth are registries, name -> function, offered by the CLI as choices: width and depth
initialisations (init.py), tyings (how a consumer's input side follows its producer's output side) and
orders (where the per-layer widening happens relative to the mix over depth, operator.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..model.config import ModelConfig
from ..options import Block, at_least, option
from .functional import left_inverse
from .init import DEPTH_INITS, WIDTH_INITS

# tying -> the consumer's input side A given the producer's output side B and the source units B placed at
# the start (functional.placed).
TYINGS: dict[str, Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "paper": lambda b, columns: b,  # A = B, as the paper and the official code
    "inverse": left_inverse,  # A = B (B^T B)^-1: every linear path stays function preserving for any B
}
# order -> the layers whose width matrices exist: one set per source layer (widen, then mix over depth)
# or one per target layer (mix, then widen). operator.py holds the two ways of producing a block.
ORDERS: dict[str, str] = {"paper": "source", "official": "target"}


@dataclass(frozen=True)
class GrowthSpec:
    """How to build and initialise the operator.

    width_init  a name in init.WIDTH_INITS: select (new unit i copies old unit i mod D1), random (convex
                mixes), net2net (select with the 'inverse' tying: function preserving).
    depth_init  a name in init.DEPTH_INITS: stack, interpolate, random, zero (new layers start with
                their output projections at zero: function preserving).
    noise       std of Gaussian noise on new width units, and U(0, noise) on non-zero depth rows
                (renormalised), the official code's 'noisy' inits.
    tying       a name in TYINGS; default: the one the width initialisation needs, else paper.
    order       a name in ORDERS. paper: widen each source layer with its own matrices, then mix over
                depth. official: mix over depth first, then widen with per-target-layer matrices
                (one widening per target layer instead of one per source layer per target layer).

    Built from the Growth block (which refuses bad values naming their flags), or by code, which gets the
    same refusals naming these fields.
    """

    width_init: str = "select"
    depth_init: str = "stack"
    noise: float = 0.0
    tying: str | None = None
    order: str = "paper"
    seed: int = 0

    def __post_init__(self) -> None:
        for name, allowed in (("width_init", WIDTH_INITS), ("depth_init", DEPTH_INITS), ("order", ORDERS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} {getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        if self.tying is not None and self.tying not in TYINGS:
            raise ConfigError(f"tying {self.tying!r}: expected one of {', '.join(TYINGS)}")
        check_tying(self.width_init, self.tying, {"width_init": "width_init", "tying": "tying"})
        if self.noise < 0:
            raise ConfigError(f"noise {self.noise}: expected at least 0")

    @property
    def resolved_tying(self) -> str:
        """The tying asked for, else the one the width initialisation needs, else the paper's."""
        return self.tying or WIDTH_INITS[self.width_init].tying or "paper"


def check_tying(width_init: str, tying: str | None, names: dict[str, str]) -> None:
    """Refuse a tying the width initialisation cannot have; `names` spells the two settings."""
    needs = WIDTH_INITS[width_init].tying
    if needs is not None and tying not in (None, needs):
        w, t = names["width_init"], names["tying"]
        raise ConfigError(
            f"{w} {width_init} needs {t} {needs} (it is what makes it {width_init}); it cannot be combined "
            f"with {t} {tying}"
        )


@dataclass(frozen=True, kw_only=True)
class Growth(Block):
    """What grows into what, and the operator's initialisation (init.py, GrowthSpec)."""

    source: str = option(
        help="the small model: an HF checkpoint directory", metavar="HF_DIR", hub="model", identity="source"
    )
    target: str = option(
        help="the large model's shape: an HF config.json (or a directory holding one) of the same family, at "
        "least as large everywhere",
        metavar="CONFIG",
        hub="config",
        identity="model",  # the model the fit trains, as pretraining's --model: its path and config
    )
    width_init: str = option(
        "select",
        "new width units: select (copies), random (convex mixes), net2net (copies, function preserving)",
        choices=WIDTH_INITS,
        identity="growth",  # all of GrowthSpec, under one entry
    )
    depth_init: str = option(
        "stack",
        "new layers: stack, interpolate, random, zero (new layers add nothing at first)",
        choices=DEPTH_INITS,
        identity="growth",
    )
    # Exact copies (select / net2net without noise) get identical gradients and never diverge: a grown
    # GPT-2's copied units were still bit-identical after 400 training steps, so it kept the small model's
    # width. A little noise on the new units breaks the symmetry (Net2Net does the same).
    init_noise: float = option(
        0.01,
        "noise on new width units and depth rows; 0 gives exact copies, which never diverge in training",
        check=at_least(0),
        identity="growth",
    )
    tying: str | None = option(
        None,
        "consumers' input sides: paper (= the producer's output side) or inverse (its left inverse)",
        choices=TYINGS,
        shown_default="the width init's, else paper",
        identity="growth",
    )
    order: str = option(
        "paper",
        "paper (widen, then mix over depth) or official (mix, then widen per target layer)",
        choices=ORDERS,
        identity="growth",
    )

    def check(self) -> None:
        check_tying(self.width_init, self.tying, {"width_init": self.flag("width_init"), "tying": self.flag("tying")})

    def spec(self, seed: int) -> GrowthSpec:
        return GrowthSpec(
            width_init=self.width_init,
            depth_init=self.depth_init,
            noise=self.init_noise,
            tying=self.tying,
            order=self.order,
            seed=seed,
        )


# Switches that must agree between source and target: the operator maps weights, not architectures. The
# rope base, kind and scaling may differ (rotary.py places each pair on the nearest frequency and says how
# far it is: Gemma 3 1B -> 4B scales its global RoPE by 8), and so may a sliding window (rotary.notes).
_SAME = (
    "family",
    "vocab_size",
    "norm",
    "activation",
    "gated_mlp",
    "positions",
    "qkv_bias",
    "out_bias",
    "mlp_bias",
    "norm_bias",
    "tie_embeddings",
    "qk_norm",
    "residual",
    "partial_rotary",
    "query_pre_attn_scalar",
)
# Widths that may only grow. Layer, head and kv-head counts may fall (a wider model with fewer layers or
# fewer, wider heads, as published families grow): the depth operator is any L2 x L1 map, and heads are
# mixed by learned H2 x H1 maps; only a target smaller in total is refused.
_GROW = ("hidden_size", "head_dim", "intermediate_size", "max_positions")


def _shown(key: str, value):
    return dict(value) if key == "rope_scaling" else value


def check_growable(src: ModelConfig, tgt: ModelConfig) -> None:
    """Refuse pairs the operator cannot map, naming every offending value."""
    if src.family != tgt.family:
        raise ConfigError(
            f"source is a {src.model_type} model ({src.family} family), target a {tgt.model_type} "
            f"model ({tgt.family} family): growth stays within one family"
        )
    if src.vocab_size != tgt.vocab_size:
        raise ConfigError(
            f"vocabularies differ: source vocab_size {src.vocab_size}, target {tgt.vocab_size}; "
            "the operator keeps the tokenizer"
        )
    differ = [
        f"{k}: source {_shown(k, getattr(src, k))!r}, target {_shown(k, getattr(tgt, k))!r}"
        for k in _SAME
        if getattr(src, k) != getattr(tgt, k)
    ]
    if differ:
        raise ConfigError(f"source and target differ in architecture switches: {'; '.join(differ)}")
    smaller = [f"{k} {getattr(tgt, k)} < {getattr(src, k)}" for k in _GROW if getattr(tgt, k) < getattr(src, k)]
    if tgt.num_params() < src.num_params():
        smaller.insert(0, f"{tgt.num_params():,} parameters < {src.num_params():,}")
    if smaller:
        raise ConfigError(f"the target is smaller than the source: {', '.join(smaller)}")
    if src.positions == "learned" and src.max_positions != tgt.max_positions:
        raise ConfigError(
            f"learned position tables differ in length ({src.max_positions} -> {tgt.max_positions}); "
            "growth keeps the positions: give the target the same n_positions"
        )
