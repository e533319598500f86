"""Runs survive kills at any point and stop gracefully on signals (a resume on another number of ranks:
test_multinode.py, 2 nodes -> 3)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from ligo_ds.distributed import checkpoint
from ligo_ds.training.rundir import read_metrics

from conftest import LARGE_LLAMA, SMALL_LLAMA, cli
from procs import ROOT, command, job_env, kill_tree, ligo

pytestmark = pytest.mark.multiproc


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from conftest import make_inputs

    root = make_inputs(
        tmp_path_factory.mktemp("rel"),
        "while n > {i}:\n    n = n // 2 + {m}\n",
        docs=70,
        small=SMALL_LLAMA,
        large=LARGE_LLAMA,
        seed=4,
    )
    (root / "tiny.json").write_text(json.dumps({**SMALL_LLAMA, "tie_word_embeddings": False}))
    return root


def grow_args(inputs, out):
    # The grown model trains on a growth-aware schedule (bench/savings.py's GROWN_SCHEDULES): no re-warmup,
    # the peak, then a 1-sqrt decay over the last 3 steps, so kills land in both phases of it.
    common = dict(
        seq_len=32,
        micro_batch=2,
        log_every=1,
        eval_every=3,
        eval_samples=4,
        warmup_steps=0,
        schedule="wsd",
        decay_fraction=0.34,
        decay_shape="1-sqrt",
        operator_warmup=2,
        save_every=3,
        fit_steps=6,
        max_steps=9,
        seed=21,
    )
    return cli("grow", source=inputs / "small", target=inputs / "large.json", data=inputs / "data", out=out, **common)


def start(launcher, nproc, args, **env):
    return subprocess.Popen(
        command(launcher, nproc, args),
        env=job_env(**env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def committed_checkpoints_are_complete(run: Path) -> None:
    """`latest` never names a half-written checkpoint: its manifest checks out, file by file."""
    for phase in ("fit", "train"):
        tag = checkpoint.latest_tag(run / phase / "checkpoints")
        if tag is not None:
            checkpoint.read_manifest(run / phase / "checkpoints", tag)


def _latest_step(run: Path, phase: str) -> int:
    tag = checkpoint.latest_tag(run / phase / "checkpoints")
    return -1 if tag is None else int(tag.removeprefix("step").removesuffix("_universal"))


def test_kill_anywhere_then_rerun_gives_the_uninterrupted_result(inputs, tmp_path):
    straight = tmp_path / "straight"
    ligo("torchrun", 2, grow_args(inputs, straight))

    run = tmp_path / "killed"
    # Kill points: a rank killing itself at a named point (mid step, mid checkpoint write, mid evaluation),
    # the hand-off between fit and pretraining, and a SIGKILL of the whole job at a random moment. Each is
    # tried until it lands, in an order that makes progress: step:2 (none), checkpoint:2 (the fit to step 3),
    # eval:2 (the fit finishes; killed in the training phase's first evaluation), the hand-off, then a random
    # point in training. Every rerun is the same command.
    plan = ["step:2", "checkpoint:2", "eval:2", "handoff:1", "random"]
    rng = random.Random(2026)
    points: list[str] = []
    trail = []  # (kill point, exit status, metrics rows before, after): for the message if one does not land

    def rows() -> int:
        files = [run / phase / "metrics.jsonl" for phase in ("fit", "train")]
        return sum(len(read_metrics(f)) for f in files if f.is_file())

    for _ in range(12):
        if (run / "train" / "hf" / "config.json").is_file() or set(plan) <= set(points):
            break
        handoff_next = _latest_step(run, "fit") == 6 and _latest_step(run, "train") < 0
        spec = next(p for p in plan if p not in points and (p != "handoff:1" or handoff_next))
        before = rows()
        proc = start("torchrun", 2, grow_args(inputs, run), **({} if spec == "random" else {"LIGO_DS_CRASH_AT": spec}))
        if spec == "random":  # SIGKILL the whole job once it has logged 1-3 more rows: a random point mid-run
            target = before + rng.randint(1, 3)
            while proc.poll() is None and rows() < target:
                time.sleep(0.01)
            kill_tree(proc.pid)
        proc.wait(timeout=300)
        trail.append((spec, proc.returncode, before, rows()))
        # kill_tree reaps the launcher itself, so Popen reads exit status 0 for it: a random kill landed when
        # the run is unfinished.
        finished = (run / "train" / "hf" / "config.json").is_file()
        if proc.returncode != 0 or (spec == "random" and not finished):
            points.append(spec)
        committed_checkpoints_are_complete(run)
    ligo("torchrun", 2, grow_args(inputs, run))
    assert sorted(points) == sorted(plan), f"the kills that landed: {points}; every attempt: {trail}"
    for part in ("grown/model.safetensors", "train/hf/model.safetensors"):
        assert (run / part).read_bytes() == (straight / part).read_bytes(), part
    for phase in ("fit", "train"):
        assert [(r["step"], r.get("loss"), r.get("val_loss")) for r in read_metrics(run / phase / "metrics.jsonl")] == [
            (r["step"], r.get("loss"), r.get("val_loss")) for r in read_metrics(straight / phase / "metrics.jsonl")
        ]


def pretrain_args(inputs, out, micro, max_steps=10):
    common = dict(
        seq_len=32,
        micro_batch=micro,
        log_every=2,
        eval_every=4,
        eval_samples=4,
        warmup_steps=2,
        save_every=100,
        max_steps=max_steps,
        ds_config="zero3",
        seed=3,
    )
    return cli("pretrain", model=inputs / "tiny.json", data=inputs / "data", out=out, **common)


@pytest.mark.parametrize("launcher, sig", [("single", signal.SIGTERM), ("torchrun", signal.SIGUSR1)])
def test_signal_stops_gracefully_and_the_rerun_continues(inputs, tmp_path, launcher, sig):
    nproc, micro = (1, 4) if launcher == "single" else (2, 2)
    args = pretrain_args(inputs, tmp_path / "run", micro, max_steps=400)
    proc = start(launcher, nproc, args)
    deadline = time.time() + 120
    metrics = tmp_path / "run" / "metrics.jsonl"
    while not metrics.is_file() or len(read_metrics(metrics)) < 3:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    ranks = [
        p
        for p in [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
        if "ligo_ds" in " ".join(p.cmdline()) and "torchrun" not in " ".join(p.cmdline())
    ]
    assert len(ranks) == nproc
    for p in ranks:  # the signal reaches the ranks, as a scheduler's would
        p.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert "stopped on request at step" in out and "rerun the same command to continue" in out
    tag = checkpoint.latest_tag(tmp_path / "run" / "checkpoints")
    step = int(tag.removeprefix("step"))
    assert 0 < step < 400 and not (tmp_path / "run" / "hf").exists()
    resumed = start(launcher, nproc, args)
    deadline = time.time() + 120
    while len(read_metrics(metrics)) < 2 or read_metrics(metrics)[-1]["step"] <= step:
        assert time.time() < deadline and resumed.poll() is None
        time.sleep(0.05)
    kill_tree(resumed.pid)
    resumed.wait()
    out = resumed.stdout.read()
    assert f"from checkpoint {tag} (step {step})" in out


def test_a_second_writer_is_refused_and_a_kill_frees_the_run(inputs, tmp_path):
    """Two `pretrain` on one --out: the second is refused naming the first (whose rows it must not touch);
    once the first is killed, the same command resumes from its last checkpoint."""
    import socket

    args = cli(
        "pretrain",
        model=inputs / "tiny.json",
        data=inputs / "data",
        out=tmp_path / "run",
        seq_len=32,
        micro_batch=2,
        log_every=1,
        save_every=2,
        eval_every=100,
        warmup_steps=2,
        max_steps=400,
        ds_config="zero2",
    )
    first = start("single", 1, args)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (tmp_path / "run" / "checkpoints" / "latest").is_file() or len(read_metrics(metrics)) < 3:
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.05)
    second = ligo("single", 1, args, check=False)
    assert second.returncode == 2, second.stdout[-3000:]
    assert f"is in use by ligo-ds pretrain (pid {first.pid} on host {socket.gethostname()}" in second.stdout
    assert "Traceback" not in second.stdout
    rows = len(read_metrics(metrics))
    while len(read_metrics(metrics)) <= rows + 2:  # the first runs on, its log intact
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.05)
    kill_tree(first.pid)
    first.wait()
    tag = checkpoint.latest_tag(tmp_path / "run" / "checkpoints")
    (tmp_path / "run" / "STOP").touch()  # the resumed run checkpoints and ends at its first logging step
    resumed = ligo("single", 1, args)
    assert f"from checkpoint {tag}" in resumed.stdout and "stopped on request at step" in resumed.stdout
