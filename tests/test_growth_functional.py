"""growth/functional.py: the pure growth math against hand-written loops and definitions."""

from __future__ import annotations

import itertools

import torch

from ligo_ds.growth import functional as G
from ligo_ds.growth import init as I


def test_expand_matches_definition():
    w, b, a = torch.randn(3, 4), torch.randn(5, 3), torch.randn(6, 4)
    torch.testing.assert_close(G.expand(w, b, a), b @ w @ a.T)
    torch.testing.assert_close(G.expand(torch.randn(3), b, None).shape, torch.Size([5]))


def test_expand_heads_equals_kronecker_and_loop():
    e, hd = torch.randn(5, 3), 4
    w = torch.randn(3 * hd, 7)
    kron = torch.kron(e, torch.eye(hd))
    torch.testing.assert_close(G.expand_heads(w, e, hd, dim=0), kron @ w)
    torch.testing.assert_close(G.expand_heads(w.T, e, hd, dim=1), w.T @ kron.T)
    loop = torch.zeros(5 * hd, 7)
    for a_, b_ in itertools.product(range(5), range(3)):
        loop[a_ * hd : (a_ + 1) * hd] += e[a_, b_] * w[b_ * hd : (b_ + 1) * hd]
    torch.testing.assert_close(G.expand_heads(w, e, hd, dim=0), loop)


def test_mix_depth_loop():
    w, stack = torch.randn(4, 3), torch.randn(3, 5, 6)
    for i in range(4):
        torch.testing.assert_close(G.mix_depth(w, stack, i), sum(w[i, j] * stack[j] for j in range(3)))


def test_left_inverse():
    b = torch.randn(7, 4, dtype=torch.float64)
    torch.testing.assert_close(G.left_inverse(b).T @ b, torch.eye(4, dtype=torch.float64))
    sel = I.select(6, 4)  # copy counts 2, 2, 1, 1
    torch.testing.assert_close(G.left_inverse(sel), sel / torch.tensor([2.0, 2.0, 1.0, 1.0]))


def test_query_to_kv_heads_loop():
    e_kv = torch.randn(4, 2)
    h1, h2 = 6, 12  # groups of 3 in both
    out = G.query_to_kv_heads(e_kv, h1, h2)
    loop = torch.zeros(h2, h1)
    for i, j in itertools.product(range(h2), range(h1)):
        if (i % 3) % 3 == j % 3:
            loop[i, j] = e_kv[i // 3, j // 3]
    torch.testing.assert_close(out, loop)
    torch.testing.assert_close(G.query_to_kv_heads(e_kv, 2, 4), e_kv)  # one head per group (MHA): e_kv itself
