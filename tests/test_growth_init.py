"""growth/init.py: the initialisations, and their registries as the CLI's choices."""

from __future__ import annotations

import pytest
import torch

from ligo_ds import ConfigError, ModelConfig
from ligo_ds.growth import GrownModel, operator_from
from ligo_ds.growth import init as I
from ligo_ds.growth.grow import GrowOptions
from ligo_ds.options import flat_options, from_values

from conftest import doubled, ids_for, random_source

GROW = dict(source="s", target="t.json", data="d", out="o", max_steps=1000)


def test_inits():
    gen = torch.Generator().manual_seed(0)
    sel = I.select(6, 4)
    assert torch.equal(sel[:4], torch.eye(4)) and sel[4, 0] == 1 and sel[5, 1] == 1
    rnd = I.convex(6, 4, gen)
    assert torch.equal(rnd[:4], torch.eye(4)) and torch.allclose(rnd[4:].sum(1), torch.ones(2)) and (rnd >= 0).all()
    assert torch.equal(I.stack(5, 2, gen).argmax(1), torch.tensor([0, 1, 0, 1, 0]))
    assert torch.equal(I.interpolate(6, 3, gen).argmax(1), torch.tensor([0, 0, 1, 1, 2, 2]))
    zero_o = I.zero(6, 3, gen, output_projection=True)
    assert zero_o.sum(1).tolist() == [1, 0, 1, 0, 1, 0]
    assert torch.equal(I.zero(6, 3, gen).argmax(1), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert torch.allclose(I.random_mix(4, 3, gen).sum(1), torch.ones(4))
    noisy = I.add_depth_noise(zero_o, 0.03, gen)
    assert torch.equal(noisy[1], zero_o[1]) and torch.allclose(noisy.sum(1), zero_o.sum(1))


def test_the_cli_offers_every_registered_initialisation():
    choices = {o.name: o.choices for o in flat_options(GrowOptions)}
    assert tuple(choices["width_init"]) == tuple(I.WIDTH_INITS) == ("select", "random", "net2net")
    assert tuple(choices["depth_init"]) == tuple(I.DEPTH_INITS) == ("stack", "interpolate", "random", "zero")


def test_a_new_initialisation_is_one_registered_function():
    """What init.py's docstring promises: a decorated function is a choice of the CLI, and the operator
    builds from it."""

    @I.width_init("halves")
    def halves(n_new, n_old, gen):  # every new unit half of an old one: not function preserving
        return 0.5 * I.select(n_new, n_old)

    @I.depth_init("first")
    def first(n_tgt, n_src, gen, *, output_projection=False):  # every layer a copy of the first
        w = torch.zeros(n_tgt, n_src)
        w[:, 0] = 1.0
        return w

    try:
        opts = from_values(GrowOptions, {**GROW, "width_init": "halves", "depth_init": "first"})
        src = random_source("llama")
        op = operator_from(src, ModelConfig.from_hf(doubled("llama")), opts.growth.spec(seed=0))
        assert torch.allclose(op.residual.b_emb[64:], 0.5 * I.select(128, 64)[64:], atol=0.05)  # noise 0.01
        assert torch.equal(op.residual.b_emb[:64], 0.5 * torch.eye(64))
        assert torch.allclose(op.depth.q, first(4, 2, None), atol=0.02)
        with torch.no_grad():
            assert GrownModel(op)(ids_for(src.cfg)).isfinite().all()
    finally:
        del I.WIDTH_INITS["halves"], I.DEPTH_INITS["first"]
    with pytest.raises(ConfigError, match="--width-init 'halves': expected one of select, random, net2net$"):
        from_values(GrowOptions, {**GROW, "width_init": "halves"})


def _gemma_kinds(layers: int, pattern: int = 6) -> tuple[str, ...]:
    return tuple("sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(layers))


def test_zero_places_each_source_layer_on_a_layer_of_its_kind():
    """Gemma 3 1B -> 4B: 26 -> 34 layers, a full-attention layer every sixth. Each source layer lands, in
    order, on a target layer of its kind; new layers add nothing and copy a layer of their own kind."""
    src, tgt = _gemma_kinds(26), _gemma_kinds(34)
    kept = I.place_by_kind(src, tgt)
    assert kept == sorted(set(kept)) and all(tgt[i] == src[j] for j, i in enumerate(kept))
    assert max(abs(i - j * 34 // 26) for j, i in enumerate(kept)) <= 6  # spread, not piled at the start
    out = I.zero_by_kind(src, tgt, output_projection=True)
    assert out.sum() == 26 and (out.sum(dim=1) > 0).sum() == 26
    rest = I.zero_by_kind(src, tgt, output_projection=False)
    assert (rest.sum(dim=1) == 1).all()
    assert all(src[int(rest[i].argmax())] == tgt[i] for i in range(34))


def test_a_target_without_room_for_the_sources_kinds_is_refused_by_name():
    with pytest.raises(
        ConfigError, match="layer kinds: the source's 12 layers .2 full_attention, 10 sliding_attention"
    ):
        I.place_by_kind(_gemma_kinds(12), _gemma_kinds(14, pattern=12))


def test_other_depth_inits_mix_only_layers_of_one_kind():
    src, tgt = _gemma_kinds(6, pattern=3), _gemma_kinds(9, pattern=3)
    gen = torch.Generator().manual_seed(0)
    for name in ("stack", "interpolate", "random"):
        w = I.depth_matrix(name, 9, 6, gen, False, (src, tgt))
        assert torch.allclose(w.sum(dim=1), torch.ones(9)), name
        for i in range(9):
            assert all(src[j] == tgt[i] for j in range(6) if w[i, j] != 0), (name, i)
