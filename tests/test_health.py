"""Training health: non-finite steps skipped and agreed across ranks, a run that stops (exit 3) rather than
save a diverged model, loss-spike rollback that ends where a run that never saw the spike's data ends,
and settings no run can train with refused before anything starts.

The bad losses are injected by data position (LIGO_DS_LOSS_FAULT, faults.py) on one rank, as bad data
would make them; one row uses a learning rate far too high instead, with no injection at all."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ligo_ds.errors import ConfigError
from ligo_ds.training.health import SkipTable, check_aligned, parse_ranges, running_stats, spikes
from ligo_ds.training.rundir import RunDir, read_metrics

from conftest import cli, train_args
from procs import ligo

# ---- the pure parts --------------------------------------------------------------------------------


def test_ranges_parse_sorted_and_refuse_what_is_not_one():
    assert parse_ranges("64:128, 0:32,1K:2K", "--skip-data") == [(0, 32), (64, 128), (1000, 2000)]
    for text, message in [
        ("64", "is not FROM:TO"),
        ("a:b", "is not FROM:TO"),
        ("64:64", "needs 0 <= FROM < TO"),
        ("0:64,32:96", "0:64 and 32:96 overlap"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_ranges(text, "--skip-data")
    check_aligned([(0, 32), (64, 128)], 32, "--skip-data")
    with pytest.raises(ConfigError, match="44 is not a multiple of the global batch \\(8 .*use 40 or 48"):
        check_aligned([(44, 64)], 8, "--skip-data")
    with pytest.raises(ConfigError, match="use 32 or 40"):
        check_aligned([(0, 33)], 8, "--skip-data")


def test_spikes_against_the_window_and_a_hand_computed_deviation():
    history = [3.0, 3.2, 2.8, 3.0]
    mean, std = running_stats(history)
    assert mean == pytest.approx(3.0) and std == pytest.approx(np.std(history))
    threshold = 3.0
    edge = mean + threshold * std
    assert not spikes(history, edge - 1e-9, threshold, window=4)
    assert spikes(history, edge + 1e-9, threshold, window=4)
    assert not spikes(history, 100.0, threshold, window=5), "no spike is called before the window is full"
    assert spikes([100.0] * 9 + [2.0, 2.1], 2.3, threshold, window=2), "only the last `window` count"
    # A flat loss: the deviation is floored at 0.1 % of the mean, so a wiggle of 0.01 % is no spike.
    assert not spikes([2.0] * 8, 2.0002, threshold, window=8)
    assert spikes([2.0] * 8, 2.0 * (1 + 3.1e-3), threshold, window=8)


def test_skip_table_takes_the_furthest_jump_from_a_position():
    table = SkipTable([(64, 96)], [{"from": 32, "to": 64, "checkpoint": "step2"}])
    assert table.at(0) is None
    assert (table.at(32).end, table.at(32).reason) == (64, "rollback")
    assert (table.at(64).end, table.at(64).reason) == (96, "skip_data")
    table.add({"from": 32, "to": 128, "checkpoint": "step2"})  # a second spike after rolling back to step2
    assert table.at(32).end == 128 and table.rollbacks_to("step2") == 2 and table.rollbacks_to("step4") == 0


def test_truncating_metrics_drops_event_rows_a_resume_repeats(tmp_path):
    run = RunDir(tmp_path)
    rows = [
        {"step": 0, "val_loss": 5.0, "flops": 0.0},
        {"step": 2, "loss": 4.0, "flops": 2e9},
        {"step": 2, "event": "skipped_step"},  # a bad step after the checkpoint at step 2
        {"step": 3, "loss": 3.9, "flops": 3e9},
    ]
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run.truncate_metrics(2)
    assert read_metrics(run.metrics) == rows[:2]
    run.record_skip({"from": 8, "to": 16, "checkpoint": "step2"})
    run.record_skip({"from": 8, "to": 24, "checkpoint": "step2"})
    assert [r["to"] for r in run.read_skips()] == [16, 24]


# ---- settings no run can train with: one line, exit 2, nothing written, before any process group ----------

BAD_SETTINGS = [
    ("pretrain", ["--lr", "nan"], "--lr nan: expected a finite number"),
    ("pretrain", ["--lr", "inf"], "--lr inf: expected a finite number"),
    ("pretrain", ["--lr=-1e-3"], "--lr -0.001: expected more than 0"),
    ("pretrain", ["--min-lr", "nan"], "--min-lr nan: expected a finite number"),
    ("pretrain", ["--beta1", "1.0"], "--beta1 1.0: expected at least 0 and below 1"),
    ("pretrain", ["--beta2", "-0.5"], "--beta2 -0.5: expected at least 0 and below 1"),
    ("pretrain", ["--grad-clip", "inf"], "--grad-clip inf: expected a finite number"),
    ("pretrain", ["--warmup-steps", "50"], "--warmup-steps 50 is longer than the run \\(10 steps\\)"),
    ("pretrain", ["--max-bad-steps", "0"], "--max-bad-steps 0: expected at least 1"),
    ("pretrain", ["--spike-threshold", "nan"], "--spike-threshold nan: expected a finite number"),
    ("pretrain", ["--skip-data", "64:32"], "--skip-data '64:32': '64:32' needs 0 <= FROM < TO"),
    ("fit", ["--operator-lr", "inf"], "--operator-lr inf: expected a finite number"),
    ("fit", ["--operator-warmup", "20"], "--operator-warmup 20 is longer than the fit \\(--steps 10\\)"),
    ("grow", ["--weight-decay", "nan"], "--weight-decay nan: expected a finite number"),
    ("grow", ["--operator-warmup", "20"], "--operator-warmup 20 is longer than the fit \\(--fit-steps 10\\)"),
    ("grow", ["--beta2", "1"], "--beta2 1.0: expected at least 0 and below 1"),
]


def _command(kind: str, root, out) -> list[str]:
    if kind == "pretrain":
        return cli("pretrain", model=root / "tiny.json", data=root / "data", out=out, max_steps=10, warmup_steps=2)
    growth = dict(source=root / "small", target=root / "large.json", data=root / "data", out=out)
    if kind == "fit":
        return cli("fit", **growth, steps=10)
    return cli("grow", **growth, fit_steps=10, max_steps=10, warmup_steps=2)


@pytest.mark.parametrize("kind, extra, message", BAD_SETTINGS, ids=[f"{k} {' '.join(e)}" for k, e, _ in BAD_SETTINGS])
def test_bad_setting_is_refused_up_front(tmp_path, capsys, kind, extra, message):
    """The CLI's own entry point, in this process: the refusal comes from the options, before anything
    imports deepspeed (one row per command also runs as its own process, below)."""
    import re

    from ligo_ds.cli import main

    out = tmp_path / "run"  # the options are refused before any input is read
    assert main([*_command(kind, tmp_path, out), *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), lines
    assert not out.exists()


@pytest.mark.parametrize("row", [0, 12, 14], ids=["pretrain", "fit", "grow"])
def test_bad_setting_exits_2_with_one_line_as_a_process(tmp_path, row):
    import re

    kind, extra, message = BAD_SETTINGS[row]
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "ligo_ds", *_command(kind, tmp_path, out), *extra], capture_output=True, text=True
    )
    assert result.returncode == 2 and re.fullmatch(f"ligo-ds {kind}: error: .*{message}.*\n", result.stderr)
    assert not out.exists()


def test_warmup_longer_than_a_run_given_in_tokens_is_refused_before_the_process_group(pretrain_setup, tmp_path):
    # 1,000 tokens of 32-token windows, 2 x 1 per step: 16 steps on one rank, fewer than 20 of warmup.
    args = [*train_args(pretrain_setup, tmp_path / "run"), "--max-tokens", "1K", "--micro-batch", "2"]
    args[args.index("--warmup-steps") + 1] = "20"
    result = subprocess.run([sys.executable, "-m", "ligo_ds", *args], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--warmup-steps 20 is longer than the run (16 steps)" in result.stderr
    assert "deepspeed" not in result.stderr.lower() and not (tmp_path / "run").exists()


# ---- real runs: DeepSpeed on 2 CPU ranks ---------------------------------------------------------------

# train_args' runs at micro-batch 2 on 2 ranks: 4 samples a step, so the step that starts at position 4k is
# step k + 1 (when nothing was skipped before it).
GLOBAL = 4


def weights(run_dir) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(run_dir / "hf" / "model.safetensors"))


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)


def events(run_dir, kind: str) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == kind]


def run_args(setup, out, stage: str, *extra: str) -> list[str]:
    return train_args(setup, out, "--micro-batch", "2", "--ds-config", stage, *extra)


@pytest.mark.multiproc
@pytest.mark.parametrize("stage", ["zero3"])  # ZeRO-1's skip: the next test
def test_a_non_finite_step_on_one_rank_is_skipped_on_both(pretrain_setup, stage):
    """Rank 1's loss is NaN on the step reading samples 8-11: both ranks skip it, and the run ends with the
    weights of a run that skipped those samples by hand (--skip-data), the same later steps and schedule."""
    bad = pretrain_setup / f"nan_{stage}"
    ligo("torchrun", 2, run_args(pretrain_setup, bad, stage, "--max-steps", "6"), LIGO_DS_LOSS_FAULT="8:12:nan:1")
    ref = pretrain_setup / f"nan_ref_{stage}"
    ligo("torchrun", 2, run_args(pretrain_setup, ref, stage, "--max-steps", "6", "--skip-data", f"{2 * GLOBAL}:12"))
    assert_same_weights(bad, ref)
    [skipped] = events(bad, "skipped_step")
    assert (skipped["step"], skipped["samples"]) == (2, 12), "the position moved past it; the step count did not"
    assert skipped["reason"].startswith("loss nan on 1 of 2 ranks, gradient norm inf")
    assert [(r["skipped_from"], r["skipped_to"]) for r in events(ref, "skip_data")] == [(8, 12)]
    rows = [r for r in read_metrics(bad / "metrics.jsonl") if "loss" in r]
    ref_rows = [r for r in read_metrics(ref / "metrics.jsonl") if "loss" in r]
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows] and len(rows) == 6
    assert rows[-1]["flops"] > ref_rows[-1]["flops"], "the skipped step's compute is counted"


@pytest.mark.multiproc
def test_bad_steps_in_a_row_stop_the_run_with_exit_3_and_save_nothing(pretrain_setup, tmp_path):
    """Samples 16-27 make rank 1's loss infinite: steps 5, 6, 7 are skipped and the run stops, leaving the
    checkpoint of step 4 as `latest` and no HF export; the rerun the message proposes finishes. mpirun passes
    the ranks' status on (torchrun reports any failed worker as 1)."""
    out = tmp_path / "run"
    args = run_args(pretrain_setup, out, "zero1", "--max-steps", "10", "--save-every", "2", "--max-bad-steps", "3")
    result = ligo("mpirun", 2, args, check=False, LIGO_DS_LOSS_FAULT="16:28:inf:1")
    assert result.returncode == 3, result.stdout[-3000:]
    # Each rank says it once; rank 0's progress bar ends without a newline, so another rank's line may
    # follow it on the same line of the merged log: compare from the message's start.
    said = "ligo-ds pretrain: training diverged"
    lines = [said + line.split(said, 1)[1] for line in result.stdout.splitlines() if said in line]
    assert lines and all(line == lines[0] for line in lines), result.stdout[-3000:]
    assert "3 steps in a row went bad at step 5 (loss inf on 1 of 2 ranks" in lines[0]
    assert f"Last good checkpoint: {out / 'checkpoints' / 'step4'}" in lines[0]
    assert (out / "checkpoints" / "latest").read_text() == "step4"
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir()) == ["step2", "step4"]
    assert not (out / "hf").exists() and "Traceback" not in result.stdout
    assert [r["samples"] for r in events(out, "skipped_step")] == [20, 24, 28]
    # A skip that starts before the position and ends after it can never happen: refused.
    inside = ligo("mpirun", 2, [*args, "--skip-data", "12:24"], check=False, LIGO_DS_LOSS_FAULT="16:28:inf:1")
    assert inside.returncode == 2 and "--skip-data 12:24: the run is at sample 16, inside the range" in inside.stdout
    proposed = lines[0].split("skip the data with ")[1].split(",")[0].split()
    assert proposed == ["--skip-data", "16:28"]
    ligo("mpirun", 2, [*args, *proposed], LIGO_DS_LOSS_FAULT="16:28:inf:1")
    assert not events(out, "skipped_step") and [r["skipped_from"] for r in events(out, "skip_data")] == [16]
    assert (out / "hf" / "config.json").is_file()


@pytest.mark.multiproc
def test_a_learning_rate_far_too_high_stops_the_run_instead_of_training_on(pretrain_setup, tmp_path):
    out = tmp_path / "run"
    result = ligo("single", 1, run_args(pretrain_setup, out, "zero2", "--max-steps", "20", "--lr", "1e3"), check=False)
    assert result.returncode == 3, result.stdout[-3000:]
    assert "training diverged: 5 steps in a row went bad" in result.stdout
    assert "gradient norm inf" in result.stdout and not (out / "hf").exists()
    assert not (out / "checkpoints" / "latest").exists(), "nothing is saved from a diverged state"


@pytest.mark.multiproc
def test_a_diverging_fit_is_not_handed_to_pretraining(growth_setup, tmp_path):
    s, out = growth_setup, tmp_path / "grow"
    args = cli(
        "grow", source=s / "small", target=s / "large.json", data=s / "data", out=out, seq_len=32, micro_batch=2,
        fit_steps=6, operator_warmup=2, max_steps=4, warmup_steps=2, max_bad_steps=2, ds_config="zero3",
    )  # fmt: skip
    result = ligo("single", 1, args, check=False, LIGO_DS_LOSS_FAULT="4:1000000:nan")
    assert result.returncode == 3, result.stdout[-3000:]
    assert "ligo-ds grow: training diverged: 2 steps in a row went bad at step 3" in result.stdout
    assert not (out / "grown").exists() and not (out / "train").exists()


# A spike of 50x the loss on the steps reading samples 32-39 (steps 9 and 10), on both ranks: the statistics
# of 4 good steps call each a spike, the second makes it one, and the run goes back to step 8's checkpoint.
SPIKE = ["--max-steps", "14", "--save-every", "4", "--spike-window", "4", "--spike-steps", "2"]


@pytest.fixture(scope="module")
def never_saw_the_spike(pretrain_setup):
    out = pretrain_setup / "spike_ref"
    ligo("torchrun", 2, run_args(pretrain_setup, out, "zero2", *SPIKE, "--skip-data", "32:40"))
    return out


@pytest.mark.multiproc
def test_a_loss_spike_rolls_back_and_skips_its_data(pretrain_setup, never_saw_the_spike, tmp_path):
    out = tmp_path / "run"
    args = run_args(pretrain_setup, out, "zero2", *SPIKE, "--spike-rollback")
    ligo("torchrun", 2, args, LIGO_DS_LOSS_FAULT="32:40:50")
    assert_same_weights(out, never_saw_the_spike)
    [record] = RunDir(out).read_skips()
    assert (record["from"], record["to"], record["checkpoint"], record["spike_steps"]) == (32, 40, "step8", [9, 10])
    assert min(record["losses"]) > 10 * record["mean"]
    [row] = events(out, "rollback")
    assert (row["step"], row["skipped_from"], row["skipped_to"], row["checkpoint"]) == (8, 32, 40, "step8")
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 15)), "the spike's rows went with the rollback"
    final, ref = read_metrics(out / "metrics.jsonl")[-1], read_metrics(never_saw_the_spike / "metrics.jsonl")[-1]
    assert final["samples"] == ref["samples"] == 64 and final["tokens"] == ref["tokens"]
    assert final["flops"] > ref["flops"], "the rolled-back steps' compute is counted"
    assert (out / "checkpoints" / "step0").is_dir(), "a spike before the first checkpoint has one to go to"


@pytest.mark.multiproc
def test_a_kill_during_the_rollback_resumes_to_the_same_result(pretrain_setup, never_saw_the_spike, tmp_path):
    out = tmp_path / "run"
    args = run_args(pretrain_setup, out, "zero2", *SPIKE, "--spike-rollback")
    killed = ligo("torchrun", 2, args, check=False, LIGO_DS_LOSS_FAULT="32:40:50", LIGO_DS_CRASH_AT="rollback:1")
    assert killed.returncode != 0 and len(RunDir(out).read_skips()) == 1
    assert (out / "checkpoints" / "latest").read_text() == "step8" and not (out / "hf").exists()
    ligo("torchrun", 2, args, LIGO_DS_LOSS_FAULT="32:40:50")
    assert_same_weights(out, never_saw_the_spike)
    assert len(RunDir(out).read_skips()) == 1 and len(events(out, "rollback")) == 1


@pytest.mark.multiproc
def test_without_rollback_a_spike_is_reported_once_and_training_goes_on(pretrain_setup, tmp_path):
    # One rank, micro-batch 2: the steps starting at samples 16-22 (steps 9-12) spike 50x.
    out = tmp_path / "run"
    args = [*train_args(pretrain_setup, out, "--micro-batch", "2", "--ds-config", "zero2"), *SPIKE[:2], *SPIKE[4:]]
    result = ligo("single", 1, args, LIGO_DS_LOSS_FAULT="16:24:50")
    [spike] = events(out, "spike")
    assert (spike["step"], len(spike["losses"])) == (10, 2) and min(spike["losses"]) > 10 * spike["mean"]
    assert "loss spike at steps 9-10" in result.stdout and "--spike-rollback would roll it back" in result.stdout
    assert not (out / "skips.json").exists() and (out / "hf" / "config.json").is_file()
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == list(range(1, 15))
