"""analysis/budgets.py on synthetic metrics with known answers: the own-schedule saving interpolated between the
lengths of a grown model's schedules, and the saving as a curve over target losses."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ligo_ds.analysis.budgets import Budget, best_per_length, budget_crossing, saving_curve, scratch_targets


def test_the_crossing_is_interpolated_between_the_lengths_around_it():
    # Target 5.0 is 1/4 of the way from the 0.5 run's 5.2 down to the 0.75 run's 4.4: 0.5625 of the length,
    # and FLOPs 1/4 of the way from 60 to 80 (a 10-FLOP fit, then 100 FLOPs per unit of length).
    runs = [Budget(0.25, 35.0, 5.6, "a"), Budget(0.5, 60.0, 5.2, "b"), Budget(0.75, 85.0, 4.4, "c")]
    hit = budget_crossing(runs, 5.0)
    assert hit.fraction == pytest.approx(0.5625) and hit.flops == pytest.approx(66.25)
    assert not hit.at_most and hit.shortest.name == "c"
    assert budget_crossing(runs, 4.0) is None, "no length reaches it"


def test_the_shortest_length_reaching_the_target_is_a_bound_only():
    hit = budget_crossing([Budget(0.5, 60.0, 4.9, "b"), Budget(1.0, 110.0, 4.5, "d")], 5.0)
    assert (hit.fraction, hit.flops, hit.at_most, hit.shortest.name) == (0.5, 60.0, True, "b")


def test_each_length_keeps_its_best_schedule_in_any_order():
    runs = [
        Budget(1.0, 110.0, 4.6, "long_lemon"),
        Budget(0.5, 60.0, 5.3, "half_lemon"),
        Budget(0.5, 60.0, 5.1, "half_wsd"),
        Budget(1.0, 110.0, 4.7, "long_wsd"),
    ]
    assert [b.name for b in best_per_length(runs)] == ["half_wsd", "long_lemon"]
    # 5.0 between 5.1 (0.5) and 4.6 (1.0): a fifth of the way.
    hit = budget_crossing(runs, 5.0)
    assert hit.fraction == pytest.approx(0.6) and hit.flops == pytest.approx(70.0)


def test_the_curve_divides_each_method_fewest_flops_by_the_scratch_run():
    # The scratch run's new lows after its first (untrained) evaluation; 5.2 at 300 is not one.
    scratch = [(0.0, 0.0, 9.0), (100.0, 1.0, 6.0), (200.0, 2.0, 5.0), (300.0, 3.0, 5.2), (350.0, 3.5, 4.5)]
    scratch.append((400.0, 4.0, 4.0))
    assert scratch_targets(scratch) == [(6.0, 100.0), (5.0, 200.0), (4.5, 350.0), (4.0, 400.0)]
    # Two runs of one method: the short one reaches 5.0 sooner, only the long one reaches 4.0.
    short = [(20.0, 0.0, 5.5), (60.0, 0.0, 4.5)]
    long = [(20.0, 0.0, 5.5), (100.0, 0.0, 5.0), (200.0, 0.0, 4.0)]
    curve = dict(saving_curve(scratch, {"ligo": [short, long], "never": [[(10.0, 0.0, 7.0)]]}))
    assert curve[6.0]["ligo"] == pytest.approx(1 - 20 / 100)  # already there at its first evaluation
    assert curve[5.0]["ligo"] == pytest.approx(1 - 40 / 200)  # the short run: halfway from 5.5 to 4.5
    assert curve[4.5]["ligo"] == pytest.approx(1 - 60 / 350)
    assert curve[4.0]["ligo"] == pytest.approx(1 - 200 / 400)
    assert all(row["never"] is None for row in curve.values())


@pytest.mark.parametrize("preset", ["tiny", "cpu", "gpu"])
def test_every_grown_schedule_of_the_study_is_a_valid_grow_at_every_length(preset):
    """bench/savings.py's GROWN_SCHEDULES give `grow` options it accepts (warmup and decay fit in the run)
    at every length of the issue's grid, with the peak and warmup each recipe names."""
    import sys

    from ligo_ds.cli import build_parser
    from ligo_ds.growth.grow import GrowOptions
    from ligo_ds.options import from_args

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from savings import GROWN_SCHEDULES, PRESETS, grown_schedule

    p = PRESETS[preset]
    for name, (share, factor, _) in GROWN_SCHEDULES.items():
        for budget in (0.25, 0.5, 0.75, 1.0):
            lr, steps, warmup, flags = grown_schedule(p, name, 1e-3, budget)
            argv = ["grow", "--source", "s", "--target", "t.json", "--data", "d", "--out", "o"]
            argv += ["--lr", str(lr), "--max-steps", str(steps), "--warmup-steps", str(warmup), *flags]
            opts = from_args(GrowOptions, build_parser().parse_args(argv))
            s = opts.schedule
            assert (s.lr, s.max_steps, s.warmup_steps) == (pytest.approx(1e-3 * factor), steps, round(share * p.warmup))
            assert steps == max(1, round(budget * p.large_steps))


def test_study_flags_parse_lengths_and_lrs_and_name_the_bad_value():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from savings import parse_budgets, parse_lrs

    assert parse_budgets("1,0.25,0.5,0.25") == (0.25, 0.5, 1.0)
    assert parse_lrs("4e-3,2e-3", "--scratch-lrs") == (2e-3, 4e-3)
    for bad in ("", "0", "2", "x", "1e-3,,2e-3"):
        with pytest.raises(SystemExit, match=rf"--small-lrs '{bad}': expected comma-separated learning rates"):
            parse_lrs(bad, "--small-lrs")
    with pytest.raises(SystemExit, match=r"--budgets '0,1': expected fractions"):
        parse_budgets("0,1")


def test_lead_is_paired_against_the_rival_best_on_average():
    from ligo_ds.analysis.budgets import lead_over_best, over_seeds

    s = over_seeds([0.70, 0.66, 0.74])
    assert (s.mean, s.low) == (pytest.approx(0.70), 0.66) and s.sd == pytest.approx(0.04)
    assert math.isnan(over_seeds([0.5]).sd)  # one seed has no spread to report
    # zero is better on average (0.68 vs 0.65) though stack wins seed 2: the lead is against zero at every seed
    seeds = [
        {"ligo": 0.70, "zero": 0.69, "stack": 0.60},
        {"ligo": 0.66, "zero": 0.62, "stack": 0.70},
        {"ligo": 0.74, "zero": 0.73, "stack": 0.65},
    ]
    best, lead = lead_over_best(seeds, "ligo")
    assert best == "zero" and lead.values == pytest.approx((0.01, 0.04, 0.01)) and lead.mean == pytest.approx(0.02)
    with pytest.raises(ValueError, match=r"\(1, 'stack'\)"):
        lead_over_best([seeds[0], {"ligo": 0.6, "zero": 0.6}], "ligo")
    with pytest.raises(ValueError, match="no method besides 'ligo'"):
        lead_over_best([{"ligo": 0.6}], "ligo")


def test_seed_summary_reads_each_seed_report_and_leads_against_the_best_rival(tmp_path, capsys):
    import csv
    import sys

    from ligo_ds.analysis.render import OWN_SCHEDULE_COLUMNS

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import seeds

    def seed(name, target, rows):
        report = tmp_path / name / "gpt2" / "report"
        report.mkdir(parents=True)
        (report / "report.csv").write_text(f"name,kind,final_val\nscratch_lr0.002,scratch (target),{target}\n")
        with open(report / "own_schedule.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(OWN_SCHEDULE_COLUMNS)
            for method, same, own, at_least in rows:
                w.writerow([method, 5, same, own, at_least, 0.3, f"{method}_0.3x_lemon"])
        return report

    first = [("ligo", 0.63, 0.70, 0), ("net2net_zero", 0.63, 0.69, 0), ("net2net_stack", 0.6, 0.6, 0)]
    second = [("ligo", 0.60, 0.66, 0), ("net2net_zero", 0.6, 0.62, 0), ("net2net_stack", 0.6, 0.7, 1)]
    reports = [seed("cpu", 4.84, first), seed("cpu_seed1", 4.85, second)]
    out = tmp_path / "seeds.csv"
    assert seeds.main([*map(str, reports), "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| target (scratch final val) | 4.8400 | 4.8500 |" in text
    assert "| ligo | 70.0 | 66.0 | 68.0 | 2.8 |" in text and "| net2net_stack | 60.0 | ≥ 70.0 | 65.0 |" in text
    # zero: mean 65.5 > stack's 65.0, so the lead is paired against zero: +1, +4
    assert "ligo's lead over net2net_zero (the best other method on average), points: +1.0, +4.0; mean +2.5" in text
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["method", "quantity", "cpu", "cpu_seed1", "mean", "sd"]
    assert rows[-1][:2] == ["ligo", "lead_over_net2net_zero"] and float(rows[-1][4]) == pytest.approx(0.025)
    # a method that never reaches a seed's target leaves no lead to compute, and says where
    third = seed("cpu_seed2", 4.9, [("ligo", 0.6, 0.7, 0), ("net2net_zero", "", "", "")])
    seeds.main([*map(str, reports), str(third)])
    text = capsys.readouterr().out
    assert "Not compared (not run at every seed): net2net_stack." in text
    assert "No lead: at cpu_seed2, net2net_zero never reached the target on any length tried." in text
    with pytest.raises(SystemExit, match=r"--lead 'net2net_stack': not among the methods every seed ran"):
        seeds.main([*map(str, reports), str(third), "--lead", "net2net_stack"])
    with pytest.raises(SystemExit, match="no own_schedule.csv"):
        seeds.main([str(tmp_path)])
