"""schedule.py: the learning rate at each step."""

from __future__ import annotations

import pytest

from ligo_ds.options import Schedule
from ligo_ds.schedule import lr_at


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
