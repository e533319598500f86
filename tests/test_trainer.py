"""trainer.py, for real: several CPU processes over gloo, every ZeRO stage. The data split across ranks,
evaluation, checkpoints, and a kill and resume that ends exactly where an uninterrupted run does.
`ligo-ds pretrain` drives it, as users do."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pytest

from conftest import losses, train_args
from procs import command, job_env, kill_tree, ligo

pytestmark = pytest.mark.multiproc


@pytest.mark.parametrize("stage", ["zero1", "zero2", "zero3", "zero3_offload"])
def test_two_ranks_match_one_process(pretrain_setup, pretrain_reference, stage):
    out = pretrain_setup / f"two_{stage}"
    ligo("torchrun", 2, train_args(pretrain_setup, out, "--max-steps", "6", "--micro-batch", "2", "--ds-config", stage))
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


def test_stop_and_resume_equals_uninterrupted(pretrain_setup):
    args = "--max-steps 24 --micro-batch 2 --ds-config zero3 --save-every 5 --eval-every 10".split()
    straight = pretrain_setup / "straight"
    ligo("torchrun", 2, train_args(pretrain_setup, straight, *args))

    broken = pretrain_setup / "broken"
    proc = subprocess.Popen(
        command("torchrun", 2, train_args(pretrain_setup, broken, *args)),
        env=job_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline:  # kill once a checkpoint beyond the first exists, mid-run
        latest = broken / "checkpoints" / "latest"
        if latest.is_file() and latest.read_text().strip() not in ("step5",):
            break
        time.sleep(0.05)
    kill_tree(proc.pid)
    proc.wait()
    killed_at = (broken / "checkpoints" / "latest").read_text().strip()
    assert killed_at != "step24", "the job was meant to be killed before it finished"
    result = ligo("torchrun", 2, train_args(pretrain_setup, broken, *args))
    assert f"from checkpoint {killed_at}" in result.stdout
    assert losses(broken) == losses(straight)
    for name in ("model.safetensors",):
        a = (straight / "hf" / name).read_bytes()
        assert a == (broken / "hf" / name).read_bytes(), "same final weights"
