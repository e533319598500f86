"""sbatch slurm/grow_gpt.sh against a real single-node Slurm (tests/slurm/cluster.sh, started by
`make test` and .ci/run): every launch style, and preemption with requeue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ligo_ds.rundir import read_metrics

from conftest import LARGE_LLAMA, SMALL_LLAMA  # the same tiny Llama pair as the fit tests
from procs import ROOT, job_env

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm_env():
    conf = os.environ.get("SLURM_CONF") or str(ROOT / ".slurm" / "slurm.conf")
    ok = (
        Path(conf).is_file()
        and shutil.which("sinfo")
        and subprocess.run(
            ["sinfo", "-h"], env={**os.environ, "SLURM_CONF": conf}, capture_output=True, timeout=30
        ).returncode
        == 0
    )
    if not ok:
        message = f"no running Slurm (SLURM_CONF={conf}); `make test` starts one with tests/slurm/cluster.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return {"SLURM_CONF": conf}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from conftest import make_inputs

    return make_inputs(
        tmp_path_factory.mktemp("slurm"),
        "for i in range({i}):\n    print(i * {i})\n",
        repeat=5,
        small=SMALL_LLAMA,
        large=LARGE_LLAMA,
    )


def submit(slurm_env, inputs, run_dir: Path, launcher: str, *, steps: int = 4) -> str:
    # One launch style gives the training length in tokens (2 ranks x micro-batch 2 x 32 tokens a step, so
    # 0.512K for 4 steps): the script must not force --max-steps beside it.
    length = {"MAX_TOKENS": f"{steps * 128 / 1000}K"} if launcher == "deepspeed" else {"MAX_STEPS": str(steps)}
    env = job_env(
        **length,
        **slurm_env,
        SOURCE=str(inputs / "small"),
        TARGET=str(inputs / "large.json"),
        DATA=str(inputs / "data"),
        RUN_DIR=str(run_dir),
        FIT_STEPS=str(steps),
        LAUNCHER=launcher,
        GPUS_PER_NODE="2",
        PYTHON=str(Path(os.sys.executable)),
        EXTRA_ARGS="--seq-len 32 --micro-batch 2 --eval-samples 4 --eval-every 4 --log-every 1 "
        "--save-every 4 --operator-warmup 2 --warmup-steps 2 --seed 9",
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    tasks = "2" if launcher == "srun" else "1"
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--nodes=1",
            f"--ntasks-per-node={tasks}",
            "--cpus-per-task=1",
            "--gpus-per-node=0",
            f"--output={run_dir}/slurm-%j.out",
            str(ROOT / "slurm" / "grow_gpt.sh"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=run_dir,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def job_state(slurm_env, job: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", job], env={**os.environ, **slurm_env}, capture_output=True, text=True, timeout=30
    )
    return next((w.split("=", 1)[1] for w in out.stdout.split() if w.startswith("JobState=")), "GONE")


def wait(slurm_env, job: str, timeout: float = 300) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = job_state(slurm_env, job)
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "GONE"):
            return state
        time.sleep(0.5)
    subprocess.run(["scancel", job], env={**os.environ, **slurm_env})
    raise AssertionError(f"job {job} still {job_state(slurm_env, job)} after {timeout} s")


def log_of(run_dir: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(run_dir.glob("slurm-*.out")))


@pytest.fixture(scope="module")
def reference(slurm_env, inputs, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("slurm_ref") / "run"
    state = wait(slurm_env, submit(slurm_env, inputs, run_dir, "torchrun", steps=12))
    assert state == "COMPLETED", log_of(run_dir)[-4000:]
    return run_dir


@pytest.mark.parametrize("launcher", ["torchrun", "srun", "deepspeed"])
def test_each_launch_style(slurm_env, inputs, tmp_path, launcher):
    run_dir = tmp_path / "run"
    state = wait(slurm_env, submit(slurm_env, inputs, run_dir, launcher))
    log = log_of(run_dir)
    assert state == "COMPLETED", log[-4000:]
    assert f": {launcher}, 2 per node" in log and "ligo-ds exited with status 0" in log
    for phase in ("fit", "train"):
        record = json.loads((run_dir / phase / "config.json").read_text())
        assert record["world_size"] == 2 and record["launcher"] == launcher
        assert read_metrics(run_dir / phase / "metrics.jsonl")[-1]["step"] == 4
    assert (run_dir / "grown" / "config.json").is_file() and (run_dir / "train" / "hf" / "model.safetensors").is_file()
    assert "requeue" not in log, "a finished job does not requeue"


# The training phase: a preemption in the fit resumes through the same trainer and grow's phase logic, which
# test_reliability's kill-anywhere covers in both phases.
@pytest.mark.parametrize("phase", ["train"])
def test_preemption_checkpoints_requeues_and_finishes_the_same(slurm_env, inputs, reference, tmp_path, phase):
    run_dir = tmp_path / "run"
    job = submit(slurm_env, inputs, run_dir, "torchrun", steps=12)
    latest = run_dir / phase / "checkpoints" / "latest"
    deadline = time.time() + 240
    while not (latest.is_file() and latest.read_text() == "step4"):
        assert time.time() < deadline and job_state(slurm_env, job) in ("PENDING", "RUNNING", "CONFIGURING"), log_of(
            run_dir
        )[-3000:]
        time.sleep(0.05)
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], env={**os.environ, **slurm_env}, check=True)
    # Slurm holds a requeued job for a couple of minutes before it may start again; on a cluster that is
    # fine, here it would only make the test slow, so the hold is lifted once the job is back in the queue.
    deadline = time.time() + 120
    while "requeueing" not in log_of(run_dir) or job_state(slurm_env, job) != "PENDING":
        assert time.time() < deadline, log_of(run_dir)[-3000:]
        time.sleep(0.2)
    subprocess.run(
        ["scontrol", "update", f"JobId={job}", "StartTime=now"],
        env={**os.environ, **slurm_env},
        check=True,
        capture_output=True,
    )
    assert wait(slurm_env, job, timeout=300) == "COMPLETED", log_of(run_dir)[-4000:]
    log = log_of(run_dir)
    assert "signal received" in log and f"requeueing job {job}" in log and "(restart 1)" in log
    assert "stopped on request at step" in log
    for part in ("grown/model.safetensors", "train/hf/model.safetensors"):
        assert (run_dir / part).read_bytes() == (reference / part).read_bytes(), part
    losses = [r.get("loss") for r in read_metrics(run_dir / "train" / "metrics.jsonl")]
    assert losses == [r.get("loss") for r in read_metrics(reference / "train" / "metrics.jsonl")]
