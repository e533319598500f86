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
