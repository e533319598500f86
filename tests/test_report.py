"""analysis/report.py (runs.py, savings.py, render.py): exact savings on synthetic metrics with known crossings,
and all three outputs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from ligo_ds import ConfigError
from ligo_ds.analysis.budgets import first_crossing
from ligo_ds.analysis.report import report
from ligo_ds.analysis.runs import load_curve, loss_at
from ligo_ds.analysis.savings import compare
from ligo_ds.training.rundir import data_identity, source_record

DATA = data_identity("/x/data", "abc123")


def run_config(model="config.json", data=DATA, eval_samples=64, steps=None, lr=1e-3, warmup=10):
    """The parts of a pretrain config.json that report reads; `steps`: the run's length (global batch 4)."""
    length = {} if steps is None else {"total_steps": steps, "global_batch": 4, "lr": lr, "min_lr": None}
    return {
        "options": {"model": model, "eval_samples": eval_samples},
        "identity": {"data": data, "seq_len": 128, **length, **({"warmup_steps": warmup} if length else {})},
    }


def write_run(root, name, rows, model="config.json", grow=False, fit_rows=None, source=None, fit=None, **config):
    run = root / name
    target = run / "train" if grow else run
    target.mkdir(parents=True)
    (target / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (target / "config.json").write_text(json.dumps(run_config(model, **config)))
    if grow:  # the record `fit` writes when it starts
        (run / "fit").mkdir()
        (run / "fit" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in fit_rows or []))
        (run / "fit" / "config.json").write_text(
            json.dumps(
                {
                    "fit": {"source": source, "steps": 10, "out": str(run / "fit"), **(fit or {})},
                    **source_record(source),
                }
            )
        )
    return run


def write_small(root, final_val=None, flops=77.0, **config):
    """A small model's pretrain RUN_DIR (metrics + config) with its exported hf/."""
    small = root / "small"
    (small / "hf").mkdir(parents=True)
    rows = [{"step": 9, "flops": flops}] + ([val(flops, final_val)] if final_val is not None else [])
    (small / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (small / "config.json").write_text(json.dumps(run_config("small.json", **config)))
    return small / "hf"


def val(flops, loss, seconds=None):
    return {"step": 0, "flops": flops, "train_seconds": flops / 10 if seconds is None else seconds, "val_loss": loss}


def test_the_header_names_the_regime(tmp_path):
    """The report says which budget its savings come from: the scratch target's parameters (its recorded
    model_config) and tokens per parameter; a run from before records says it has none."""
    from ligo_ds import ModelConfig

    cfg = dict(model_type="gpt2", n_layer=2, n_embd=64, n_head=4, n_positions=128, vocab_size=320)
    scratch = write_run(tmp_path, "scratch", [val(0, 9.0), val(1000, 3.0)], steps=400)
    config = json.loads((scratch / "config.json").read_text())
    (scratch / "config.json").write_text(json.dumps({**config, "model_config": cfg}))
    report([scratch], tmp_path / "out")
    n = ModelConfig.from_hf(cfg).num_params()
    tokens = 400 * 4 * 128
    md = (tmp_path / "out/report.md").read_text()
    assert f"Regime: a target of {n / 1e6:.3g}M parameters trained on {tokens / 1e6:.3g}M tokens, " in md
    assert f"{tokens / n:.3g} tokens per parameter. Savings shrink as the budget grows" in md
    old = write_run(tmp_path / "old", "scratch", [val(0, 9.0), val(1000, 3.0)])
    report([old], tmp_path / "old_out")
    assert "Regime: not recorded by the scratch run" in (tmp_path / "old_out/report.md").read_text()


def test_first_crossing_interpolates():
    pts = [(0, 0, 5.0), (100, 10, 3.0), (200, 20, 2.0)]
    assert first_crossing(pts, 2.5) == (150, 15)
    assert first_crossing(pts, 6.0) == (0, 0)
    assert first_crossing(pts, 1.0) is None
    assert loss_at(pts, 50) == 4.0 and loss_at(pts, 200) == 2.0 and loss_at(pts, 300) is None


def test_known_savings(tmp_path):
    scratch = write_run(tmp_path, "scratch", [val(0, 9.0), val(500, 4.0), val(1000, 3.0)])
    # the grown run: fit costs 100 FLOPs, then reaches 3.0 halfway between 300 (3.5) and 500 (2.5) -> 400
    small = write_small(tmp_path, final_val=3.4)
    grown = write_run(
        tmp_path,
        "ligo",
        [val(100, 4.5), val(300, 3.5), val(500, 2.5), val(1100, 2.0)],
        grow=True,
        fit_rows=[val(0, 6.0), val(100, 4.5)],
        source=str(small),
    )
    never = write_run(tmp_path, "slow", [val(0, 9.0), val(1000, 3.5)], model="some/hf_dir")
    rows = report([scratch, grown, never], tmp_path / "out")
    by = {r.name: r for r in rows}
    assert rows[0].name == "scratch" and by["scratch"].saving == pytest.approx(0.0)
    assert by["ligo"].flops_to_target == pytest.approx(400) and by["ligo"].saving == pytest.approx(0.6)
    assert by["ligo"].wall_saving == pytest.approx(0.6)
    assert by["ligo"].loss_at_scratch_flops == pytest.approx(2.5 - 0.5 * 500 / 600)
    assert by["ligo"].small_flops == 77.0 and by["ligo"].kind == "grown"
    assert by["ligo"].small_final_val == 3.4 and by["ligo"].small_reaches_target is False
    assert by["slow"].saving is None and by["slow"].kind == "pretrain"
    md = (tmp_path / "out/report.md").read_text()
    assert "| ligo | grown | 2.0000 | 4.000e+02 | 60.0 % |" in md and "not reached" in md
    # The grown start: the training's step-0 loss (4.5), not the fit's first (6.0); other runs have none.
    assert by["ligo"].start_val == 4.5 and by["scratch"].start_val is None and by["slow"].start_val is None
    assert "| 7.700e+01 | 3.4000 | 4.5000 |" in md and "Trivial" not in md
    with open(tmp_path / "out/report.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == ["scratch", "ligo", "slow"]
    png = (tmp_path / "out/loss_vs_flops.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_grown_runs_of_several_lengths_give_the_own_schedule_saving_and_the_curve(tmp_path):
    # Scratch: 100 steps, target 3.0 at 1000 FLOPs. Each grown run's fit costs 100 FLOPs, then 9 FLOPs a step.
    scratch = write_run(tmp_path, "scratch", [val(0, 9.0), val(500, 4.0), val(1000, 3.0)], steps=100)
    grown = dict(grow=True, fit_rows=[val(0, 6.0), val(100, 5.0)], source="/not/ours/hf")
    ligo = {
        "ligo": ([val(550, 2.5), val(1000, 2.4)], 100, 1e-3, 10),  # the scratch run's schedule and length
        "ligo_0.25x_lemon": ([val(325, 3.4)], 25, 1e-3, 10),
        "ligo_0.5x_lemon": ([val(550, 2.8)], 50, 1e-3, 10),
        "ligo_0.5x_wsd": ([val(550, 2.9)], 50, 1e-3, 2),  # worse at its length than lemon: not counted
    }
    runs = [scratch]
    for name, (rows, steps, lr, warmup) in ligo.items():
        runs.append(write_run(tmp_path, name, rows, steps=steps, lr=lr, warmup=warmup, **grown))
    # Another method (another fit: stacked depth), one run on the scratch run's schedule.
    stack = write_run(tmp_path, "stack", [val(1000, 2.9)], steps=100, fit={"depth_init": "stack"}, **grown)
    report([*runs, stack], tmp_path / "out")
    md = (tmp_path / "out/report.md").read_text()
    # On the scratch run's schedule ligo crosses 3.0 at 100 + 450 * 2 / 2.5 = 460 FLOPs: 54 %. On its own,
    # 3.0 lies 2/3 of the way from the 0.25 run (3.4 at 325 FLOPs) to the 0.5 run (2.8 at 550): 475 FLOPs,
    # 0.42 of the scratch run's tokens.
    assert "| ligo | 4 | 54.0 % | 52.5 % | 0.42 |" in md, md
    assert "0.25: 3.4000 (ligo_0.25x_lemon), 0.5: 2.8000 (ligo_0.5x_lemon), 1: 2.4000 (ligo) |" in md
    # stack crosses at 100 + 900 * 2 / 2.1 mid-run; its one length (1.0) only bounds the own-schedule saving.
    assert "| stack | 1 | 4.3 % | at least 0.0 % | at most 1.00 |" in md, md
    assert "- ligo: train the grown model for about 0.42 of the scratch run's tokens" in md
    assert "0.5 (ligo_0.5x_lemon) is the shortest that reaches the target" in md
    with open(tmp_path / "out/own_schedule.csv") as f:
        own = {r["method"]: r for r in csv.DictReader(f)}
    assert float(own["ligo"]["own_saving"]) == pytest.approx(1 - 475 / 1000)
    assert float(own["ligo"]["length"]) == pytest.approx(0.25 + 0.25 * 2 / 3)
    assert (own["ligo"]["at_least"], own["ligo"]["shortest_run"], own["ligo"]["runs"]) == ("0", "ligo_0.5x_lemon", "4")
    assert float(own["ligo"]["same_schedule_saving"]) == pytest.approx(1 - 460 / 1000)
    assert (own["stack"]["at_least"], float(own["stack"]["own_saving"])) == ("1", 0.0)
    with open(tmp_path / "out/saving_curve.csv") as f:
        curve = list(csv.DictReader(f))
    # The scratch run's lows: 4.0 at 500 FLOPs, 3.0 at 1000. The fewest FLOPs over ligo's runs: to 4.0 its
    # 0.25 run (5.0 at 100 -> 3.4 at 325), to 3.0 the run on the scratch run's schedule (460).
    assert [float(r["target_loss"]) for r in curve] == [4.0, 3.0]
    assert float(curve[0]["ligo"]) == pytest.approx(1 - (100 + 225 / 1.6) / 500)
    assert float(curve[1]["ligo"]) == pytest.approx(1 - 460 / 1000)
    assert float(curve[0]["stack"]) == pytest.approx(1 - (100 + 900 / 2.1) / 500)  # negative: slower than scratch
    assert (tmp_path / "out/saving_vs_loss.png").read_bytes()[:4] == b"\x89PNG"


def test_small_cost_recorded_at_fit_time_survives_a_move(tmp_path):
    small = write_small(tmp_path, final_val=4.0, flops=55.0)
    grown = write_run(tmp_path, "ligo", [val(100, 4.5)], grow=True, fit_rows=[val(0, 6.0)], source=str(small))
    small.parent.rename(tmp_path / "elsewhere")
    assert load_curve(grown).small_flops == 55.0 and load_curve(grown).small_val == 4.0
    other = write_run(tmp_path, "other", [val(100, 4.5)], grow=True, fit_rows=[val(0, 6.0)], source="/not/ours/hf")
    assert load_curve(other).small_flops is None  # a source not made by ligo_ds has no known cost
    assert load_curve(other).small_val is None


def test_small_model_already_at_target_is_flagged(tmp_path):
    # The small model alone ends at 2.9, below the scratch target 3.0: any growth of it "saves" FLOPs.
    scratch = write_run(tmp_path, "scratch", [val(0, 9.0), val(1000, 3.0)])
    small = write_small(tmp_path, final_val=2.9)
    grown = write_run(tmp_path, "stack", [val(0, 2.95), val(1000, 2.5)], grow=True, source=str(small))
    rows = report([scratch, grown], tmp_path / "out")
    assert rows[1].small_reaches_target is True and rows[1].saving == pytest.approx(1.0)
    md = (tmp_path / "out/report.md").read_text()
    assert "**Trivial saving:** the small model alone already reaches the target (2.9000 <= 3.0000) for stack" in md


@pytest.mark.parametrize("differs", [{"data": data_identity("/y/data", "other")}, {"eval_samples": 8}])
def test_small_loss_measured_differently_is_not_compared(tmp_path, differs):
    scratch = write_run(tmp_path, "scratch", [val(0, 9.0), val(1000, 3.0)])
    small = write_small(tmp_path, final_val=2.9, **differs)
    grown = write_run(tmp_path, "stack", [val(0, 2.95), val(1000, 2.5)], grow=True, source=str(small))
    rows = report([scratch, grown], tmp_path / "out")
    assert rows[1].small_final_val == 2.9 and rows[1].small_reaches_target is None
    md = (tmp_path / "out/report.md").read_text()
    assert "Trivial" not in md and "was measured on other validation data" in md


def test_same_data_on_another_machine_compares(tmp_path):
    # the data dir's path differs, its meta sha does not: the losses are comparable
    scratch = write_run(tmp_path, "scratch", [val(0, 9.0), val(1000, 3.0)], data=data_identity("/cluster/d", "abc123"))
    small = write_small(tmp_path, final_val=2.9)
    grown = write_run(tmp_path, "stack", [val(0, 2.95)], grow=True, source=str(small))
    assert compare([load_curve(scratch), load_curve(grown)])[1][1].small_reaches_target is True


def test_best_scratch_is_the_baseline(tmp_path):
    a = write_run(tmp_path, "lr_a", [val(0, 9.0), val(100, 3.0)])
    b = write_run(tmp_path, "lr_b", [val(0, 9.0), val(100, 2.8)])
    base, _ = compare([load_curve(a), load_curve(b)])
    assert base.name == "lr_b"
    base, _ = compare([load_curve(a), load_curve(b)], scratch="lr_a")
    assert base.name == "lr_a"


def test_report_errors(tmp_path):
    with pytest.raises(ConfigError, match="holds no metrics.jsonl"):
        load_curve(tmp_path)
    g = write_run(tmp_path, "g", [val(0, 3.0)], model="dir")
    with pytest.raises(ConfigError, match="no scratch run among the runs"):
        compare([load_curve(g)])
    with pytest.raises(ConfigError, match="scratch run 'x' is not among the runs: g"):
        compare([load_curve(g)], scratch="x")
    from ligo_ds.cli import main

    assert main(["report", str(g), "--out", str(g.parent / "r"), "--scratch", "x"]) == 2


def test_cli_prints_the_table(tmp_path):
    s = write_run(tmp_path, "scratch", [val(0, 9.0), val(10, 3.0)])
    out = subprocess.run(
        [sys.executable, "-m", "ligo_ds", "report", str(s), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "| scratch | scratch (target) | 3.0000 |" in out.stdout
