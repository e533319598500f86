"""training/pretrain.py (on training/pipeline.py), for real: the exported model reproduces the reported loss, an
HF checkpoint continues where it ended, and a run refuses inputs that do not fit it, touching nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from ligo_ds.data.batches import window_batch
from ligo_ds.data.reading import TokenData
from ligo_ds.training.rundir import read_metrics

from conftest import SAMPLE_PROMPTS, TINY, train_args
from procs import ligo

pytestmark = pytest.mark.multiproc


def test_hf_export_reproduces_reported_val_loss(pretrain_setup, two_rank_run):
    """The 2-rank ZeRO-3 run (shared with test_trainer.py) and `ligo-ds export` of its checkpoint. The exports
    run through the CLI's entry point in this process: they read the shards on disk and start no process
    group, and a launch would add seconds of imports each."""
    from ligo_ds.cli import main

    out = two_rank_run("zero3")
    reported = read_metrics(out / "metrics.jsonl")[-1]["val_loss"]
    model = transformers.AutoModelForCausalLM.from_pretrained(out / "hf").eval()
    val = TokenData(pretrain_setup / "data").tokens("val")
    ids, targets = window_batch(val, np.arange(6) * 32, 32)
    with torch.no_grad():
        logits = model(ids).logits
    ours = F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()
    assert ours == pytest.approx(reported, rel=1e-5)
    # `ligo-ds export` of the same checkpoint gives the same weights, from the shards on disk alone.
    assert main(["export", str(out), "--out", str(out / "exported")]) == 0
    again = transformers.AutoModelForCausalLM.from_pretrained(out / "exported").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, logits, atol=1e-6, rtol=0)
    # Both carry the data's tokenizer, its eos the documents' separator, for evaluation and generation.
    eos = TokenData(pretrain_setup / "data").eos_id
    for hf in (out / "hf", out / "exported"):
        tok = transformers.AutoTokenizer.from_pretrained(hf)
        assert tok.eos_token_id == eos and tok.pad_token_id is not None
        assert transformers.GenerationConfig.from_pretrained(hf).eos_token_id == eos
        assert json.loads((hf / "config.json").read_text())["eos_token_id"] == eos
    # --sample-prompts: each evaluation's greedy texts, on 2 ranks under ZeRO-3; the last are transformers'
    # greedy generate on the export, and TensorBoard holds them as text.
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "val_loss" in r]
    prompts = SAMPLE_PROMPTS.split("\n")[0::2][:2]
    assert [[g["prompt"] for g in r["generated"]] for r in rows] == [prompts] * len(rows) and len(rows) == 3
    tok = transformers.AutoTokenizer.from_pretrained(out / "hf")
    for sample in rows[-1]["generated"]:
        inputs = tok(sample["prompt"], return_tensors="pt")
        with torch.no_grad():
            theirs = model.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        assert sample["text"] == tok.decode(theirs[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert rows[0]["generated"] != rows[-1]["generated"], "six steps change what the model writes"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(out / "tb"), size_guidance={"tensors": 0}).Reload()
    assert {"generated/0/text_summary", "generated/1/text_summary"} <= set(tb.Tags()["tensors"])
    assert main(["export", str(out), "--out", str(out / "bf16"), "--dtype", "bf16"]) == 0
    half = transformers.AutoModelForCausalLM.from_pretrained(out / "bf16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert (out / "bf16/model.safetensors").stat().st_size < 0.6 * (out / "exported/model.safetensors").stat().st_size


def test_continue_from_hf_checkpoint(pretrain_setup, pretrain_reference):
    """An HF directory as --model continues that model: its first validation equals the source's last."""
    out = pretrain_setup / "continued"
    ligo(
        "single",
        1,
        train_args(
            pretrain_setup, out, "--model", str(pretrain_reference / "hf"), "--max-steps", "2", "--micro-batch", "4"
        ),
    )
    first = read_metrics(out / "metrics.jsonl")[0]
    assert first["val_loss"] == pytest.approx(
        read_metrics(pretrain_reference / "metrics.jsonl")[-1]["val_loss"], rel=1e-6
    )


def test_rerun_with_different_options_is_refused(pretrain_setup, pretrain_reference):
    before = {p.name: p.read_bytes() for p in pretrain_reference.iterdir() if p.is_file()}
    result = ligo(
        "single",
        1,
        train_args(pretrain_setup, pretrain_reference, "--max-steps", "6", "--micro-batch", "4", "--lr", "1e-3"),
        check=False,
    )
    assert result.returncode == 2
    assert (
        "belongs to a different run; refusing to resume it. Differences: lr: 0.003 in the run, 0.001 now"
        in result.stdout
    )
    assert {p.name: p.read_bytes() for p in pretrain_reference.iterdir() if p.is_file()} == before


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(max_position_embeddings=16), "--seq-len 32 exceeds the model's 16 positions"),
        (dict(vocab_size=300), "has a vocabulary of 320 tokens, larger than the model's vocab_size 300"),
    ],
)
def test_bad_model_for_data(pretrain_setup, tmp_path, capsys, change, message):
    """Through the CLI's entry point in this process: the check comes before any process group starts or
    anything is written (test_bad_input.py runs such refusals as processes)."""
    from ligo_ds.cli import main

    (tmp_path / "m.json").write_text(json.dumps({**TINY, **change}))
    args = train_args(pretrain_setup, tmp_path / "run", "--model", str(tmp_path / "m.json"), "--max-steps", "2")
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists(), "nothing is written for a refused run"


def test_config_file_with_typo(pretrain_setup, tmp_path, capsys):
    """In this process, as above: the options refuse it (test_bad_input.py's typo row runs it as a process)."""
    from ligo_ds.cli import main

    (tmp_path / "run.json").write_text(json.dumps({"max_steps": 3, "warmup_step": 1}))
    assert main(train_args(pretrain_setup, tmp_path / "run", "--config", str(tmp_path / "run.json"))) == 2
    assert "unknown key 'warmup_step' (did you mean 'warmup_steps'?)" in capsys.readouterr().err


def test_a_mixture_trains_on_each_source_by_weight(pretrain_setup, tmp_path):
    """--data A=0.75,B=0.25: both sources read, each one's tokens in metrics.jsonl, the export works."""
    from ligo_ds.cli import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(40):
        (corpus / f"{i}.txt").write_text(f"class C{i}:\n    x = {i} + {i % 3}\n" * 5)
    other = tmp_path / "other"
    tokenizer_dir = str(pretrain_setup / "data")
    prepare = ["prepare", "--source", str(corpus), "--out", str(other), "--tokenizer", tokenizer_dir]
    # in this process: prepare starts no process group, and a launch would add seconds of imports
    assert main([*prepare, "--val-fraction", "0.2"]) == 0
    out = tmp_path / "run"
    args = train_args(pretrain_setup, out, "--max-steps", "4", "--micro-batch", "8", "--ds-config", "zero2")
    args[args.index("--data") + 1] = f"{pretrain_setup / 'data'}=0.75,{other}=0.25"
    ligo("single", 1, args)
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    shares = [(r["tokens/data"], r["tokens/other"]) for r in rows]
    assert all(a + b == r["tokens"] for (a, b), r in zip(shares, rows, strict=True))
    a, b = shares[-1]
    assert a > b > 0, shares
    identity = json.loads((out / "config.json").read_text())["identity"]["data"]
    assert identity.startswith(f"{pretrain_setup / 'data'}=0.75,{other}=0.25 (meta sha ")
    assert transformers.AutoTokenizer.from_pretrained(out / "hf").eos_token_id == TokenData(other).eos_id
