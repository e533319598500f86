"""The package as users install it: a wheel built from this checkout, installed into a fresh virtual
environment, runs a pretraining with the default DeepSpeed preset from any directory."""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import TINY, cli
from procs import ROOT, job_env

pytestmark = pytest.mark.multiproc


def _sh(*cmd, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def test_wheel_in_a_fresh_venv_pretrains_with_the_default_preset(tmp_path, pretrain_setup):
    # Build from a copy of the sources: a build writes build/ and *.egg-info beside them.
    src = tmp_path / "src"
    for part in ("ligo_ds", "ds_configs"):
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, src / part)
    _sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", src)
    (wheel,) = (tmp_path / "dist").glob("ligo_ds-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"ligo_ds/ds_configs/{p}.json" for p in ("zero1", "zero2", "zero3", "zero3_offload")} <= set(names)

    # A fresh venv with the wheel installed; torch, deepspeed and the rest come from this venv's site-packages
    # (a path entry: its .pth files, the editable ligo_ds among them, are not processed there).
    fresh = tmp_path / "venv"
    _sh(sys.executable, "-m", "venv", "--without-pip", fresh)
    python = fresh / "bin" / "python"
    fresh_site = _sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    (Path(fresh_site) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _sh(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _sh(python, "-c", "import ligo_ds; print(ligo_ds.__file__)", cwd=elsewhere).stdout.strip()
    assert where.startswith(fresh_site), f"ligo_ds imported from {where}, not the installed wheel"
    (elsewhere / "tiny.json").write_text(json.dumps(TINY))
    run = elsewhere / "run"
    args = cli(
        "pretrain",
        model="tiny.json",
        data=pretrain_setup / "data",
        out=run,
        max_steps=2,
        seq_len=16,
        micro_batch=2,
        eval_samples=2,
        warmup_steps=1,
    )
    _sh(python, "-m", "ligo_ds", *args, cwd=elsewhere, env=job_env())
    record = json.loads((run / "config.json").read_text())
    assert record["options"]["ds_config"] == "zero2"
    assert json.loads((run / "ds_config.json").read_text())["zero_optimization"]["stage"] == 2
    assert (run / "hf" / "model.safetensors").is_file() and (run / "checkpoints" / "latest").read_text() == "step2"
