"""training/rundir.py: a run directory is claimed once, refused to another run, and its metrics cut back on resume."""

from __future__ import annotations

import json

import pytest

from ligo_ds import ConfigError
from ligo_ds.training.rundir import RunDir


def test_run_dir_refuses_a_different_run_and_touches_nothing(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.claim({"model": "a", "seq_len": 128}, {"x": 1}, "--out") is False
    before = run.config.read_bytes()
    assert run.claim({"model": "a", "seq_len": 128}, {"x": 2}, "--out") is True
    with pytest.raises(ConfigError, match=r"belongs to a different run.*seq_len: 128 in the run, 256 now"):
        run.claim({"model": "a", "seq_len": 256}, {}, "--out")
    assert run.config.read_bytes() == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists, is not empty and holds no ligo_ds run"):
        RunDir(other).claim({}, {}, "--out")


def test_truncate_metrics(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(6)))
    run.truncate_metrics(3)
    assert [json.loads(x)["step"] for x in run.metrics.read_text().splitlines()] == [0, 1, 2, 3]
