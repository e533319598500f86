"""training/rundir.py: a run directory is claimed once, refused to another run, and its metrics cut back on resume."""

from __future__ import annotations

import json

import pytest

from ligo_ds import ConfigError
from ligo_ds.training.rundir import RunDir, read_metrics


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
    run.metrics.write_text("".join(json.dumps({"step": s, "flops": 1e9 * s}) + "\n" for s in range(6)))
    run.truncate_metrics(3)
    assert [json.loads(x)["step"] for x in run.metrics.read_text().splitlines()] == [0, 1, 2, 3]


def test_a_run_records_its_paths_absolute_and_reads_them_where_it_ran(tmp_path, monkeypatch):
    from ligo_ds.training.rundir import absolute_paths, recorded_paths

    (tmp_path / "data").mkdir()
    (tmp_path / "web").mkdir()
    monkeypatch.chdir(tmp_path)
    values = {"data": "data", "out": "runs/r1", "model": "org/hub-name", "ds_config": "zero2", "seq_len": 16}
    recorded = absolute_paths(values)
    assert recorded["data"] == str(tmp_path / "data") and recorded["out"] == str(tmp_path / "runs" / "r1")
    assert recorded["model"] == "org/hub-name" and recorded["ds_config"] == "zero2"  # not paths here
    assert absolute_paths({"data": "data=0.7,web=0.3"})["data"] == f"{tmp_path / 'data'}=0.7,{tmp_path / 'web'}=0.3"
    # Read from elsewhere: against the recorded working directory, not the current one.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (elsewhere / "data").mkdir()  # another DATA here must not be the one read
    read = recorded_paths(values, {"cwd": str(tmp_path)}, tmp_path / "runs" / "r1", "advice")
    assert read["data"] == str(tmp_path / "data")
    # An older run (no cwd): its relative --out and where the run folder is now tell where it ran.
    assert recorded_paths(values, {"options": values}, tmp_path / "runs" / "r1", "advice")["data"] == str(
        tmp_path / "data"
    )
    # Moved elsewhere, nothing tells: its relative DATA_DIR is refused, named.
    with pytest.raises(ConfigError, match="records its data as the relative path 'data' .* relative to: advice"):
        recorded_paths(values, {"options": values}, tmp_path / "moved", "advice")


def test_a_damaged_metrics_row_is_named(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.write_text(json.dumps({"step": 1, "flops": 5.0}) + "\n" + json.dumps({"step": 2, "loss": 1.0}) + "\n")
    with pytest.raises(ConfigError, match="row at step 2 has no flops"):
        read_metrics(run.metrics)
    run.metrics.write_text(json.dumps([1, 2]) + "\n" + json.dumps({"step": 2, "flops": 1.0}) + "\n")
    with pytest.raises(ConfigError, match="line 1 is not a metrics row with a step"):
        read_metrics(run.metrics)
