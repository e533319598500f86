"""training/evaluation.py and `ligo-ds eval` (commands/eval.py): a run's final model, evaluated by any launcher,
gives the run's own last val_loss; an HF directory with explicit data and windows gives the same number
through transformers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from ligo_ds.data.batches import window_batch
from ligo_ds.data.reading import TokenData
from ligo_ds.training.rundir import read_metrics

from procs import ligo

pytestmark = pytest.mark.multiproc


def _printed_loss(result) -> float:
    line = next(line for line in result.stdout.splitlines() if line.startswith("val_loss "))
    return float(line.split()[1].rstrip(","))


@pytest.mark.parametrize("launcher, ranks", [("single", 1), ("torchrun", 2)])
def test_eval_of_a_run_directory_gives_its_last_val_loss(pretrain_reference, launcher, ranks):
    last = read_metrics(pretrain_reference / "metrics.jsonl")[-1]["val_loss"]
    result = ligo(launcher, ranks, ["eval", str(pretrain_reference)])
    assert _printed_loss(result) == pytest.approx(last, rel=1e-6)
    assert result.stdout.count("val_loss ") == 1, "printed once, by rank 0"


def test_eval_of_an_hf_directory_with_explicit_windows(pretrain_setup, pretrain_reference, tmp_path, capsys):
    argv = ["eval", str(pretrain_reference / "hf"), "--data", str(pretrain_setup / "data")]
    ligo(
        "single",
        1,
        [*argv, "--seq-len", "16", "--eval-samples", "5", "--micro-batch", "2", "--out", str(tmp_path / "r.json")],
    )
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["windows"], result["seq_len"], result["tokens"]) == (5, 16, 80)
    assert result["perplexity"] == pytest.approx(math.exp(result["val_loss"]), rel=1e-12)
    model = transformers.AutoModelForCausalLM.from_pretrained(pretrain_reference / "hf").eval()
    ids, targets = window_batch(TokenData(pretrain_setup / "data").tokens("val"), np.arange(5) * 16, 16)
    with torch.no_grad():
        theirs = F.cross_entropy(model(ids).logits.flatten(0, 1), targets.flatten()).item()
    assert result["val_loss"] == pytest.approx(theirs, rel=1e-5)
    # Refused before any process group or data is opened: through the CLI's entry point in this process.
    from ligo_ds.cli import main

    assert main(["eval", str(pretrain_reference / "hf")]) == 2
    assert "--data is required unless MODEL is a run directory" in capsys.readouterr().err
