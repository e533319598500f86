"""What the operator is asked to do (GrowthSpec) and what may grow into what (check_growable)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ModelConfig
from ..errors import ConfigError

WIDTH_INITS = ("select", "random", "net2net")
DEPTH_INITS = ("stack", "interpolate", "random", "zero")
TYINGS = ("paper", "inverse")
ORDERS = ("paper", "official")


@dataclass(frozen=True)
class GrowthSpec:
    """How to build and initialise the operator.

    width_init  select: new unit i copies old unit i mod D1 (B = [I; S]); random: each new unit a
                random convex mix of old ones (the official code's 'rand'); net2net: select with the
                consumers' input sides divided by copy counts, i.e. function preserving (= select with
                tying 'inverse').
    depth_init  stack: layer i copies i mod L1 (StackBERT / G_stack); interpolate: i * L1 // L2;
                random: random convex rows; zero: source layers keep their order at i = j * L2 // L1 and
                the others copy their predecessor with attention-out and MLP-down at zero, so the grown
                model computes what the source does (LLaMA-Pro style).
    noise       std of Gaussian noise on new width units, and U(0, noise) on non-zero depth rows
                (renormalised), the official code's 'noisy' inits.
    tying       paper: each input side equals its producer's output side (A = B), as the paper and
                the official code. inverse: A = B (B^T B)^-1, a left inverse, so every linear path stays
                function preserving for any learned B. Default: inverse for net2net, paper otherwise.
    order       paper: widen each source layer with its own matrices, then mix over depth.
                official: mix over depth first, then widen with per-target-layer matrices (cheaper:
                one widening per target layer instead of one per source layer).
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
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: expected one of "
                                  f"{', '.join(allowed)}")
        if self.tying is not None and self.tying not in TYINGS:
            raise ConfigError(f"--tying {self.tying!r}: expected one of {', '.join(TYINGS)}")
        if self.width_init == "net2net" and self.tying == "paper":
            raise ConfigError("--width-init net2net divides the consumers' input sides by the copy counts, "
                              "which is --tying inverse; it cannot be combined with --tying paper")
        if self.noise < 0:
            raise ConfigError(f"--init-noise {self.noise} must be >= 0")

    @property
    def resolved_tying(self) -> str:
        return self.tying or ("inverse" if self.width_init == "net2net" else "paper")


# Switches that must agree between source and target: the operator maps weights, not architectures.
_SAME = ("family", "vocab_size", "head_dim", "norm", "activation", "gated_mlp", "positions", "rope_theta",
         "qkv_bias", "out_bias", "mlp_bias", "norm_bias", "tie_embeddings")
_GROW = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "intermediate_size", "max_positions")


def check_growable(src: ModelConfig, tgt: ModelConfig) -> None:
    """Refuse pairs the operator cannot map, naming every offending value."""
    if src.family != tgt.family:
        raise ConfigError(f"source is a {src.model_type} model ({src.family} family), target a {tgt.model_type} "
                          f"model ({tgt.family} family): growth stays within one family")
    if src.vocab_size != tgt.vocab_size:
        raise ConfigError(f"vocabularies differ: source vocab_size {src.vocab_size}, target {tgt.vocab_size}; "
                          "the operator keeps the tokenizer")
    if src.head_dim != tgt.head_dim:
        why = ("RoPE rotates fixed pairs inside each head, so heads can only be mixed whole"
               if src.positions == "rope" else "the operator grows attention by whole heads")
        raise ConfigError(f"head_dim changes from {src.head_dim} to {tgt.head_dim}: {why}; grow the number of "
                          "heads instead (keep hidden_size / num_attention_heads fixed)")
    smaller = [f"{k} {getattr(tgt, k)} < {getattr(src, k)}" for k in _GROW if getattr(tgt, k) < getattr(src, k)]
    if smaller:
        raise ConfigError(f"the target is smaller than the source: {', '.join(smaller)}")
    differ = [f"{k}: source {getattr(src, k)!r}, target {getattr(tgt, k)!r}" for k in _SAME
              if getattr(src, k) != getattr(tgt, k)]
    if differ:
        raise ConfigError(f"source and target differ in architecture switches: {'; '.join(differ)}")
    if src.positions == "learned" and src.max_positions != tgt.max_positions:
        raise ConfigError(f"learned position tables differ in length ({src.max_positions} -> {tgt.max_positions}); "
                          "growth keeps the positions: give the target the same n_positions")
