"""Several nodes for real on one machine (tests/multinode/cluster.sh, started by `make test`): every
launcher across two nodes runs `ligo-ds grow` (fit under ZeRO-3 -> hand-off -> pretraining) to the losses
of one node with the same global batch, and faults across nodes end the job and resume it exactly.

The launchers, one rank per node: `mpirun -H node1:1,node2:1` directly, and `sbatch --nodes=2
slurm/grow_gpt.sh` in each LAUNCHER style, which is `torchrun --nnodes 2` with a c10d rendezvous
(LAUNCHER=torchrun), srun ranks (srun) and `deepspeed --hostfile` over pdsh and ssh (deepspeed). A
direct torchrun runs the kill test and the resume on three nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nodes
import numpy as np
import pytest

from ligo_ds.distributed import checkpoint
from ligo_ds.training.rundir import read_metrics

from conftest import cli, train_args
from procs import ROOT, command, run

pytestmark = pytest.mark.multinode

# One rank per node, micro-batch 3: a global batch of 6 on two nodes, as on one node with two ranks.
# Twelve training steps, so that a preemption after the checkpoint at step 4 lands well before the end.
GROW = dict(
    seq_len=32,
    micro_batch=3,
    log_every=1,
    eval_every=4,
    eval_samples=4,
    warmup_steps=2,
    operator_warmup=2,
    save_every=4,
    fit_steps=4,
    max_steps=12,
    seed=9,
)


def grow_args(setup, out):
    return cli("grow", source=setup / "small", target=setup / "large.json", data=setup / "data", out=out, **GROW)


@pytest.fixture(scope="module")
def cluster():
    n = nodes.node_count()
    yield n
    nodes.kill_jobs()


@pytest.fixture(scope="module")
def slurm(cluster):
    nodes.require_slurm()
    yield
    nodes.slurm("scancel", "--user=root", check=False)  # a failed test's job must not run on into the next


@pytest.fixture(scope="module")
def one_node(cluster, growth_setup):
    """The same grow on one node, two ranks: what every multi-node run must reproduce. Pinned to two
    cores, so that each rank runs one thread, as on the one-core nodes of the harness: then the result is
    the same to the bit."""
    out = growth_setup / "multinode_ref"
    argv = command("torchrun", 2, grow_args(growth_setup, out))
    result = run(["taskset", "-c", f"0,{min(1, os.cpu_count() - 1)}", *argv])
    assert result.returncode == 0, result.stdout[-4000:]
    return out


def rows(run_dir, phase):
    return [(r["step"], r.get("loss"), r.get("val_loss")) for r in read_metrics(run_dir / phase / "metrics.jsonl")]


def assert_same_run(run_dir, reference, exact=False):
    """Losses of both phases equal the reference's (rtol 1e-4, or to the bit, weights too), and the final
    weights load in transformers."""
    import transformers

    for phase in ("fit", "train"):
        got, want = rows(run_dir, phase), rows(reference, phase)
        if exact:
            assert got == want, phase
            continue
        assert [r[0] for r in got] == [r[0] for r in want], phase
        for column in (1, 2):
            np.testing.assert_allclose(
                [r[column] or 0.0 for r in got], [r[column] or 0.0 for r in want], rtol=1e-4, err_msg=phase
            )
    if exact:
        for part in ("grown/model.safetensors", "train/hf/model.safetensors"):
            assert (run_dir / part).read_bytes() == (reference / part).read_bytes(), part
    model = transformers.AutoModelForCausalLM.from_pretrained(run_dir / "train" / "hf")
    assert model.config.num_hidden_layers == 4


def assert_launched(run_dir, launcher, world=2):
    for phase in ("fit", "train"):
        record = json.loads((run_dir / phase / "config.json").read_text())
        assert (record["world_size"], record["launcher"]) == (world, launcher), phase


def test_mpirun_across_two_nodes(cluster, growth_setup, one_node, tmp_path):
    run_dir = tmp_path / "run"
    nodes.run("mpirun", 2, grow_args(growth_setup, run_dir), tmp_path)
    assert_launched(run_dir, "mpirun")
    assert_same_run(run_dir, one_node)


# ---- Slurm: sbatch --nodes=2 slurm/grow_gpt.sh ------------------------------------------------------------


def submit(setup, run_dir: Path, launcher: str) -> str:
    # The deepspeed style gives the length in tokens (2 ranks x micro-batch 3 x 32 tokens a step): the
    # script must not force --max-steps beside it.
    steps = GROW["max_steps"]
    length = {"MAX_TOKENS": f"{steps * 192 / 1000}K"} if launcher == "deepspeed" else {"MAX_STEPS": str(steps)}
    flags = {k: v for k, v in GROW.items() if k not in ("fit_steps", "max_steps")}
    run_dir.mkdir(parents=True, exist_ok=True)
    # The ranks the deepspeed runner starts over ssh get only what it exports: PYTHON* and DS_ENV_FILE's
    # lines (a user's ~/.deepspeed_env).
    (run_dir / "deepspeed_env").write_text(
        "".join(f"{k}={nodes.env()[k]}\n" for k in (*nodes.FORWARDED, "OMP_NUM_THREADS"))
    )
    environ = nodes.env(
        **length,
        SOURCE=str(setup / "small"),
        TARGET=str(setup / "large.json"),
        DATA=str(setup / "data"),
        RUN_DIR=str(run_dir),
        FIT_STEPS=str(GROW["fit_steps"]),
        LAUNCHER=launcher,
        GPUS_PER_NODE="1",
        PYTHON=sys.executable,
        DS_ENV_FILE=str(run_dir / "deepspeed_env"),
        EXTRA_ARGS=" ".join(cli("grow", **flags)[1:]),
    )
    argv = ["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", "--gpus-per-node=0"]
    out = subprocess.run(
        nodes.on("node1", [*argv, f"--output={run_dir}/slurm-%j.out", ROOT / "slurm" / "grow_gpt.sh"]),
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=run_dir,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def job_state(job: str) -> str:
    out = nodes.slurm("scontrol", "show", "job", job, check=False)
    return next((w.split("=", 1)[1] for w in out.stdout.split() if w.startswith("JobState=")), "GONE")


def wait(job: str, timeout: float = 300) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = job_state(job)
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "GONE"):
            return state
        time.sleep(0.5)
    nodes.slurm("scancel", job, check=False)
    raise AssertionError(f"job {job} still {job_state(job)} after {timeout} s")


def log_of(run_dir: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(run_dir.glob("slurm-*.out")))


@pytest.mark.parametrize("launcher", ["srun", "deepspeed"])  # torchrun: the preemption test below
def test_sbatch_across_two_nodes(slurm, growth_setup, one_node, tmp_path, launcher):
    run_dir = tmp_path / "run"
    state = wait(submit(growth_setup, run_dir, launcher))
    log = log_of(run_dir)
    assert state == "COMPLETED", log[-4000:]
    assert f"on node[1-2]: {launcher}, 1 per node, master node1:" in log and "ligo-ds exited with status 0" in log
    assert "requeue" not in log, "a finished job does not requeue"
    assert_launched(run_dir, launcher)
    assert_same_run(run_dir, one_node)


def test_preempted_two_node_job_requeues_and_resumes_bit_exact(slurm, growth_setup, one_node, tmp_path):
    """LAUNCHER=torchrun (torchrun --nnodes 2, c10d rendezvous on node1), USR1 to the batch shell after the
    training phase's first checkpoint: every rank checkpoints and stops, the job requeues itself and the
    requeued job finishes to the uninterrupted result, to the bit."""
    run_dir = tmp_path / "run"
    job = submit(growth_setup, run_dir, "torchrun")
    latest = run_dir / "train" / "checkpoints" / "latest"
    deadline = time.time() + 240
    while not (latest.is_file() and latest.read_text() == "step4"):
        assert time.time() < deadline and job_state(job) in ("PENDING", "RUNNING", "CONFIGURING"), log_of(run_dir)[
            -3000:
        ]
        time.sleep(0.05)
    nodes.slurm("scancel", "--batch", "--signal=USR1", job)
    # Slurm holds a requeued job for a while before it may start again; lifted here to keep the test short.
    deadline = time.time() + 120
    while "requeueing" not in log_of(run_dir) or job_state(job) != "PENDING":
        assert time.time() < deadline, log_of(run_dir)[-3000:]
        time.sleep(0.2)
    nodes.slurm("scontrol", "update", f"JobId={job}", "StartTime=now")
    assert wait(job) == "COMPLETED", log_of(run_dir)[-4000:]
    log = log_of(run_dir)
    assert "on node[1-2]: torchrun, 1 per node, master node1:" in log
    assert "signal received" in log and f"requeueing job {job}" in log and "(restart 1)" in log
    assert "stopped on request at step" in log
    assert_launched(run_dir, "torchrun")
    assert_same_run(run_dir, one_node, exact=True)


# ---- faults across nodes -------------------------------------------------------------------------------


def samples(prefix: Path, before: int | None = None) -> list[int]:
    """Global sample indices read, over every rank file of a trace ("step first count" lines, where step
    counts the steps done before the batch, from 0); only those read for steps before `before` if given."""
    out = []
    for f in prefix.parent.glob(prefix.name + ".rank*"):
        for line in f.read_text().splitlines():
            step, first, count = map(int, line.split())
            if before is None or step < before:
                out.extend(range(first, first + count))
    return out


def pretrain_args(setup, out, micro):
    common = ("--max-steps", "10", "--save-every", "4", "--eval-every", "5", "--micro-batch", str(micro))
    return train_args(setup, out, *common)


def test_a_node_killed_mid_step_ends_the_job_and_three_nodes_resume_it(cluster, pretrain_setup, tmp_path):
    """node2's rank dies mid-step (after its backward, before the optimizer step) at step 6, after the
    checkpoint at step 4. node1's rank finds its peer's connections closed at its next collective: both
    launchers exit non-zero within seconds, not after the process-group timeout (DEEPSPEED_TIMEOUT, minutes,
    which bounds a node that goes silent instead). The same command on three nodes (micro-batch 2 instead
    of 3: the same global batch) resumes from step 4, the last complete checkpoint, reads on from the data
    position the two nodes had reached, and ends with the losses of an uninterrupted run on one node.

    Pretraining, not grow: grow refuses to resume its training phase with another micro-batch than its fit
    ran with, and no micro-batch gives the same global batch on 2 and on 3 ranks."""
    if cluster < 3:
        pytest.skip(f"needs 3 nodes, the cluster has {cluster}: {nodes.CLUSTER} start 3")
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    argv = command("torchrun", 2, pretrain_args(pretrain_setup, reference, 3))
    assert run(argv).returncode == 0
    procs = nodes.launch(
        "torchrun",
        2,
        pretrain_args(pretrain_setup, run_dir, 3),
        tmp_path / "killed",
        node_env={"node2": {"LIGO_DS_CRASH_AT": "step:6"}},
        LIGO_DS_SAMPLE_LOG=str(tmp_path / "samples2"),
    )
    ended: dict[int, float] = {}  # launcher index -> when it exited
    deadline = time.time() + 300
    while len(ended) < 2 and time.time() < deadline:
        ended.update({i: time.time() for i, p in enumerate(procs) if i not in ended and p.poll() is not None})
        time.sleep(0.1)
    codes = nodes.wait_all(procs, tmp_path / "killed", timeout=1)
    assert all(codes), f"both nodes' launchers fail: {codes}\n{nodes.logs(tmp_path / 'killed')[-3000:]}"
    lag = max(ended.values()) - min(ended.values())
    assert lag < 60, f"the second node's launcher ended {lag:.0f} s after the first, expected < 60"
    assert checkpoint.latest_tag(run_dir / "checkpoints") == "step4"

    args = pretrain_args(pretrain_setup, run_dir, 2)
    log = nodes.run("torchrun", 3, args, tmp_path / "resumed", LIGO_DS_SAMPLE_LOG=str(tmp_path / "samples3"))
    assert "written by 2 ranks, resuming on 3" in log and "from checkpoint step4" in log, log[-3000:]
    read = samples(tmp_path / "samples2", before=4) + samples(tmp_path / "samples3")
    assert sorted(read) == list(range(10 * 6)), "every sample once, none skipped or repeated"
    got, want = read_metrics(run_dir / "metrics.jsonl"), read_metrics(reference / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose([r.get(key, 0) for r in got], [r.get(key, 0) for r in want], rtol=1e-4)
