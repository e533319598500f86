"""data/reading.py, data/order.py and data/batches.py: the reader of DATA_DIRs (shards, checks, mixtures) and the
data order."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from ligo_ds import ConfigError
from ligo_ds.data.order import MIX_BLOCK, MixtureOrder, Permutation, SampleOrder, apportion, parse_weights
from ligo_ds.data.prepare import PrepareOptions, prepare
from ligo_ds.data.reading import TokenData, TokenStream, open_data

from conftest import make_tokenizer


@pytest.fixture
def sharded(text_folder, tmp_path):
    """The mixed corpus in shards of 64 tokens."""
    prepare(
        PrepareOptions(
            source=str(text_folder), out=str(tmp_path / "d"), vocab_size=300, val_fraction=0.1, shard_bytes=128
        )
    )
    return tmp_path / "d"


def test_shards_read_as_one_stream(sharded):
    data = TokenData(sharded)
    shards = data.meta["splits"]["train"]["shards"]
    assert len(shards) > 5 and all(s["tokens"] == 64 for s in shards[:-1])
    whole = np.concatenate([np.fromfile(sharded / s["file"], dtype=np.uint16) for s in shards])
    train = data.tokens("train")
    assert len(train) == len(whole) == data.meta["train_tokens"]
    for start, stop in [(0, 10), (60, 70), (63, 64), (64, 200), (0, len(whole)), (len(whole) - 3, len(whole) + 5)]:
        assert np.array_equal(train[start:stop], whole[start:stop]), (start, stop)
    assert train.tolist() == whole.tolist()
    assert data.verify() == []


def test_reader_checks(sharded):
    data = TokenData(sharded)
    with pytest.raises(ConfigError, match="vocabulary of 300 tokens, larger than the model's vocab_size 256"):
        data.check_model(256)
    data.check_model(300)
    third = sharded / data.meta["splits"]["train"]["shards"][2]["file"]
    good = third.read_bytes()
    third.write_bytes(good[:-2])  # truncated: named at load
    with pytest.raises(ConfigError, match=r"shard '.*train-00002.bin': 126 bytes, but meta.json lists 64 tokens"):
        data.tokens("train")
    third.write_bytes(good[:-2] + b"\x00\x00" if good[-2:] != b"\x00\x00" else good[:-2] + b"\x01\x00")
    data.tokens("train")  # the same size: only the checksum tells
    problems = data.verify()
    assert len(problems) == 1 and "train-00002.bin' does not match the SHA-256" in problems[0]
    assert data.verify(rank=0, world=2) + data.verify(rank=1, world=2) == problems, "ranks split the hashing"
    (sharded / "meta.json").unlink()
    with pytest.raises(ConfigError, match="has no meta.json; create it with `ligo-ds prepare`"):
        TokenData(sharded)


def test_format_1_data_dirs_still_read(tmp_path):
    ids = np.arange(100, dtype=np.uint16)
    ids.tofile(tmp_path / "train.bin")
    ids[:20].tofile(tmp_path / "val.bin")
    meta = {"format": 1, "vocab_size": 320, "eos_id": 0, "dtype": "uint16", "train_tokens": 100, "val_tokens": 20}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    data = TokenData(tmp_path)
    assert data.tokens("train").tolist() == list(range(100)) and len(data.validation()) == 20
    # It lists no checksums: --verify-data checksum (the default) cannot vouch for it, and says so.
    problems = data.verify()
    assert len(problems) == 2 and all("lists no SHA-256" in p and "--verify-data size" in p for p in problems)


def test_permutation_is_a_seeded_bijection():
    for n in (1, 2, 3, 5, 64, 1000, 4097, 65536):
        perm = Permutation(n, 7, 0)
        out = perm(np.arange(n))
        assert sorted(out.tolist()) == list(range(n)), n
        assert np.array_equal(Permutation(n, 7, 0)(np.arange(n)), out), "seed-determined"
        if n >= 64:
            assert not np.array_equal(Permutation(n, 8, 0)(np.arange(n)), out), "another seed, another order"
            assert np.mean(out == np.arange(n)) < 0.05, "not close to the identity"
    big = Permutation(10**12, 1, 2)
    probe = np.arange(10**12 - 5000, 10**12)
    values = big(probe)
    assert len(set(values.tolist())) == 5000 and values.max() < 10**12, "no table: any domain size"
    assert np.array_equal(big(probe[1234:1240]), values[1234:1240]), "any index reached directly"


def test_sample_order_is_a_permutation_per_epoch():
    order = SampleOrder(num_tokens=1001, seq_len=10, seed=3)
    assert order.num_windows == 100
    epoch0 = order.starts(0, 100)
    assert sorted(epoch0) == list(range(0, 1000, 10))
    assert not np.array_equal(epoch0, order.starts(100, 100)), "a new permutation each epoch"
    assert np.array_equal(order.starts(37, 5), epoch0[37:42]), "any position can be reached directly"
    assert np.array_equal(order.starts(95, 10)[:5], epoch0[95:]), "across an epoch's end"
    assert np.array_equal(SampleOrder(1001, 10, 3).starts(0, 100), epoch0)


def test_weights_and_apportionment():
    assert parse_weights("a=7,b=3", "--data") == [("a", 0.7), ("b", 0.3)]
    assert parse_weights("/data/x", "--data") == [("/data/x", 1.0)]
    for bad in ("a=0.7,b", "a=-1,b=2", "a=x", "a=1,a=2", "a=nan"):
        with pytest.raises(ConfigError, match="--data"):
            parse_weights(bad, "--data")
    assert apportion(10, [0.55, 0.45]) == [6, 4] and sum(apportion(MIX_BLOCK, [1 / 3] * 3)) == MIX_BLOCK


def test_mixture_order_weights_and_positions():
    orders = [SampleOrder(10_001, 10, 1), SampleOrder(300_001, 10, 1), SampleOrder(501, 10, 1)]
    mix = MixtureOrder(orders, [0.5, 0.3, 0.2], seed=1)
    source, starts = mix.locate(0, 10_000)
    shares = np.bincount(source, minlength=3) / 10_000
    assert np.all(np.abs(shares - [0.5, 0.3, 0.2]) < 0.02), shares
    assert mix.consumed(10_000) == np.bincount(source, minlength=3).tolist()
    s2, t2 = mix.locate(4321, 777)  # resume anywhere: the same samples
    assert np.array_equal(s2, source[4321:5098]) and np.array_equal(t2, starts[4321:5098])
    # Within a source, its samples walk its own order: the small one (50 windows) repeats by epochs.
    small = starts[source == 2]
    assert sorted(small[:50].tolist()) == list(range(0, 500, 10))
    assert mix.consumed(3 * MIX_BLOCK) == [3 * c for c in mix.counts], "whole blocks hold exact counts"


def test_mixture_data_reads_each_source_and_refuses_another_tokenizer(text_folder, tmp_path):
    for name in ("a", "b"):
        prepare(
            PrepareOptions(
                source=str(text_folder),
                out=str(tmp_path / name),
                tokenizer=str(make_tokenizer(tmp_path / "tok", "gpt2")),
                val_fraction=0.1,
            )
        )
    mix = open_data(f"{tmp_path / 'a'}=0.75,{tmp_path / 'b'}=0.25", "--data")
    assert [p.dir.name for p in mix.sources] == ["a", "b"] and mix.verify() == []
    batches = mix.training(seq_len=8, seed=0)
    ids, targets = batches.read(0, 16)
    assert ids.shape == (16, 8) and np.array_equal(ids[:, 1:], targets[:, :-1])
    shares = batches.consumed(4000)
    assert abs(shares[str(tmp_path / "a")] / (4000 * 8) - 0.75) < 0.02
    a_val, b_val = TokenData(tmp_path / "a").tokens("val"), TokenData(tmp_path / "b").tokens("val")
    na, nb = apportion(int(min(len(a_val) / 0.75, len(b_val) / 0.25)), [0.75, 0.25])
    assert mix.validation().tolist() == a_val[:na].tolist() + b_val[:nb].tolist() and nb > 0
    prepare(PrepareOptions(source=str(text_folder), out=str(tmp_path / "c"), vocab_size=300, val_fraction=0.1))
    with pytest.raises(
        ConfigError, match=r"'.*c' was tokenized with another tokenizer .* a mixture needs one tokenizer"
    ):
        open_data(f"{tmp_path / 'a'}=0.5,{tmp_path / 'c'}=0.5", "--data")


def test_background_read_gives_the_same_batches(sharded):
    data = TokenData(sharded)
    direct = data.training(seq_len=16, seed=5)
    ahead = data.training(seq_len=16, seed=5)
    for first in range(0, 64, 8):
        a = direct.read(first, 4)
        b = ahead.read(first, 4, stride=8)  # each read starts the next one in the background
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    ahead.close()


def test_token_stream_slices():
    stream = TokenStream([np.arange(0, 5), np.arange(5, 5), np.arange(5, 12)], np.dtype(np.int64))
    assert len(stream) == 12 and stream[3:9].tolist() == [3, 4, 5, 6, 7, 8] and stream[11:20].tolist() == [11]
    with pytest.raises(TypeError):
        stream[3]


def test_meta_json_is_trusted_only_inside_its_folder(tmp_path):
    """Shard names are plain files of the folder; every shard has a checksum and well-typed counts."""
    ids = np.arange(64, dtype=np.uint16)
    ids.tofile(tmp_path / "train-00000.bin")
    ids.tofile(tmp_path / "val-00000.bin")
    sha = hashlib.sha256(ids.tobytes()).hexdigest()

    def meta(**train):
        shard = {"file": "train-00000.bin", "tokens": 64, "sha256": sha, "max_id": 63, **train}
        val = {"file": "val-00000.bin", "tokens": 64, "sha256": sha, "max_id": 63}
        splits = {"train": {"shards": [shard]}, "val": {"shards": [val]}}
        body = {"format": 2, "vocab_size": 320, "eos_id": 0, "dtype": "uint16", "splits": splits}
        (tmp_path / "meta.json").write_text(json.dumps(body))
        return tmp_path

    assert TokenData(meta()).verify() == []
    for name in ("../x.bin", "/etc/passwd", "sub/train.bin", "..", ""):
        with pytest.raises(ConfigError, match="expected a plain file name inside"):
            TokenData(meta(file=name))
    with pytest.raises(ConfigError, match="sha256 is None, expected the shard's SHA-256"):
        TokenData(meta(sha256=None))
    with pytest.raises(ConfigError, match="tokens is True, expected a non-negative integer"):
        TokenData(meta(tokens=True))
    meta()
    (tmp_path / "outside.bin").write_bytes(ids.tobytes())
    sub = tmp_path / "sub"
    sub.mkdir()
    for f in ("train-00000.bin", "val-00000.bin", "meta.json"):
        (sub / f).write_bytes((tmp_path / f).read_bytes())
    (sub / "train-00000.bin").unlink()
    (sub / "train-00000.bin").symlink_to(tmp_path / "outside.bin")
    with pytest.raises(ConfigError, match="is a symbolic link out of its folder"):
        TokenData(sub)


def test_ids_beyond_the_models_vocabulary_are_refused_by_meta_and_as_read(tmp_path):
    data = TokenData(_write_shards(tmp_path, np.array([1, 2, 3, 500, 4, 5], dtype=np.uint16)))
    assert data.tokens("train")[0:6].tolist() == [1, 2, 3, 500, 4, 5]  # no model yet: nothing to check against
    with pytest.raises(
        ConfigError, match="holds token ids up to 500 \\(meta.json\\), beyond the model's vocab_size 320"
    ):
        data.check_model(320)
    meta = json.loads((tmp_path / "meta.json").read_text())
    for split in ("train", "val"):
        meta["splits"][split]["shards"][0].pop("max_id")  # as a shard damaged after prepare would read
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    data = TokenData(tmp_path)
    data.check_model(320)
    assert data.tokens("train")[0:3].tolist() == [1, 2, 3]
    with pytest.raises(ConfigError, match="train-00000.bin' holds token id 500 at position 3, beyond"):
        data.tokens("train")[2:5]


def _write_shards(tmp_path, ids: np.ndarray):
    ids.tofile(tmp_path / "train-00000.bin")
    ids.tofile(tmp_path / "val-00000.bin")
    sha = hashlib.sha256(ids.tobytes()).hexdigest()
    shard = {"tokens": len(ids), "sha256": sha, "max_id": int(ids.max())}
    splits = {s: {"shards": [{"file": f"{s}-00000.bin", **shard}]} for s in ("train", "val")}
    meta = {"format": 2, "vocab_size": 320, "eos_id": 0, "dtype": "uint16", "splits": splits}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    return tmp_path
