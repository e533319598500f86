"""`ligo-ds plan`: each memory term against what torch and DeepSpeed really hold, the operator's size and
FLOPs against the operator's, refusals in one line, and the whole plan against measured peaks of real runs
(CPU resident set, the same figure a run's metrics report)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ligo_ds.analysis.plan import (
    Setup,
    Zero,
    block_activation_elements,
    block_constant_bytes,
    fit_phase,
    load_zero,
    operator_sizes,
    pretrain_phase,
    zero_states,
)
from ligo_ds.model.config import ModelConfig
from ligo_ds.model.decoder import Block
from ligo_ds.model.rope import rope_tables

from conftest import HF_CASES, doubled, random_source
from published import PAIRS, PUBLISHED

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from compute import LiveBytes, autograd_saved  # noqa: E402  (bench/compute.py's counters)


def saved_by_autograd(block: Block, x: torch.Tensor, rope) -> int:
    """Bytes autograd keeps for the block's backward, its weights and the rope tables (shared by every
    block) left out."""
    return autograd_saved(lambda: block(x, rope), [*block.parameters(), *(rope or ())])[1]


LAYOUTS = ["gpt2", "gpt2_untied_gelu", "llama", "llama_bias", "qwen2_gqa", "mistral_window_headdim"]
LAYOUTS += ["qwen3_headdim_qknorm", "olmo2", "olmo2_bias", "gpt_neox", "gpt_neox_sequential_half", "gemma3"]


# In bf16 the CPU's RMSNorm keeps its input and normalised input upcast to fp32 (CUDA's fused kernel does
# not), so the bf16 rows are the LayerNorm layouts'.
@pytest.mark.parametrize(
    "case, dtype",
    [(c, torch.float32) for c in LAYOUTS] + [(c, torch.bfloat16) for c in LAYOUTS if c.startswith("gpt2")],
)
def test_a_blocks_activations_are_what_autograd_keeps(case, dtype):
    cfg = ModelConfig.from_hf(HF_CASES[case])
    B, T = 2, 24
    w = torch.finfo(dtype).bits // 8
    for mode in ("none", "full", "selective"):
        torch.manual_seed(0)
        block = Block(cfg, mode).to(dtype)
        x = torch.randn(B, T, cfg.hidden_size, dtype=dtype, requires_grad=True)
        rope = rope_tables(cfg, T, x.device) if cfg.positions == "rope" else None
        kept, kept32 = block_activation_elements(cfg, mode)
        expected = B * T * (kept * w + kept32 * 4) + (block_constant_bytes(cfg, T) if mode == "none" else 0)
        if mode == "selective":
            # what a selective checkpoint keeps is out of autograd's saved-tensor hooks' sight: count the
            # storages the block's ops create that are still alive, less its output (its input is not created
            # inside it)
            with LiveBytes([*block.parameters(), x, *(rope or ())]) as created:
                y = block(x, rope)
            held = created.held(y)
            assert held == expected - B * T * cfg.hidden_size * w, (case, mode)
        elif dtype == torch.float32:
            assert saved_by_autograd(block, x, rope) == expected, (case, mode)
        else:  # the CPU's LayerNorm keeps its statistics in bf16, CUDA's in fp32
            assert expected - B * T * kept32 * 2 <= saved_by_autograd(block, x, rope) <= expected, (case, mode)


def test_model_states_fall_as_one_over_n_where_zero_partitions_them():
    P, w = 1_000_000, 2
    base = dict(
        reduce_bucket=0,
        prefetch_bucket=0,
        max_live=10**9,
        persistence_threshold=0,
        contiguous_gradients=True,
        overlap_comm=False,
        offload_optimizer=False,
        offload_param=False,
    )
    for stage in (1, 2, 3):
        zero = Zero(stage=stage, **base)
        one, eight = (zero_states(P, 0, zero, n, w, "cuda") for n in (1, 8))
        assert eight["optimizer"][0] * 8 == one["optimizer"][0] == 12 * P
        assert eight["gradients"][0] * 8 == one["gradients"][0]
        assert eight["weights"][0] * (8 if stage == 3 else 1) == one["weights"][0] == w * P
    # the ZeRO paper's mixed-precision 16 bytes per parameter under ZeRO-3 (2 + 2 + 12), plus the fp32
    # gradient copy DeepSpeed's step reads
    z3 = zero_states(P, 0, Zero(stage=3, **base), 1, w, "cuda")
    assert sum(d for d, _ in z3.values()) == (2 + 2 + 12 + 4) * P
    offload = zero_states(
        P, 0, Zero(stage=3, **{**base, "offload_optimizer": True, "offload_param": True}), 4, w, "cuda"
    )
    assert offload["optimizer"] == (0, 3 * P) and offload["weights"] == (0, P // 2)


def test_zero_knobs_come_from_the_json_with_deepspeeds_defaults(tmp_path):
    assert load_zero("zero3", "--ds-config").overlap_comm and not load_zero("zero1", "--ds-config").overlap_comm
    assert load_zero("zero3_offload", "--ds-config").offload_optimizer
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    z = load_zero(str(path), "--ds-config")
    assert (z.stage, z.reduce_bucket, z.overlap_comm) == (2, 500_000_000, False)


@pytest.mark.parametrize("case", ["gpt2", "llama_gqa_tied"])
@pytest.mark.parametrize("order", ["paper", "official"])
def test_the_operators_size_and_flops_are_the_real_operators(case, order):
    from ligo_ds.growth import GrowthSpec, operator_from
    from ligo_ds.growth.cost import operator_flops, vocab_flops_per_token

    source = random_source(case)
    tgt = ModelConfig.from_hf(doubled(case))
    real = operator_from(source, tgt, GrowthSpec(order=order))
    counts = real.param_counts()
    expected = (counts["operator"], counts["source"], operator_flops(real), vocab_flops_per_token(real))
    assert operator_sizes(source.cfg, tgt, order) == expected


def _setup(**kw) -> Setup:
    base = dict(
        world_size=4,
        zero=load_zero("zero3", "--ds-config"),
        dtype="bf16",
        device="cuda",
        micro_batch=4,
        fit_micro_batch=2,
        seq_len=64,
        checkpointing="none",
        fit_checkpointing="full",
        loss_chunk=1024,
        mfu=0.5,
        peak_flops=1e15,
    )
    return Setup(**{**base, **kw})


def test_flops_and_time_per_step():
    from ligo_ds.training.flops import train_flops_per_token

    cfg = ModelConfig.from_hf(HF_CASES["llama"])
    phase = pretrain_phase(cfg, _setup())
    assert phase.flops_per_step == train_flops_per_token(cfg, 64) * 4 * 64 * 4
    assert phase.seconds_per_step == pytest.approx(phase.flops_per_step / 4 / (0.5 * 1e15))
    source = random_source("llama")
    fit = fit_phase(source.cfg, ModelConfig.from_hf(doubled("llama")), _setup(), "paper")
    assert fit.flops_per_step > train_flops_per_token(ModelConfig.from_hf(doubled("llama")), 64) * 2 * 64 * 4


def plan_cli(capsys, *extra: str) -> subprocess.CompletedProcess:
    """`ligo-ds plan` in this process, as a finished process would report it."""
    from ligo_ds.cli import main

    code = main(["plan", *extra])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["plan", *extra], code, out.out, out.err)


def test_plan_prints_the_table_and_refuses_what_does_not_fit(tmp_path, capsys):
    big = dict(
        model_type="llama",
        num_hidden_layers=32,
        hidden_size=4096,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
        max_position_embeddings=8192,
        vocab_size=128256,
        tie_word_embeddings=False,
    )
    (tmp_path / "8b.json").write_text(json.dumps(big))
    (tmp_path / "small.json").write_text(
        json.dumps(
            {
                **big,
                "num_hidden_layers": 16,
                "hidden_size": 2048,
                "num_attention_heads": 16,
                "num_key_value_heads": 4,
                "intermediate_size": 7168,
            }
        )
    )
    flags = ["--target", str(tmp_path / "8b.json"), "--seq-len", "4096", "--micro-batch", "1"]
    ok = plan_cli(
        capsys,
        *flags,
        "--source",
        str(tmp_path / "small.json"),
        "--world-size",
        "64",
        "--activation-checkpointing",
        "full",
    )
    assert ok.returncode == 0, ok.stderr
    rows = [line for line in ok.stdout.splitlines() if line.startswith("| fit") or line.startswith("| pretrain")]
    assert len(rows) == 2 and "operator coefficients" in ok.stdout
    # An 8B model on 2 ranks of 80 GiB under ZeRO-1: 8B x (2 + 16/2) bytes alone is 75 GiB, plus activations.
    no = plan_cli(capsys, *flags, "--world-size", "2", "--ds-config", "zero1")
    lines = no.stderr.strip().splitlines()
    assert no.returncode == 2 and len(lines) == 1, no.stderr
    assert re.search(
        r"pretrain needs [\d.]+ GiB per rank, more than the 80 GiB given; it would fit with .*zero3", lines[0]
    )
    # and every suggestion is flags that, given, do fit with the figure it named
    suggestions = re.findall(r"((?:--\S+ \S+ ?)+) \(([\d.]+) GiB\)", lines[0].split("it would fit with ")[1])
    assert len(suggestions) == 3, lines[0]
    for given, gib in suggestions:
        fixed = plan_cli(capsys, *flags, "--world-size", "2", "--ds-config", "zero1", *given.split())
        assert fixed.returncode == 0, (given, fixed.stderr)
        row = next(line for line in fixed.stdout.splitlines() if line.startswith("| pretrain"))
        assert float(row.split("|")[8]) == pytest.approx(float(gib), abs=0.051), (given, row)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--world-size", "0"], r"--world-size"),
        (["--mfu", "1.5"], r"--mfu"),
        (["--ds-config", "nonesuch"], r"neither a file nor a preset"),
        (["--source", "{llama}"], r"head_dim|hidden_size|grow"),
    ],
)
def test_bad_plans_are_refused_in_one_line(tmp_path, capsys, extra, message):
    from ligo_ds.cli import main

    (tmp_path / "gpt2.json").write_text(json.dumps(HF_CASES["gpt2"]))
    (tmp_path / "llama.json").write_text(json.dumps(HF_CASES["llama"]))
    extra = [e.replace("{llama}", str(tmp_path / "llama.json")) for e in extra]
    assert main(["plan", "--target", str(tmp_path / "gpt2.json"), *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), lines


@pytest.mark.multiproc
def test_the_plan_is_within_a_quarter_of_measured_peaks(tmp_path):
    """Real 2-rank ZeRO-3 runs, a pretraining and a fit, on shapes whose memory is mostly the model's (GPT-2's
    vocabulary), through bench/plan.py: the plan's total against the largest rank's peak resident set."""
    out = tmp_path / "rows.json"
    bench = Path(__file__).resolve().parent.parent / "bench" / "plan.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--cases", "zero3-2,fit-zero3-2", "--work", str(tmp_path), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["case"] for r in rows] == ["zero3-2", "fit-zero3-2"]
    for r in rows:
        assert r["predicted"] == pytest.approx(r["measured"], rel=0.25), r
        # not a check of the runtime's constant alone: the model's terms are a third of the peak or more
        assert r["measured"] - r["terms"]["runtime"] > r["measured"] / 3, r


@pytest.mark.parametrize("source, target", PAIRS, ids=[f"{s}->{t}" for s, t in PAIRS])
def test_plan_answers_for_the_published_pairs(tmp_path, capsys, source, target):
    """The released shapes, on the meta device: every pair plans (fit and pretraining rows), none refused."""
    for name in (source, target):
        (tmp_path / f"{name}.json").write_text(json.dumps(PUBLISHED[name]))
    result = plan_cli(
        capsys, "--source", str(tmp_path / f"{source}.json"), "--target", str(tmp_path / f"{target}.json")
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| fit", "| pretrain"))]
    assert len(rows) == 2, result.stdout
