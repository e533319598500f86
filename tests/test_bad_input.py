"""The bad-input matrix: each row a real `ligo-ds` invocation, the one-line error it must print (exit
status 2, no traceback), and nothing changed around it: every file under the test's folder and the shared
world is the same afterwards, and nothing new appeared outside the command's --out (or what the row says a
failure keeps: prepare's work folder on a full disk, to resume from). The rows live by what
they feed in: bad_rows_runs.py (runs, data, outputs), bad_rows_model.py (models, configs, weights)."""

from __future__ import annotations

import subprocess

import pytest

from bad_rows_model import ROWS as MODEL_ROWS
from bad_rows_runs import ROWS as RUN_ROWS
from bad_rows_runs import grow_with_fit_batch
from badinput import build_world, changes_outside, ligo, one_error_line, out_of, snapshot, write_json

pytestmark = pytest.mark.multiproc  # several rows start DeepSpeed

ROWS = RUN_ROWS + MODEL_ROWS


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name, setup, message", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(world, tmp_path, name, setup, message):
    try:
        argv = setup(world, tmp_path)
        argv, kept = (argv, []) if isinstance(argv, list) else argv  # a row may name what a failure keeps
        before = snapshot(world, tmp_path)
        result = ligo(argv)
        assert result.returncode == 2, result.stderr[-3000:]
        assert one_error_line(result.stderr, message), result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        assert changes_outside(before, snapshot(world, tmp_path), out_of(argv) + kept) == []
        assert not (tmp_path / "pwned").exists()
    finally:
        for mount in ("ro", "small"):
            if (tmp_path / mount).is_mount():
                subprocess.run(["umount", str(tmp_path / mount)], check=False)


def test_grow_checks_the_training_phases_ds_config_before_fitting(world, tmp_path):
    # The DS config agrees with the fit's batch (1) but not with training's (2): refused before the fit
    # spends anything, not after it.
    ds = write_json(tmp_path / "ds.json", {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 2}})
    result = ligo(grow_with_fit_batch(world, tmp_path, ds, fit_micro_batch=1))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "sets train_micro_batch_size_per_gpu=1 but --micro-batch gives 2" in result.stderr
    assert not (tmp_path / "g" / "fit" / "metrics.jsonl").exists()
