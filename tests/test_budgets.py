"""budgets.py on synthetic metrics with known answers: the own-schedule saving interpolated between the
lengths of a grown model's schedules, and the saving as a curve over target losses."""

from __future__ import annotations

from pathlib import Path

import pytest

from ligo_ds.budgets import Budget, best_per_length, budget_crossing, saving_curve, scratch_targets


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
    from ligo_ds.options import GrowOptions, from_args

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
