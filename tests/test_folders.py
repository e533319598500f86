"""One writer per folder (ligo_ds/folders.py): a lock held by a live process refuses a second writer naming it,
and goes with its holder however the holder ends. The two-`pretrain` case runs in test_reliability.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ligo_ds import ConfigError
from ligo_ds.data.reading import staging_dir
from ligo_ds.folders import LOCK_FILE, hold

from procs import ROOT, job_env


def holder(folder):
    """Another process holding `folder`'s lock until killed."""
    code = (
        f"import time; from ligo_ds.folders import hold; hold({str(folder)!r}, '--out'); print('held', flush=True); "
        "time.sleep(300)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=job_env())
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_folder_is_refused_naming_its_holder_until_the_holder_dies(tmp_path):
    folder = tmp_path / "run"
    proc = holder(folder)
    try:
        with pytest.raises(
            ConfigError,
            match=rf"'{folder}' is in use by .*\(pid {proc.pid} on host "
            rf"{socket.gethostname()}, since .*one job writes a folder at a time",
        ):
            hold(folder, "--out")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    hold(folder, "--out")  # the kernel dropped the dead holder's lock: no stale lock to clear by hand
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    hold(folder, "--out")  # a process does not refuse itself


def test_two_prepares_of_one_out_one_refused_and_a_kill_resumes(tmp_path):
    """Two real `prepare` runs on one --out: the second, started while the first holds the work folder
    (paused there by SIGSTOP, so the test does not race it), is refused naming it; the first goes on to a
    complete DATA_DIR. A third, killed, leaves its lock to no one: the rerun takes the folder and finishes."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(300):
        (corpus / f"{i}.txt").write_text(f"document {i} says {i * 7} and {i % 13}\n" * 40)

    def argv(out, *extra):
        args = ["prepare", "--source", str(corpus), "--out", str(out), "--vocab-size", "300", "--num-proc", "1"]
        return [sys.executable, "-m", "ligo_ds", *args, *extra]

    def started_and_locked(out) -> subprocess.Popen:
        proc = subprocess.Popen(argv(out), cwd=ROOT, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lock = staging_dir(out) / LOCK_FILE
        deadline = time.time() + 60
        while not (lock.is_file() and f'"pid": {proc.pid}' in lock.read_text()):
            assert proc.poll() is None and time.time() < deadline, "the prepare ended before it was seen holding"
            time.sleep(0.005)
        proc.send_signal(signal.SIGSTOP)
        return proc

    out = tmp_path / "d"
    first = started_and_locked(out)
    try:
        second = subprocess.run(argv(out), capture_output=True, text=True, env=job_env(), timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2, second.stderr
    assert f"is in use by ligo-ds prepare (pid {first.pid} on host {socket.gethostname()}" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert json.loads((out / "meta.json").read_text())["train_tokens"] > 0 and not staging_dir(out).exists()
    assert not (out / LOCK_FILE).exists()  # a DATA_DIR keeps no trace of who wrote it

    killed = started_and_locked(tmp_path / "k")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    rerun = subprocess.run(argv(tmp_path / "k"), capture_output=True, text=True, env=job_env(), timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    same = [(tmp_path / d / "meta.json").read_text() for d in ("d", "k")]
    assert same[0] == same[1]


def test_a_second_prepare_of_one_out_is_refused_and_creates_nothing(tmp_path, text_folder):
    out = tmp_path / "d"
    proc = holder(staging_dir(out))  # as a running prepare holds it
    try:
        result = subprocess.run(
            [sys.executable, "-m", "ligo_ds", "prepare", "--source", str(text_folder), "--out", str(out)],
            capture_output=True,
            text=True,
            env=job_env(),
            timeout=120,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert result.returncode == 2, result.stderr
    assert f"is in use by ligo-ds (pid {proc.pid}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in staging_dir(out).iterdir()) == [LOCK_FILE] and not out.exists()


def test_the_lock_file_names_its_holder(tmp_path):
    hold(tmp_path / "x", "--out")
    record = json.loads((tmp_path / "x" / LOCK_FILE).read_text())
    assert record["host"] == socket.gethostname() and record["pid"] == os.getpid()
    assert time.strptime(record["since"].rsplit(" ", 1)[0], "%Y-%m-%d %H:%M:%S")
