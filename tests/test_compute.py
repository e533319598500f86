"""model/compute.py: the chunked LM head + loss equals F.cross_entropy on whole-batch logits, activation
checkpointing and torch.compile leave the loss and gradients as they were; on 2 ranks under ZeRO-3 a
pretraining run with the options on, killed and resumed, ends where an uninterrupted one does, and a fit
with them reports the loss its grown model gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from ligo_ds import ModelConfig
from ligo_ds.data.batches import window_batch
from ligo_ds.data.reading import TokenData
from ligo_ds.errors import ConfigError
from ligo_ds.growth import GrownModel, GrowthSpec, operator_from
from ligo_ds.growth.fit import FitOptions
from ligo_ds.growth.grow import GrowOptions
from ligo_ds.model.compute import SAVED_OPS, checkpointed, chunked_lm_loss, save_matmuls
from ligo_ds.model.decoder import Decoder, lm_loss
from ligo_ds.options import from_values
from ligo_ds.training.pretrain import PretrainOptions

from conftest import HF_CASES, LARGE_LLAMA, SMALL_LLAMA, TINY, cli, doubled, ids_for, random_source, series, train_args
from procs import ligo

# Float32 against F.cross_entropy on whole-batch logits: the same per-token kernels, sums in another order.
TOL = dict(atol=1e-6, rtol=1e-6)


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


# ---- the chunked LM head + loss ---------------------------------------------------------------------


@pytest.mark.parametrize("vocab, tokens, chunk", [(96, 40, 7), (5000, 150, 64), (320, 64, 1024)])
def test_chunked_loss_and_gradients_equal_cross_entropy_on_whole_logits(vocab, tokens, chunk):
    """Ragged last chunks (40 = 5 x 7 + 5, 150 = 2 x 64 + 22) and a batch smaller than one chunk."""
    gen = torch.Generator().manual_seed(vocab)
    h = torch.randn(2, tokens // 2, 32, generator=gen, requires_grad=True)
    w = (0.5 * torch.randn(vocab, 32, generator=gen)).requires_grad_()
    t = torch.randint(0, vocab, (2, tokens // 2), generator=gen)
    ref = lm_loss(F.linear(h, w), t)
    ref_h, ref_w = torch.autograd.grad(ref, (h, w))
    got = chunked_lm_loss(h, w, t, chunk)
    got_h, got_w = torch.autograd.grad(got, (h, w))
    torch.testing.assert_close(got, ref, **TOL)
    torch.testing.assert_close(got_h, ref_h, **TOL)
    torch.testing.assert_close(got_w, ref_w, **TOL)
    with torch.no_grad():  # evaluation: the loss alone
        torch.testing.assert_close(chunked_lm_loss(h, w, t, chunk), ref, **TOL)


@pytest.mark.parametrize("case", ["gpt2", "gpt2_untied_gelu", "llama", "llama_gqa_tied"])
def test_decoder_loss_and_gradients_equal_whole_logits(case):
    """Tied heads too: the embedding's gradient sums the lookup's and the head's, the head's from chunks."""
    model = random_source(case).train()
    model.loss_chunk = 7
    ids = ids_for(model.cfg, T=21)
    ref = lm_loss(model(ids[:, :-1]), ids[:, 1:])
    ref.backward()
    expected = grads(model)
    model.zero_grad()
    got = model(ids[:, :-1], ids[:, 1:])
    got.backward()
    torch.testing.assert_close(got, ref, **TOL)
    assert grads(model).keys() == expected.keys()
    for name, g in grads(model).items():
        torch.testing.assert_close(g, expected[name], **TOL, msg=lambda m, name=name: f"{name}: {m}")


def test_chunked_loss_in_bf16_is_the_plain_heads():
    """In bf16 each chunk's logits are the plain head's (bf16 matmul, fp32 log-softmax); the head's gradient
    is summed over chunks in fp32 instead of leaving one bf16 matmul."""
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(2, 75, 32, generator=gen).bfloat16().requires_grad_()
    w = (0.5 * torch.randn(5000, 32, generator=gen)).bfloat16().requires_grad_()
    t = torch.randint(0, 5000, (2, 75), generator=gen)
    ref = lm_loss(F.linear(h, w), t)
    ref_h, ref_w = torch.autograd.grad(ref, (h, w))
    got = chunked_lm_loss(h, w, t, 64)
    got_h, got_w = torch.autograd.grad(got, (h, w))
    assert got.dtype == torch.float32 and (got_h.dtype, got_w.dtype) == (torch.bfloat16, torch.bfloat16)
    torch.testing.assert_close(got, ref, **TOL)
    torch.testing.assert_close(got_h, ref_h, atol=0, rtol=0)
    torch.testing.assert_close(got_w.float(), ref_w.float(), atol=1e-2 * ref_w.float().abs().max().item(), rtol=0)


# ---- activation checkpointing -----------------------------------------------------------------------


@pytest.mark.parametrize("case", ["gpt2_untied_gelu", "llama_gqa_tied", "mistral_window_headdim"])
def test_checkpointing_keeps_loss_and_gradients(case):
    """Recomputation runs the same kernels on the same inputs: equal to the bit on the CPU."""
    ids = ids_for(ModelConfig.from_hf(HF_CASES[case]), T=21)
    results = {}
    for mode in ("none", "full", "selective"):
        model = random_source(case).train()
        for block in model.blocks:
            block.checkpointing = mode
        loss = model(ids[:, :-1], ids[:, 1:])
        loss.backward()
        results[mode] = (loss.detach(), grads(model))
    for mode in ("full", "selective"):
        assert results[mode][0] == results["none"][0]
        for name, g in results[mode][1].items():
            torch.testing.assert_close(g, results["none"][1][name], atol=0, rtol=0)


@pytest.mark.parametrize("case", ["gpt2", "llama_gqa_tied", "mistral_window_headdim"])
def test_selective_keeps_each_matmul_and_the_attention(case):
    """What the policy keeps of a block, as the CPU runs it: 4 projections (qkv, out, up, down) and one
    attention kernel; a name missing from SAVED_OPS would quietly turn selective into full."""
    model = random_source(case).train()
    kept = []

    def recording(ctx, op, *args, **kwargs):
        policy = save_matmuls(ctx, op)
        if not ctx.is_recompute and op in SAVED_OPS:
            kept.append(op.name())
        return policy

    x = torch.randn(2, 20, model.cfg.hidden_size, requires_grad=True)
    checkpointed(
        "selective", model.blocks[0].residual, x, model.rope(20, None)["full_attention"], policy=recording
    ).sum().backward()
    attention = [k for k in kept if "scaled_dot_product" in k]
    assert len(kept) == 5 and len(attention) == 1, kept


def test_fit_checkpointing_keeps_loss_and_gradients():
    src = random_source("llama_gqa_tied")
    op = operator_from(src, ModelConfig.from_hf(doubled("llama_gqa_tied")), GrowthSpec(width_init="random"))
    ids = ids_for(src.cfg)
    results = {}
    for mode in ("none", "full", "selective"):
        op.zero_grad()
        loss = GrownModel(op, mode, loss_chunk=7)(ids[:, :-1], ids[:, 1:])
        loss.backward()
        results[mode] = (loss.detach(), grads(op))
    for mode in ("full", "selective"):
        assert results[mode][0] == results["none"][0]
        for name, g in results[mode][1].items():
            torch.testing.assert_close(g, results["none"][1][name], atol=0, rtol=0)


# ---- torch.compile ----------------------------------------------------------------------------------


def test_compiled_blocks_equal_eager():
    """The 2-rank pretraining test's model (TINY) at its micro-batch and length, training and evaluation, one
    thread as its ranks run: the same graphs, so its ranks find them compiled (inductor's cache). Fused
    kernels round otherwise: equal within 1e-5."""
    torch.set_num_threads(1)
    cfg = ModelConfig.from_hf(TINY)
    ids = ids_for(cfg, T=33)
    eager = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = Decoder(cfg, "selective", loss_chunk=24)
        if compiled:
            model.compile_blocks()
        loss = model(ids[:, :-1], ids[:, 1:])
        loss.backward()
        with torch.no_grad():
            val = model(ids[:, :-1], ids[:, 1:])
        if not compiled:
            eager = {"loss": loss.detach(), "val": val, **grads(model)}
            continue
        torch.testing.assert_close(loss.detach(), eager["loss"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(val, eager["val"], atol=1e-5, rtol=1e-5)
        for name, g in grads(model).items():
            torch.testing.assert_close(g, eager[name], atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


def test_compiled_fit_blocks_equal_eager():
    """The fit compiles its one skeleton block, run on every layer's produced weights by functional_call
    (the 2-rank fit test's shapes, as above)."""
    torch.set_num_threads(1)
    source = Decoder(ModelConfig.from_hf(SMALL_LLAMA))
    op = operator_from(source, ModelConfig.from_hf(LARGE_LLAMA), GrowthSpec(width_init="random"))
    ids = ids_for(source.cfg, T=33)
    results = []
    for compiled in (False, True):
        model = GrownModel(op, "full", loss_chunk=24)
        if compiled:
            model.compile_blocks()
        op.zero_grad()
        loss = model(ids[:, :-1], ids[:, 1:])
        loss.backward()
        with torch.no_grad():
            val = model(ids[:, :-1], ids[:, 1:])
        results.append((loss.detach(), val, grads(op)))
    (loss, val, g), (c_loss, c_val, c_g) = results
    torch.testing.assert_close(c_loss, loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c_val, val, atol=1e-5, rtol=1e-5)
    for name in g:
        torch.testing.assert_close(c_g[name], g[name], atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


# ---- options ----------------------------------------------------------------------------------------

PRETRAIN = {"model": "m.json", "out": "o", "data": "d", "max_steps": 10, "warmup_steps": 2}
GROW = {"source": "s", "target": "t.json", "out": "o", "data": "d", "max_steps": 10, "warmup_steps": 2}


def test_defaults_per_command_and_grow_phases():
    pretrain = from_values(PretrainOptions, PRETRAIN).compute
    fit = from_values(FitOptions, {k: v for k, v in GROW.items() if k not in ("max_steps", "warmup_steps")})
    assert (pretrain.activation_checkpointing, pretrain.compile, pretrain.loss_chunk) == ("none", False, 1024)
    assert fit.compute.activation_checkpointing == "full", "the fit checkpoints its produced weights"
    assert fit.run_spec(None, None).compute == fit.compute
    opts = from_values(GrowOptions, {**GROW, "activation_checkpointing": "selective", "compile": True})
    assert opts.fit_phase().compute.activation_checkpointing == "full"  # --fit-activation-checkpointing
    assert opts.fit_phase().compute.compile and opts.train_phase().compute.compile
    assert opts.train_phase().compute.activation_checkpointing == "selective"
    opts = from_values(GrowOptions, {**GROW, "fit_activation_checkpointing": "none", "loss_chunk": 64})
    assert (opts.fit_phase().compute.activation_checkpointing, opts.fit_phase().compute.loss_chunk) == ("none", 64)
    with pytest.raises(ConfigError, match="--loss-chunk 0: expected at least 1"):
        from_values(PretrainOptions, {**PRETRAIN, "loss_chunk": 0})


def test_selective_fit_under_zero3_is_refused():
    """Refused before the fit starts (growth/fit.py checks first), naming the flag the command was given: grow's
    own flag for its fit phase, which travels with the option."""
    from ligo_ds.growth.fit import check_compute

    fit = {k: v for k, v in GROW.items() if k not in ("max_steps", "warmup_steps")}
    check_compute(from_values(FitOptions, {**fit, "activation_checkpointing": "selective", "ds_config": "zero2"}))
    opts = from_values(GrowOptions, {**GROW, "fit_activation_checkpointing": "selective"})
    with pytest.raises(ConfigError) as refused:
        check_compute(opts.fit_phase())
    assert str(refused.value) == (
        "--fit-activation-checkpointing selective cannot run in a fit under ZeRO-3 (--ds-config zero3): ZeRO-3 "
        "gathers the operator's weights inside each block's recomputed region; use full or none, or ZeRO-1/2"
    )
    with pytest.raises(ConfigError, match="^--activation-checkpointing selective cannot run"):
        check_compute(from_values(FitOptions, {**fit, "activation_checkpointing": "selective"}))


# ---- 2-rank runs --------------------------------------------------------------------------------------

OPTIONS = ["--compile", "--loss-chunk", "24"]  # 64 tokens a micro-batch: chunks of 24, 24 and 16


def pretrain_args(setup, out):
    run = ["--micro-batch", "2", "--ds-config", "zero3", "--max-steps", "4", "--save-every", "2", "--eval-samples", "4"]
    return train_args(setup, out, *run, "--activation-checkpointing", "selective", *OPTIONS)


@pytest.mark.multiproc
def test_zero3_pretraining_with_the_options_killed_and_resumed_ends_exactly_where_an_uninterrupted_run_does(
    pretrain_setup, tmp_path
):
    """Selective checkpointing, compiled blocks and a ragged chunked loss: compiled kernels round otherwise
    than eager ones, so the uninterrupted run has the same options."""
    straight = tmp_path / "straight"
    ligo("torchrun", 2, pretrain_args(pretrain_setup, straight))
    run = tmp_path / "killed"
    killed = ligo("torchrun", 2, pretrain_args(pretrain_setup, run), check=False, LIGO_DS_CRASH_AT="step:3")
    assert killed.returncode != 0 and not (run / "hf").exists()
    ligo("torchrun", 2, pretrain_args(pretrain_setup, run))
    assert (run / "hf/model.safetensors").read_bytes() == (straight / "hf/model.safetensors").read_bytes()
    assert series(run, "loss") == series(straight, "loss") and len(series(run, "loss")) == 4
    assert series(run, "val_loss") == series(straight, "val_loss")


@pytest.mark.multiproc
def test_zero3_fit_with_the_options_reports_the_loss_its_export_gives(growth_setup, tmp_path):
    """Full checkpointing (the fit's default) and a ragged chunked loss, 2 ranks: the loss
    the fit reports equals what transformers computes on the grown model it wrote."""
    s, out = growth_setup, tmp_path / "fit"
    args = cli(
        "fit",
        source=s / "small",
        target=s / "large.json",
        data=s / "data",
        out=out,
        seq_len=32,
        micro_batch=2,
        steps=2,
        operator_warmup=1,
        eval_every=2,
        eval_samples=4,
        width_init="random",
        ds_config="zero3",
    )
    # Not compiled: the compiled fit block is checked against eager in-process above, and compiling costs
    # 20 s per run here.
    ligo("torchrun", 2, [*args, "--loss-chunk", "24"])
    model = transformers.AutoModelForCausalLM.from_pretrained(out / "hf").eval()
    ids, targets = window_batch(TokenData(s / "data").tokens("val"), np.arange(4) * 32, 32)
    with torch.no_grad():
        loss = F.cross_entropy(model(ids).logits.flatten(0, 1), targets.flatten()).item()
    assert loss == pytest.approx(series(out, "val_loss")[-1], rel=1e-5)
