"""LiGO growth: pure functions against loops, heuristics as special cases, function preservation,
operator forward == materialised model, gradients, and refusals."""

from __future__ import annotations

import itertools

import pytest
import torch
import transformers
from conftest import HF_CASES

from ligo_ds import ConfigError, ModelConfig, load_model
from ligo_ds.growth import GrowthSpec, GrownModel, grow, materialise, write_grown
from ligo_ds.growth import functional as G
from ligo_ds.growth import init as I
from ligo_ds.model import Decoder

ATOL = 1e-4


def doubled(case: str, layers: int = 2) -> dict:
    """The case's HF config with hidden size, heads, kv heads and MLP width x2, layers x `layers`."""
    h = dict(HF_CASES[case])
    if h["model_type"] == "gpt2":
        h.update(n_embd=2 * h["n_embd"], n_head=2 * h["n_head"], n_layer=layers * h["n_layer"],
                 n_inner=2 * (h.get("n_inner") or 4 * h["n_embd"]))
    else:
        h.update(hidden_size=2 * h["hidden_size"], num_attention_heads=2 * h["num_attention_heads"],
                 num_key_value_heads=2 * h["num_key_value_heads"], intermediate_size=2 * h["intermediate_size"],
                 num_hidden_layers=layers * h["num_hidden_layers"])
        if "head_dim" in h:
            h["head_dim"] = HF_CASES[case]["head_dim"]
    return h


def source(case: str, seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    model = Decoder(ModelConfig.from_hf(HF_CASES[case])).eval()
    with torch.no_grad():  # random norms and biases too, so they are tested
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def ids_for(cfg: ModelConfig, T: int = 20) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (2, T), generator=torch.Generator().manual_seed(5))


def perturb(module: torch.nn.Module, scale: float = 0.05) -> None:
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn_like(p))


# ---- pure functions against loops --------------------------------------------------------------

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
        loop[a_ * hd:(a_ + 1) * hd] += e[a_, b_] * w[b_ * hd:(b_ + 1) * hd]
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


# ---- initialisations ---------------------------------------------------------------------------

def test_inits():
    gen = torch.Generator().manual_seed(0)
    sel = I.select(6, 4)
    assert torch.equal(sel[:4], torch.eye(4)) and sel[4, 0] == 1 and sel[5, 1] == 1
    rnd = I.convex(6, 4, gen)
    assert torch.equal(rnd[:4], torch.eye(4)) and torch.allclose(rnd[4:].sum(1), torch.ones(2)) and (rnd >= 0).all()
    assert torch.equal(I.depth_matrix("stack", 5, 2, gen).argmax(1), torch.tensor([0, 1, 0, 1, 0]))
    assert torch.equal(I.depth_matrix("interpolate", 6, 3, gen).argmax(1), torch.tensor([0, 0, 1, 1, 2, 2]))
    zero_o = I.depth_matrix("zero", 6, 3, gen, output_projection=True)
    assert zero_o.sum(1).tolist() == [1, 0, 1, 0, 1, 0]
    assert torch.equal(I.depth_matrix("zero", 6, 3, gen).argmax(1), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert torch.allclose(I.depth_matrix("random", 4, 3, gen).sum(1), torch.ones(4))
    noisy = I.add_depth_noise(zero_o, 0.03, gen)
    assert torch.equal(noisy[1], zero_o[1]) and torch.allclose(noisy.sum(1), zero_o.sum(1))


# ---- special cases and function preservation ---------------------------------------------------

@pytest.mark.parametrize("case", ["gpt2", "llama_gqa_tied", "llama_bias", "qwen2_gqa"])
@pytest.mark.parametrize("order", ["paper", "official"])
def test_identity_growth_reproduces_source(case, order):
    src = source(case)
    op = grow(src, src.cfg, GrowthSpec(width_init="select", depth_init="stack", order=order))
    ids = ids_for(src.cfg)
    with torch.no_grad():
        torch.testing.assert_close(GrownModel(op)(ids), src(ids), atol=ATOL, rtol=0)


@pytest.mark.parametrize("depth_init, source_of", [("stack", lambda i, l1, l2: i % l1),
                                                   ("interpolate", lambda i, l1, l2: i * l1 // l2)])
@pytest.mark.parametrize("case", ["gpt2", "llama_gqa_tied"])
def test_depth_heuristics_equal_hand_built_models(case, depth_init, source_of):
    src = source(case)
    h = dict(HF_CASES[case])
    h["n_layer" if h["model_type"] == "gpt2" else "num_hidden_layers"] = 5
    tgt_cfg = ModelConfig.from_hf(h)
    by_hand = Decoder(tgt_cfg).eval()
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("blocks.")}
    for i in range(5):
        j = source_of(i, src.cfg.num_layers, 5)
        state.update({f"blocks.{i}.{k}": v for k, v in src.blocks[j].state_dict().items()})
    by_hand.load_state_dict(state)
    op = grow(src, tgt_cfg, GrowthSpec(depth_init=depth_init))
    ids = ids_for(src.cfg)
    with torch.no_grad():
        torch.testing.assert_close(GrownModel(op)(ids), by_hand(ids), atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", ["gpt2", "gpt2_untied_gelu", "llama_gqa_tied", "llama", "qwen2_gqa",
                                  "mistral_window_headdim"])
def test_net2net_and_zero_depth_preserve_the_function(case):
    src = source(case)
    tgt = ModelConfig.from_hf(doubled(case))
    op = grow(src, tgt, GrowthSpec(width_init="net2net", depth_init="zero"))
    ids = ids_for(src.cfg)
    with torch.no_grad():
        torch.testing.assert_close(GrownModel(op)(ids), src(ids), atol=ATOL, rtol=0)


def test_paper_tying_does_not_preserve_width_growth():
    """The paper's in = out tying starts away from the source (reference/ligo.md): a check that the
    preservation test above can fail."""
    src = source("gpt2")
    op = grow(src, ModelConfig.from_hf(doubled("gpt2")), GrowthSpec(width_init="select", depth_init="zero"))
    ids = ids_for(src.cfg)
    with torch.no_grad():
        assert (GrownModel(op)(ids) - src(ids)).abs().max() > 0.1


# ---- operator forward == materialised model ----------------------------------------------------

@pytest.mark.parametrize("case", ["gpt2", "llama_gqa_tied", "gpt2_untied_gelu", "llama_bias"])
@pytest.mark.parametrize("spec", [GrowthSpec(width_init="random", depth_init="random", noise=0.01),
                                  GrowthSpec(width_init="net2net", depth_init="zero", order="official"),
                                  GrowthSpec(width_init="select", depth_init="interpolate", tying="inverse")])
def test_operator_forward_equals_materialised_model(case, spec, tmp_path):
    src = source(case)
    op = grow(src, ModelConfig.from_hf(doubled(case)), spec)
    perturb(op)  # away from any special case
    ids = ids_for(src.cfg)
    with torch.no_grad():
        driven = GrownModel(op)(ids)
        torch.testing.assert_close(materialise(op).eval()(ids), driven, atol=ATOL, rtol=0)
    write_grown(op, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, driven, atol=ATOL, rtol=0)


def test_checkpointed_and_plain_forward_agree():
    src = source("llama_gqa_tied")
    op = grow(src, ModelConfig.from_hf(doubled("llama_gqa_tied")), GrowthSpec(width_init="random"))
    ids = ids_for(src.cfg)
    losses, grads = [], []
    for ckpt in (True, False):
        op.zero_grad()
        loss = GrownModel(op, checkpoint_blocks=ckpt)(ids[:, :-1], ids[:, 1:])
        loss.backward()
        losses.append(loss.detach())
        grads.append(op.residual.b_emb.grad.clone())
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("case", ["gpt2", "llama_gqa_tied"])
@pytest.mark.parametrize("spec", [GrowthSpec(width_init="random"),
                                  GrowthSpec(width_init="random", order="official"),
                                  GrowthSpec(width_init="net2net", depth_init="zero")])
def test_operator_flops_are_a_fit_step_less_the_large_models_own(case, spec):
    """What the fit adds per step, counted once from one block, equals a whole fit step's count (no block
    checkpointing, as training FLOPs count no recompute) less the grown model trained on its own."""
    from torch.utils.flop_counter import FlopCounterMode

    from ligo_ds.flops import operator_flops

    src = source(case)
    op = grow(src, ModelConfig.from_hf(doubled(case, layers=3)), spec)
    ids = ids_for(src.cfg)

    def step_flops(model) -> int:
        with FlopCounterMode(display=False) as counter:
            model(ids[:, :-1], ids[:, 1:]).backward()
        return counter.get_total_flops()

    counted = operator_flops(op)
    assert all(p.grad is None for p in op.parameters()), "counting leaves no gradients behind"
    whole = step_flops(GrownModel(op, checkpoint_blocks=False))
    own = step_flops(materialise(op).train())
    assert counted == whole - own > 0


@pytest.mark.parametrize("case", ["gpt2", "llama_bias"])
def test_gradients_reach_operator_only(case):
    src = source(case)
    op = grow(src, ModelConfig.from_hf(doubled(case)), GrowthSpec(width_init="random", depth_init="zero"))
    ids = ids_for(src.cfg)
    GrownModel(op)(ids[:, :-1], ids[:, 1:]).backward()
    learned = [(n, p) for n, p in op.named_parameters() if p.requires_grad]
    frozen = [(n, p) for n, p in op.named_parameters() if not p.requires_grad]
    assert learned and frozen
    assert [n for n, p in learned if p.grad is None or not p.grad.abs().sum() > 0] == []
    assert [n for n, p in frozen if p.grad is not None] == []
    assert {n.split(".")[0] for n, _ in frozen} == {"source_layers", "source_global"}


def test_param_counts_and_repr():
    src = source("gpt2")
    tgt = ModelConfig.from_hf(doubled("gpt2"))
    op = grow(src, tgt, GrowthSpec())
    c = op.param_counts()
    assert c["source"] == src.num_params() and c["target"] == tgt.num_params()
    d1, d2, f1, f2, h1, h2 = 64, 128, 256, 512, 4, 8
    per_layer = h2 * h1 * 3 + f2 * f1
    assert c["operator"] == d2 * d1 + 2 * per_layer + 8 * 4 * 2  # B_emb, L1 layer widths, 8 depth kinds
    assert f"operator {c['operator']:,}" in repr(op)
    official = grow(src, tgt, GrowthSpec(order="official")).param_counts()["operator"]
    assert official == d2 * d1 + 4 * per_layer + 8 * 4 * 2, "official order: one width set per target layer"


# ---- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case, change, message", [
    ("llama", dict(num_hidden_layers=1), "target is smaller than the source: num_layers 1 < 2"),
    ("llama", dict(intermediate_size=64), "intermediate_size 64 < 96"),
    ("llama", dict(vocab_size=128), "vocabularies differ: source vocab_size 96, target 128"),
    ("llama", dict(hidden_size=128, num_attention_heads=4), "head_dim changes from 16 to 32: RoPE rotates"),
    ("gpt2", dict(n_embd=128), "head_dim changes from 16 to 32: the operator grows attention by whole heads"),
    ("llama", dict(tie_word_embeddings=True), "tie_embeddings: source False, target True"),
    ("gpt2", dict(n_positions=128), "learned position tables differ in length"),
])
def test_refused_pairs(case, change, message):
    src = source(case)
    with pytest.raises(ConfigError, match=message):
        grow(src, ModelConfig.from_hf({**HF_CASES[case], **change}), GrowthSpec())


def test_family_mismatch_and_bad_target():
    with pytest.raises(ConfigError, match="source is a gpt2 model \\(gpt2 family\\), target a llama model"):
        grow(source("gpt2"), ModelConfig.from_hf({**HF_CASES["llama"], "vocab_size": 96}), GrowthSpec())
    with pytest.raises(ConfigError, match="hidden size 130 is not divisible by the number of attention heads 8"):
        ModelConfig.from_hf({**HF_CASES["llama"], "hidden_size": 130, "num_attention_heads": 8})


def test_spec_validation():
    with pytest.raises(ConfigError, match="net2net .* cannot be combined with --tying paper"):
        GrowthSpec(width_init="net2net", tying="paper")
    with pytest.raises(ConfigError, match="--depth-init 'copy': expected one of stack, interpolate, random, zero"):
        GrowthSpec(depth_init="copy")
    assert GrowthSpec(width_init="net2net").resolved_tying == "inverse"
    assert GrowthSpec().resolved_tying == "paper"


def test_grow_from_hf_checkpoint(hf_checkpoint):
    hf, directory = hf_checkpoint("llama_gqa_tied")
    src = load_model(directory).eval()
    op = grow(src, ModelConfig.from_hf(doubled("llama_gqa_tied")), GrowthSpec(width_init="net2net", depth_init="zero"))
    ids = ids_for(src.cfg)
    with torch.no_grad():
        torch.testing.assert_close(materialise(op)(ids), hf(ids).logits, atol=ATOL, rtol=0)
