"""training/trainer.py and its components, for real: several CPU processes over gloo, every ZeRO stage. The data
split across ranks, evaluation, checkpoints, and a kill and resume that ends exactly where an uninterrupted
run does. `ligo-ds pretrain` drives it, as users do."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pytest

from ligo_ds.training.rundir import read_metrics

from conftest import losses, train_args
from procs import command, job_env, kill_tree, ligo

pytestmark = pytest.mark.multiproc


@pytest.mark.parametrize("stage", ["zero1", "zero2", "zero3", "zero3_offload"])
def test_two_ranks_match_one_process(two_rank_run, pretrain_reference, stage):
    out = two_rank_run(stage)
    ref_loss, ref_val, ref_steps = losses(pretrain_reference)
    loss, val, steps = losses(out)
    assert steps == ref_steps == [0, 1, 2, 3, 4, 5, 6]
    # Same samples, same init, same schedule; only the order of float32 sums differs (a mean of two
    # rank means instead of one mean, gradient all-reduce), which moves losses by ~1e-6 relative.
    np.testing.assert_allclose([x for x in loss if x is not None], [x for x in ref_loss if x is not None], rtol=1e-4)
    np.testing.assert_allclose([x for x in val if x is not None], [x for x in ref_val if x is not None], rtol=1e-4)
    assert loss[-1] < loss[1], "training lowers the loss"
    ds = json.loads((out / "ds_config.json").read_text())
    assert ds["train_batch_size"] == 4 and ds["gradient_clipping"] == 1.0
    assert ds["zero_optimization"]["stage"] == int(stage[4])


# A warmup-stable-decay run: its decay starts at step 12 of 24.
WSD = "--max-steps 24 --micro-batch 2 --ds-config zero3 --save-every 5 --eval-every 10 --schedule wsd "
WSD += "--decay-fraction 0.5"


@pytest.fixture(scope="module")
def straight(pretrain_setup):
    out = pretrain_setup / "straight"
    ligo("torchrun", 2, train_args(pretrain_setup, out, *WSD.split()))
    return out


def test_stop_and_resume_mid_decay_equals_uninterrupted(pretrain_setup, straight):
    args = WSD.split()
    broken = pretrain_setup / "broken"
    proc = subprocess.Popen(
        command("torchrun", 2, train_args(pretrain_setup, broken, *args)),
        env=job_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline:  # kill once a checkpoint inside the decay exists, mid-run
        latest = broken / "checkpoints" / "latest"
        if latest.is_file() and latest.read_text().strip() not in ("step5", "step10"):
            break
        time.sleep(0.05)
    kill_tree(proc.pid)
    proc.wait()
    killed_at = (broken / "checkpoints" / "latest").read_text().strip()
    assert killed_at in ("step15", "step20"), f"the job was meant to be killed in its decay, not at {killed_at}"
    result = ligo("torchrun", 2, train_args(pretrain_setup, broken, *args))
    assert f"from checkpoint {killed_at}" in result.stdout
    assert losses(broken) == losses(straight)
    lrs = [r["lr"] for r in read_metrics(straight / "metrics.jsonl") if "lr" in r]
    assert lrs[1:13] == [3e-3] * 12 and lrs[13] < 3e-3, "the peak through update 13, then decaying"
    assert (straight / "hf" / "model.safetensors").read_bytes() == (broken / "hf" / "model.safetensors").read_bytes()


def test_a_branch_from_the_stable_phase_equals_a_run_of_its_own_length(pretrain_setup, straight):
    """The 24-step run's checkpoint at step 10 (stable) continued to 20 steps (decay from 10) is the
    20-step run: weights, optimizer state, RNGs and data position all carried over."""
    twenty = WSD.replace("--max-steps 24", "--max-steps 20").split()
    direct, branched = pretrain_setup / "direct20", pretrain_setup / "branched20"
    ligo("torchrun", 2, train_args(pretrain_setup, direct, *twenty))
    result = ligo(
        "torchrun",
        2,
        train_args(pretrain_setup, branched, *twenty, "--branch-from", straight / "checkpoints" / "step10"),
    )
    assert "branching" in result.stdout and "(step 10)" in result.stdout
    rows = read_metrics(branched / "metrics.jsonl")
    assert rows[0]["step"] == 10 and rows[-1]["step"] == 20
    expect = {r["step"]: r.get("loss") for r in read_metrics(direct / "metrics.jsonl") if r["step"] > 10}
    assert {r["step"]: r.get("loss") for r in rows[1:]} == expect
    assert (direct / "hf" / "model.safetensors").read_bytes() == (branched / "hf" / "model.safetensors").read_bytes()
    # Inside the other run's decay (from step 12) the lr no longer matches: refused, nothing trained.
    refused = ligo(
        "single",
        1,
        train_args(
            pretrain_setup,
            pretrain_setup / "late",
            *twenty,
            "--micro-batch",
            "4",
            "--branch-from",
            straight / "checkpoints" / "step15",
        ),
        check=False,
    )
    assert refused.returncode == 2 and "cannot branch at step 15" in refused.stdout, refused.stdout[-2000:]
    assert not (pretrain_setup / "late" / "checkpoints").exists()
