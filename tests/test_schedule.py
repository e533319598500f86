"""training/schedule.py: the learning rate at each step."""

from __future__ import annotations

import pytest

from ligo_ds.errors import ConfigError
from ligo_ds.training.schedule import Schedule, check_branch, check_fits, decay_start, lr_at


def test_schedule_warmup_then_cosine_to_floor():
    cfg = Schedule(max_steps=20, lr=1.0, min_lr=0.1, warmup_steps=4)
    lrs = [lr_at(s, 20, cfg) for s in range(21)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and lrs[20] == pytest.approx(0.1)
    assert lrs[12] == pytest.approx(0.55)  # halfway through the cosine
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_default_floor_is_a_tenth_of_the_peak():
    cfg = Schedule(max_steps=10, lr=2.0, warmup_steps=0)
    assert cfg.floor_lr == 0.2 and lr_at(10, 10, cfg) == pytest.approx(0.2) and lr_at(0, 10, cfg) == 2.0


def wsd(total=20, **kw) -> Schedule:
    return Schedule(max_steps=total, **{"lr": 1.0, "min_lr": 0.0, "warmup_steps": 2, "schedule": "wsd", **kw})


@pytest.mark.parametrize("shape, mid", [("linear", 0.5), ("cosine", 0.5), ("1-sqrt", 1 - 0.5**0.5)])
def test_wsd_holds_the_peak_then_decays_the_last_fraction(shape, mid):
    cfg = wsd(decay_fraction=0.4, decay_shape=shape)  # 8 decay steps, from step 12
    lrs = [lr_at(s, 20, cfg) for s in range(21)]
    assert lrs[:2] == [0.5, 1.0] and lrs[2:13] == [1.0] * 11
    assert lrs[16] == pytest.approx(mid) and lrs[20] == 0.0
    assert all(a > b for a, b in zip(lrs[12:], lrs[13:])), "strictly decreasing through the decay"


def test_wsd_defaults_and_the_stable_phase_does_not_depend_on_the_length():
    cfg = wsd(min_lr=None)
    assert (cfg.wsd_fraction, cfg.wsd_shape, cfg.floor_lr) == (0.2, "linear", 0.1)
    assert decay_start(20, cfg) == 16 and decay_start(1000, cfg) == 800
    # every step before the shorter run's decay has the same lr in both: a run can branch there
    assert [lr_at(s, 20, cfg) for s in range(17)] == [lr_at(s, 1000, cfg) for s in range(17)]


def test_constant_holds_the_peak_after_warmup():
    cfg = Schedule(max_steps=10, lr=0.5, warmup_steps=4, schedule="constant")
    assert [lr_at(s, 10, cfg) for s in range(11)] == [0.125, 0.25, 0.375] + [0.5] * 8


def test_a_wsd_decay_must_fit_after_the_warmup():
    check_fits(20, wsd(warmup_steps=16))  # the decay starts as the warmup ends
    with pytest.raises(ConfigError, match=r"--warmup-steps 17 and --decay-fraction 0.2 \(4 decay steps\) do not fit"):
        check_fits(20, wsd(warmup_steps=17))


def test_a_branch_must_leave_from_the_stable_phase_with_the_same_lr():
    long, short = wsd(total=100), wsd(total=40)  # decays from 80 and from 32
    check_branch(32, 100, long, 40, short)
    check_branch(10, 40, short, 100, long)  # to a longer run, too
    with pytest.raises(ConfigError, match="cannot branch at step 33"):
        check_branch(33, 100, long, 40, short)  # 33 is inside the short run's decay
    with pytest.raises(ConfigError, match="cannot branch at step 10: the run branched from has lr 1 there"):
        check_branch(10, 100, long, 40, wsd(total=40, lr=2.0))
    cosine = Schedule(max_steps=100, lr=1.0, warmup_steps=2)
    with pytest.raises(ConfigError, match="cannot branch at step 10"):
        check_branch(10, 100, cosine, 40, short)  # a cosine run is past its peak by then


BAD_SCHEDULES = [
    (["--decay-fraction", "0.3"], "--decay-fraction 0.3 shapes wsd's decay; this run's --schedule is cosine"),
    (["--schedule", "wsd", "--decay-fraction", "1"], "--decay-fraction 1.0: expected strictly between 0.0 and 1.0"),
    (["--schedule", "wsd", "--decay-fraction", "0"], "--decay-fraction 0.0: expected strictly between 0.0 and 1.0"),
    (["--schedule", "constant", "--min-lr", "1e-4"], "--min-lr 0.0001: a constant --schedule never decays"),
    (["--schedule", "cosine", "--decay-shape", "linear"], "--decay-shape linear shapes wsd's decay"),
    (["--schedule", "wsd", "--warmup-steps", "9"], "--warmup-steps 9 and --decay-fraction 0.2 \\(2 decay steps\\)"),
]


@pytest.mark.parametrize("extra, message", BAD_SCHEDULES, ids=[" ".join(e) for e, _ in BAD_SCHEDULES])
def test_bad_schedule_is_refused_in_one_line(tmp_path, capsys, extra, message):
    from conftest import refused_up_front

    refused_up_front(tmp_path, capsys, extra, message)


def test_only_a_schedule_other_than_cosine_joins_the_run_identity():
    """Runs written before schedules had names (all cosine) resume: their identity has no schedule key."""
    assert Schedule(max_steps=5).shape() == {}
    assert wsd().shape() == {"schedule": "wsd", "decay_fraction": 0.2, "decay_shape": "linear"}
    assert Schedule(max_steps=5, schedule="constant").shape() == {"schedule": "constant"}
