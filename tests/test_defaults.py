"""Every command with only its required flags and the shortest lengths runs: no default refuses another
(the warmups follow the run when not given, the sequence length the model's positions), while a warmup or a
length the user gave that does not fit is still refused in one line."""

from __future__ import annotations

import json

import pytest

from ligo_ds.training.rundir import read_metrics
from ligo_ds.training.schedule import Schedule, lr_at

from conftest import TINY, make_inputs
from procs import ligo

pytestmark = pytest.mark.multiproc


def test_default_warmups_follow_the_run():
    for total, expected in ((1, 0), (5, 0), (40, 4), (400, 40), (10_000, 100)):
        assert Schedule(max_steps=total).warmup(total) == expected, total
    assert Schedule(max_steps=10, schedule="wsd", decay_fraction=0.95).warmup(10) == 0  # never into the decay
    # the first step of a short run trains at a learning rate above zero, and the peak is reached
    lrs = [lr_at(step, 40, Schedule(max_steps=40, lr=1.0)) for step in range(40)]
    assert lrs[0] > 0 and max(lrs) == 1.0 and lrs[-1] < lrs[4]


def test_each_command_runs_with_only_its_required_flags(tmp_path):
    # 64 positions, fewer than the default --seq-len's 256: a length not given follows the model
    large = TINY
    small = {**large, "num_hidden_layers": 1}
    root = make_inputs(tmp_path, "def f{i}(x):\n    return x * {m}\n", small=small, large=large, repeat=30)
    data, model, large = str(root / "data"), str(root / "small"), str(root / "large.json")
    runs = {
        "pretrain": ["pretrain", "--model", large, "--data", data, "--out", str(root / "p"), "--max-steps", "1"],
        "pretrain-40": ["pretrain", "--model", large, "--data", data, "--out", str(root / "p40"), "--max-steps", "12"],
        "fit": ["fit", "--source", model, "--target", large, "--data", data, "--out", str(root / "f"), "--steps", "1"],
        "grow": [
            "grow",
            "--source",
            model,
            "--target",
            large,
            "--data",
            data,
            "--out",
            str(root / "g"),
            "--fit-steps",
            "1",
            "--max-steps",
            "1",
        ],  # fmt: skip
    }
    for argv in runs.values():
        ligo("single", 1, argv)  # raises with the output on a non-zero exit
    assert [r["step"] for r in read_metrics(root / "p" / "metrics.jsonl") if "loss" in r] == [1]
    for run in ("p", "f", "g/fit", "g/train"):
        assert json.loads((root / run / "config.json").read_text())["identity"]["seq_len"] == 64, run
    first = next(r for r in read_metrics(root / "p40" / "metrics.jsonl") if "lr" in r)
    assert first["lr"] > 0
    for argv in (
        ["eval", str(root / "p")],
        ["export", str(root / "p"), "--out", str(root / "exported")],
        ["plan", "--source", model, "--target", large],
        ["inspect", "--model", large],
        ["generate", str(root / "g")],  # a grow RUN_DIR: its trained model, with the data's tokenizer
    ):
        ligo("single", 1, argv)
    assert json.loads((root / "exported" / "config.json").read_text())["model_type"] == "llama"
    # the API takes a run directory as the commands' MODEL does: its final model
    import torch

    import ligo_ds

    run, final = ligo_ds.load_model(root / "p"), ligo_ds.load_model(root / "p" / "hf")
    assert all(torch.equal(a, b) for a, b in zip(run.state_dict().values(), final.state_dict().values()))
    assert ligo_ds.load_config(root / "g").num_layers == TINY["num_hidden_layers"]  # a grow RUN_DIR: its training


def test_a_warmup_the_user_gave_that_does_not_fit_is_refused(tmp_path):
    root = make_inputs(tmp_path, "x{i} = {m}\n", small={**TINY, "num_hidden_layers": 1}, large=TINY)
    model, large, data = str(root / "small"), str(root / "large.json"), ["--data", str(root / "data")]

    def refused(*argv: str) -> str:
        """The output of a command that must exit 2, before it writes its run folder."""
        out = ligo("single", 1, [*argv, *data], check=False)
        assert out.returncode == 2, out.stdout[-2000:]
        return out.stdout

    pretrain = ["pretrain", "--model", large, "--max-steps", "2"]
    said = refused(*pretrain, "--out", str(root / "p"), "--warmup-steps", "5")
    assert "--warmup-steps 5 is longer than the run (2 steps)" in said
    fit = ["fit", "--source", model, "--target", large, "--out", str(root / "f"), "--steps", "2"]
    assert "--operator-warmup 3 is longer than the fit (--steps 2)" in refused(*fit, "--operator-warmup", "3")
    # a --seq-len the user gave that the model cannot hold stays refused
    said = refused(*pretrain, "--out", str(root / "s"), "--seq-len", "128")
    assert "--seq-len 128 exceeds the model's 64 positions" in said
    assert not any((root / run).exists() for run in ("p", "f", "s"))
