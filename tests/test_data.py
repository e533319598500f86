"""data.py: the reader of a prepared DATA_DIR, and the data order."""

from __future__ import annotations

import numpy as np
import pytest

from ligo_ds import ConfigError
from ligo_ds.data import SampleOrder, TokenData
from ligo_ds.options import PrepareOptions
from ligo_ds.prepare import prepare


def test_reader_checks(text_folder, tmp_path):
    prepare(PrepareOptions(source=str(text_folder), out=str(tmp_path / "d"), vocab_size=300, val_fraction=0.1))
    data = TokenData(tmp_path / "d")
    with pytest.raises(ConfigError, match="vocabulary of 300 tokens, larger than the model's vocab_size 256"):
        data.check_model(256)
    data.check_model(300)
    train = tmp_path / "d/train.bin"
    train.write_bytes(train.read_bytes()[:-2])
    with pytest.raises(ConfigError, match="does not match meta.json"):
        data.tokens("train")
    with pytest.raises(ConfigError, match="has no meta.json"):
        TokenData(tmp_path)


def test_sample_order_is_a_permutation_per_epoch():
    order = SampleOrder(num_tokens=1001, seq_len=10, seed=3)
    assert order.num_windows == 100
    epoch0 = order.starts(0, 100)
    assert sorted(epoch0) == list(range(0, 1000, 10))
    assert not np.array_equal(epoch0, order.starts(100, 100)), "a new permutation each epoch"
    assert np.array_equal(order.starts(37, 5), epoch0[37:42]), "any position can be reached directly"
    assert np.array_equal(SampleOrder(1001, 10, 3).starts(0, 100), epoch0)
