"""growth/rotary.py and the head changes it serves: a wider head keeps the function exactly when every
rotary pair lands on its own frequency (every RoPE kind, learned positions, 2x and 4x), a smaller GQA group
keeps every query head where there are kv heads enough, and the published pairs' shapes (fewer heads,
fewer layers, another rope base) grow, with the distance from the source measured."""

from __future__ import annotations

import pytest
import torch

from ligo_ds import ModelConfig
from ligo_ds.growth import GrownModel, GrowthSpec, operator_from
from ligo_ds.growth import functional as G
from ligo_ds.growth.grown import iter_grown_state
from ligo_ds.growth.init import kept_when_shallower, zero
from ligo_ds.growth.rotary import mapping_error, notes, pair_targets, within_head
from ligo_ds.model.decoder import Decoder
from ligo_ds.model.rope import apply_rope, rope_tables

from conftest import HF_CASES, ids_for, random_source
from published import ANALOGUES

ATOL = 1e-4
PRESERVING = GrowthSpec(width_init="net2net", depth_init="zero")


def wider_heads(case: str, ratio: int) -> dict:
    """The case with head_dim x ratio at the same head counts (so hidden x ratio), MLP and layers x2."""
    h = dict(HF_CASES[case])
    if h["model_type"] == "gpt2":
        inner = h.get("n_inner") or 4 * h["n_embd"]
        h.update(n_embd=ratio * h["n_embd"], n_layer=2 * h["n_layer"], n_inner=2 * inner)
    else:
        h.update(
            hidden_size=ratio * h["hidden_size"],
            intermediate_size=2 * h["intermediate_size"],
            num_hidden_layers=2 * h["num_hidden_layers"],
        )
        if "head_dim" in h:
            h["head_dim"] = ratio * h["head_dim"]
        if "layer_types" in h:  # the pattern repeated over the doubled depth
            h["layer_types"] = 2 * h["layer_types"]
    return h


@pytest.mark.parametrize("ratio", [2, 4])
@pytest.mark.parametrize(
    "case",
    ["gpt2", "llama_gqa_tied", "llama_bias", "qwen2_gqa", "llama3_rope", "llama_linear_rope", "qwen2_yarn_rope"]
    + ["mistral_window_headdim", "qwen3_headdim_qknorm", "olmo2", "olmo2_bias", "gpt_neox", "gpt_neox_sequential_half"]
    + ["gemma3", "gemma3_linear_rope"],
)
def test_a_wider_head_keeps_the_function(case, ratio):
    """head_dim x2 and x4 with the head counts kept, net2net + zero, no fit: the source's logits."""
    src = random_source(case)
    tgt = ModelConfig.from_hf(wider_heads(case, ratio))
    assert tgt.head_dim == ratio * src.cfg.head_dim and mapping_error(src.cfg, tgt).exact
    op = operator_from(src, tgt, PRESERVING)
    ids = ids_for(src.cfg)
    with torch.no_grad():
        torch.testing.assert_close(GrownModel(op)(ids), src(ids), atol=ATOL, rtol=0)


def test_the_placement_commutes_with_the_rotation():
    """R_t P = P R_t on the source's dims, position by position: q.k of the placed vectors, rotated in the
    wider head, is the source's; with another rope base it is not, and the measured drift says so."""
    src = ModelConfig.from_hf(HF_CASES["llama3_rope"])
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 1, 40, src.head_dim, generator=gen) for _ in range(2))

    def scores(cfg, q, k):
        cos, sin = rope_tables(cfg, 40)
        return apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2)

    for ratio, theta in ((2, None), (4, None), (2, 600000.0)):
        h = wider_heads("llama3_rope", ratio)
        if theta is not None:
            h["rope_theta"] = theta
        tgt = ModelConfig.from_hf(h)
        p = within_head(src, tgt)
        placed = scores(tgt, q @ p.T, k @ p.T)
        gap = (placed - scores(src, q, k)).abs().max().item()
        m = mapping_error(src, tgt)
        if theta is None:
            assert gap < 1e-4 and m.exact and m.max_angle == 0.0
        else:
            assert gap > 1e-3 and not m.exact and m.max_angle > 0.0
            assert "-> base 600000" in m.describe(src, tgt) and "nearest frequencies (rope base 500000" in m.describe(
                src, tgt
            )


def test_pairs_keep_their_frequency_order():
    src = ModelConfig.from_hf(HF_CASES["llama"])
    for ratio in (2, 3, 4):
        targets = pair_targets(src, ModelConfig.from_hf(wider_heads("llama", ratio)))
        assert targets == [ratio * i for i in range(src.head_dim // 2)]
    other = ModelConfig.from_hf({**HF_CASES["llama"], "rope_theta": 13000.0})
    assert pair_targets(src, other) == list(range(src.head_dim // 2))  # nowhere else to go, in order


def _model(h: dict, seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    model = Decoder(ModelConfig.from_hf(h)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_a_smaller_gqa_group_keeps_every_query_head():
    """15 q / 5 kv -> 32 / 32 (SmolLM2 360M -> 1.7B) in small: each source kv head's 3 query heads go to 3
    copies of it; with the hidden size kept (a non-integer hidden ratio changes what a norm computes over
    copies, which no width init keeps) the grown model is the source's."""
    src = _model(dict(ANALOGUES["smollm2-360m-1.7b"][0], num_hidden_layers=2))
    tgt = ModelConfig.from_hf(
        {**ANALOGUES["smollm2-360m-1.7b"][0], "num_attention_heads": 32, "num_key_value_heads": 32}
    )
    e_q = G.query_to_kv_heads(torch.eye(32, 5)[torch.arange(32) % 5], 15, 32)
    assert sorted(set(e_q.argmax(dim=1).tolist())) == list(range(15)) and (e_q.sum(dim=1) == 1).all()
    op = operator_from(src, tgt, PRESERVING)
    ids = ids_for(src.cfg)
    with torch.no_grad():
        torch.testing.assert_close(GrownModel(op)(ids), src(ids), atol=ATOL, rtol=0)


def test_left_inverse_of_an_expansion_that_drops_units():
    b = torch.tensor([[1.0, 0, 0], [0, 0, 1], [1, 0, 0]])  # unit 1 has no copy, unit 0 two
    a = G.left_inverse(b)
    assert torch.equal(a[:, 1], torch.zeros(3))
    torch.testing.assert_close((a.T @ b)[[0, 2]][:, [0, 2]], torch.eye(2))
    full = torch.tensor([[1.0, 0], [0, 1], [1, 0]])
    torch.testing.assert_close(G.left_inverse(full), full / torch.tensor([2.0, 1.0]))


@pytest.mark.parametrize("pair", sorted(ANALOGUES))
def test_a_small_step_moves_every_grown_weight_a_little(pair):
    """Every coefficient moved by 1e-4 (what one Adam step at lr 1e-4 does) moves the grown weights by about
    as much. The consumers read back only the source units the start placed: reading back a head that a target
    with fewer heads (Pythia 410M -> 1B, 16 -> 8) writes faintly took weights of 4e4, and the fit diverged."""
    s, t = ANALOGUES[pair]
    op = operator_from(_model(s), ModelConfig.from_hf(t), PRESERVING)
    with torch.no_grad():
        before = dict(iter_grown_state(op))
        gen = torch.Generator().manual_seed(0)
        for p in op.parameters():
            if p.requires_grad:
                p.add_(1e-4 * torch.randn(p.shape, generator=gen))
        after = dict(iter_grown_state(op))
    # against the largest of the weights of its name in any layer: a new layer's output projection starts at 0
    kind = {k: k.split(".", 2)[-1] if k.startswith("blocks.") else k for k in before}
    scale = {kind[k]: max(float(before[j].abs().max()) for j in before if kind[j] == kind[k]) for k in before}
    moved = {k: float((after[k] - before[k]).abs().max()) / scale[kind[k]] for k in before}
    worst = max(moved, key=moved.get)
    assert moved[worst] < 0.05, (worst, moved[worst])


def test_a_shallower_target_keeps_the_first_and_last_layers():
    """zero with fewer target layers keeps evenly spaced source layers from the first to the last (Pythia
    410M -> 1B: 24 -> 16), each once, and says that nothing keeps the function."""
    assert kept_when_shallower(16, 24).tolist() == [0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23]
    for n_tgt, n_src in ((4, 6), (1, 3), (5, 6)):
        w = zero(n_tgt, n_src, None, output_projection=True)
        kept = w.argmax(1)
        assert w.sum(1).tolist() == [1.0] * n_tgt and kept[0] == 0 and (n_tgt == 1 or kept[-1] == n_src - 1)
        assert torch.equal(zero(n_tgt, n_src, None), w) and bool((kept.diff() > 0).all())


# The analogues whose every ratio keeps the function (integer hidden and head ratios, head_dim kept or an
# integer multiple, depth grown): the others' hidden ratios (4/3, 5/3, 1.5, 12/7) change what a norm computes
# over copied units, which no width init keeps.
EXACT_PAIRS = {"qwen3-0.6b-1.7b", "olmo2-1b-7b"}


@pytest.mark.parametrize("pair", sorted(ANALOGUES))
def test_published_pairs_in_small_grow_and_say_how_far_they_start(pair):
    """Every analogue builds with the preserving inits: the source's logits for EXACT_PAIRS (Qwen3's per-head
    and OLMo 2's whole-projection q/k norms, OLMo 2's norms after the sublayers), for the others a loss near
    the source's."""
    s, t = ANALOGUES[pair]
    src = _model(s)
    tgt = ModelConfig.from_hf(t)
    op = operator_from(src, tgt, PRESERVING)
    ids = ids_for(src.cfg)
    with torch.no_grad():
        grown, source = GrownModel(op)(ids), src(ids)
    assert torch.isfinite(grown).all()
    loss = [torch.nn.functional.cross_entropy(x[:, :-1].flatten(0, 1), ids[:, 1:].flatten()) for x in (grown, source)]
    assert abs(loss[0] - loss[1]) < 0.5, loss  # a start near the source, not a random model (ln 96 = 4.56)
    if pair in EXACT_PAIRS:
        torch.testing.assert_close(grown, source, atol=ATOL, rtol=0)
    said = " ".join(notes(src.cfg, tgt))
    if tgt.head_dim != src.cfg.head_dim:
        assert f"head_dim {src.cfg.head_dim} -> {tgt.head_dim}" in said
    if tgt.num_layers < src.cfg.num_layers:
        assert f"layers {src.cfg.num_layers} -> {tgt.num_layers}" in said
