"""The command line, run as a user runs it: a real subprocess (in-process only where a test swaps a stream)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from ligo_ds import ConfigError
from ligo_ds.cli import main

from conftest import HF_CASES


def ligo(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ligo_ds", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_help_lists_every_subcommand():
    out = ligo("--help")
    assert out.returncode == 0
    for name in ("prepare", "pretrain", "fit", "grow", "export", "eval", "report", "inspect", "plan"):
        assert f"    {name}" in out.stdout


def test_stdlib_prepare_then_inspect(tmp_path):
    data = tmp_path / "stdlib"
    out = ligo("prepare", "--out", str(data))
    assert out.returncode == 0, out.stderr
    meta = json.loads((data / "meta.json").read_text())
    assert meta["source"] == "stdlib" and meta["train_tokens"] > 1_000_000 and meta["val_tokens"] > 20_000
    assert f"{meta['train_tokens']:,} train" in out.stdout
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**HF_CASES["llama_gqa_tied"], "vocab_size": 8192}))
    out = ligo("inspect", "--model", str(config), "--data", str(data), "--seq-len", "32")
    assert out.returncode == 0, out.stderr
    assert "logits (1, 32, 8192)" in out.stdout and "parameters: " in out.stdout


def test_user_error_is_one_line_exit_2(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**HF_CASES["llama"], "model_type": "t5"}))
    out = ligo("inspect", "--model", str(config))
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "ligo-ds inspect: error: unsupported model_type 't5'; supported: "
        "gemma3_text, gpt2, gpt_neox, llama, mistral, olmo2, qwen2, qwen3"
    )


class _Writes(io.RawIOBase):
    """A raw stream that records each write it gets, as a pipe to mpirun would receive them."""

    def __init__(self):
        self.writes: list[bytes] = []

    def writable(self):
        return True

    def write(self, b):
        self.writes.append(bytes(b))
        return len(b)


def _unbuffered() -> tuple[_Writes, io.TextIOWrapper]:
    """What PYTHONUNBUFFERED gives a process: a text stream writing straight through to the raw one."""
    raw = _Writes()
    return raw, io.TextIOWrapper(raw, encoding="utf-8", write_through=True)


def test_print_on_an_unbuffered_stream_sends_the_newline_alone():
    """The hazard whole_lines removes, shown on Python itself, so the test below can tell it is needed."""
    raw, stream = _unbuffered()
    print("ligo-ds pretrain: training diverged", file=stream)
    assert raw.writes == [b"ligo-ds pretrain: training diverged", b"\n"]


def test_each_line_the_cli_prints_is_one_write_even_unbuffered(monkeypatch, tmp_path):
    """A launcher merging ranks' streams can put another rank's line between two writes; `main` prints
    each of its lines in one."""
    raw, stream = _unbuffered()
    monkeypatch.setattr(sys, "stderr", stream)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**HF_CASES["llama"], "model_type": "t5"}))
    assert main(["inspect", "--model", str(config)]) == 2
    stream.flush()
    assert raw.writes == [
        b"ligo-ds inspect: error: unsupported model_type 't5'; supported: "
        b"gemma3_text, gpt2, gpt_neox, llama, mistral, olmo2, qwen2, qwen3\n"
    ]


def test_inspect_refuses_a_model_the_machine_cannot_hold_before_building_it():
    from ligo_ds.commands.inspect import check_fits_in_memory, physical_memory
    from ligo_ds.model.config import ModelConfig

    cfg = ModelConfig.from_hf(HF_CASES["llama"])
    check_fits_in_memory(cfg, physical_memory())
    need = 4 * cfg.num_params()
    check_fits_in_memory(cfg, need)
    with pytest.raises(ConfigError, match=f"of {cfg.num_params():,} parameters needs .* GiB in float32, more than"):
        check_fits_in_memory(cfg, need - 1)
