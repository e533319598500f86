"""What the bad-input matrix's rows share (test_bad_input.py runs them): the world they start from (a corpus,
a prepared DATA_DIR, a small HF model and a finished pretraining run, built once per module) and the
argv builders for the commands they call."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ligo_ds.folders import LOCK_FILE

from conftest import HF_CASES, cli, make_hf_model, make_inputs

TINY = {**HF_CASES["llama"], "vocab_size": 320, "hidden_size": 32, "intermediate_size": 48}


def build_world(root: Path) -> Path:
    """Shared inputs: a corpus, a prepared DATA_DIR, a small HF model, and a finished pretraining run."""
    root = make_inputs(root, "x{i} = {i} * y\n", docs=40, repeat=8)
    make_hf_model(TINY, seed=1).save_pretrained(root / "small")
    (root / "tiny.json").write_text(json.dumps(TINY))
    run = subprocess.run(
        [sys.executable, "-m", "ligo_ds", *pretrain(root, root / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env(),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return root


def env() -> dict:
    return {**os.environ, "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def pretrain(root: Path, out: Path, *extra: str) -> list[str]:
    common = dict(
        seq_len=16,
        micro_batch=2,
        max_steps=4,
        save_every=2,
        eval_every=2,
        eval_samples=2,
        warmup_steps=1,
        ds_config="zero2",
    )
    return [*cli("pretrain", model=root / "tiny.json", data=root / "data", out=out, **common), *extra]


def fit(root: Path, target: Path, out: Path) -> list[str]:
    return cli("fit", source=root / "small", target=target, data=root / "data", out=out, steps=0)


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path


def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        message = f"cannot mount a tmpfs here ({result.stderr.strip()}); the row needs root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def ligo(argv: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """`ligo-ds ARGV` as a user runs it, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "ligo_ds", *argv], capture_output=True, text=True, timeout=timeout, env=env()
    )


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under `roots`: its content's SHA-256 (a folder: "dir", a link: where it points)."""
    out = {}
    for root in roots:
        for p in sorted([root, *root.rglob("*")]):
            if p.is_symlink():
                out[str(p)] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[str(p)] = "dir"
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def changes_outside(before: dict[str, str], after: dict[str, str], outs: list[str]) -> list[str]:
    """What a refused command did to the files around it: any file changed or removed, and anything new
    that is not under its --out (which a command may create, empty or not, but not what was there). A lock
    file may be rewritten: it names the folder's latest writer, and is not the user's."""

    def inside(p: str) -> bool:
        return any(Path(p) == Path(o) or Path(o) in Path(p).parents for o in outs)

    changed = [f"changed or removed: {p}" for p, h in before.items() if after.get(p) != h and Path(p).name != LOCK_FILE]
    added = [f"new outside --out: {p}" for p in after if p not in before and not inside(p)]
    return changed + added


def out_of(argv: list[str]) -> list[str]:
    """What the command may create: the --out an argv names, absolute as the command sees it."""
    return [os.path.abspath(argv[argv.index("--out") + 1])] if "--out" in argv else []


def one_error_line(stderr: str, message: str) -> bool:
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    return len(errors) == 1 and re.search(message, errors[0]) is not None
