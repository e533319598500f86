"""prepare.py: sources, determinism, the validation split, bad corpora refused."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ligo_ds import ConfigError, tokenizer
from ligo_ds.data import TokenData
from ligo_ds.options import PrepareOptions
from ligo_ds.prepare import choose_validation, prepare, stdlib_files

from conftest import DOCS, make_tokenizer


def _decode_docs(data_dir) -> list[str]:
    data = TokenData(data_dir)
    tok = tokenizer.load(data_dir)
    docs = []
    for split in ("train", "val"):
        ids = data.tokens(split).tolist()
        cuts = [i for i, t in enumerate(ids) if t == data.eos_id]
        start = 0
        for c in cuts:
            docs.append(tok.decode(ids[start:c], skip_special_tokens=True))
            start = c + 1
        assert start == len(ids), "every document ends with end-of-text"
    return docs


def test_prepare_local_roundtrip_and_determinism(text_folder, tmp_path):
    meta = prepare(PrepareOptions(source=str(text_folder), out=str(tmp_path / "a"), vocab_size=300, val_fraction=0.1))
    prepare(PrepareOptions(source=str(text_folder), out=str(tmp_path / "b"), vocab_size=300, val_fraction=0.1))
    for name in ("train.bin", "val.bin", "meta.json", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert sorted(_decode_docs(tmp_path / "a")) == sorted(DOCS)
    assert meta["documents"]["train"] + meta["documents"]["val"] == len(DOCS)
    assert meta["vocab_size"] == 300 and meta["dtype"] == "uint16"
    total = meta["train_tokens"] + meta["val_tokens"]
    assert 0.1 <= meta["val_tokens"] / total < 0.2


def test_prepare_parquet_with_given_tokenizer(text_folder, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    prepare(PrepareOptions(source=str(text_folder), out=str(tmp_path / "a"), vocab_size=300, val_fraction=0.1))
    pq.write_table(pa.table({"body": DOCS[:20]}), tmp_path / "x.parquet")
    meta = prepare(
        PrepareOptions(
            source=str(tmp_path / "x.parquet"),
            out=str(tmp_path / "p"),
            tokenizer=str(tmp_path / "a"),
            text_field="body",
            val_fraction=0.1,
        )
    )
    assert meta["options"]["tokenizer"] == "given"
    assert meta["tokenizer_fingerprint"] == json.loads((tmp_path / "a/meta.json").read_text())["tokenizer_fingerprint"]
    assert sorted(_decode_docs(tmp_path / "p")) == sorted(DOCS[:20])


def test_choose_validation():
    lengths = [10] * 100
    held = choose_validation(lengths, 0.05)
    assert sum(held) == 5 and held == choose_validation(lengths, 0.05)
    assert held != [True] * 5 + [False] * 95, "spread over the corpus, not its head"
    assert sum(choose_validation([5, 5], 0.99)) == 1, "at least one training document stays"
    with pytest.raises(ConfigError, match="1 document"):
        choose_validation([5], 0.5)


def test_stdlib_files_exclude_tests_and_packages():
    files = stdlib_files()
    assert len(files) > 300
    rel = [f.as_posix() for f in files]
    assert not any("/test/" in f or "/tests/" in f or "site-packages" in f for f in rel)
    assert any(f.endswith("/json/decoder.py") for f in rel)
    assert rel == sorted(rel)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "holds no .txt/.jsonl/.json/.parquet files"),
        (lambda p: (p / "e.txt").write_text("") and None or p / "e.txt", "is empty"),
        (lambda p: (p / "x.bin").write_bytes(b"1") and None or p / "x.bin", "unsupported file type '.bin'"),
        (
            lambda p: (p / "l.txt").write_bytes(b"ok \xff\xfe bad") and None or p / "l.txt",
            r"is not UTF-8 text \(invalid byte at offset 3\)",
        ),
        (lambda p: (p / "one.txt").write_text("a single document") and None or p / "one.txt", "at least 2 are needed"),
    ],
)
def test_bad_corpus(tmp_path, make, message):
    source = make(tmp_path)
    with pytest.raises(ConfigError, match=message):
        prepare(PrepareOptions(source=str(source), out=str(tmp_path / "out"), vocab_size=300))
    assert not (tmp_path / "out").exists()


def test_existing_out_is_refused_and_kept(text_folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="exists and is not empty; pass --force"):
        prepare(PrepareOptions(source=str(text_folder), out=str(out), vocab_size=300))
    assert (out / "precious.txt").read_text() == "keep me"


def test_hub_source_offline_fails_clearly(tmp_path):
    env_cmd = [
        sys.executable,
        "-m",
        "ligo_ds",
        "prepare",
        "--source",
        "hub:someone/absent-dataset",
        "--out",
        str(tmp_path / "h"),
    ]
    result = subprocess.run(
        env_cmd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    assert result.returncode == 2
    assert "cannot load hub dataset 'someone/absent-dataset'" in result.stderr


def test_trained_tokenizer_is_a_whole_autotokenizer(text_folder, tmp_path):
    from transformers import AutoTokenizer

    meta = prepare(PrepareOptions(source=str(text_folder), out=str(tmp_path / "d"), vocab_size=300, val_fraction=0.1))
    tok = AutoTokenizer.from_pretrained(tmp_path / "d")
    assert (tok.eos_token, tok.bos_token, tok.pad_token) == ("<|endoftext|>",) * 3
    assert tok.eos_token_id == TokenData(tmp_path / "d").eos_id == meta["eos_id"]
    assert meta["eos_token"] == "<|endoftext|>" and meta["tokenizer_fingerprint"] == tokenizer.fingerprint(tok)
    assert np.dtype(TokenData(tmp_path / "d").meta["dtype"]) == np.uint16


@pytest.mark.parametrize("style, eos", [("llama2", "</s>"), ("llama3", "<|end_of_text|>")])
def test_models_own_tokenizer_separates_documents_with_its_eos(style, eos, text_folder, tmp_path):
    """Llama 2 / Mistral name </s> in tokenizer_config.json; a Llama 3 base names <|end_of_text|> only
    through generation_config.json's eos ids. Their post-processors put a BOS before each document."""
    model_dir = make_tokenizer(tmp_path / "model", style)
    meta = prepare(
        PrepareOptions(source=str(text_folder), out=str(tmp_path / "d"), tokenizer=str(model_dir), val_fraction=0.1)
    )
    tok = tokenizer.load(model_dir)
    assert meta["eos_token"] == eos and meta["eos_id"] == tok.convert_tokens_to_ids(eos)
    assert meta["tokenizer_fingerprint"] == tokenizer.fingerprint(tok)
    ids = TokenData(tmp_path / "d").tokens("train").tolist()
    bos = tok.convert_tokens_to_ids(tok.bos_token or "<|begin_of_text|>")
    assert ids[0] == bos and ids.count(bos) == ids.count(meta["eos_id"]) == meta["documents"]["train"]
    assert sorted(_decode_docs(tmp_path / "d")) == sorted(DOCS)
    assert tokenizer.load(tmp_path / "d").eos_token == eos  # the DATA_DIR's tokenizer names it, for exports


def test_eos_token_flag_overrides_and_a_tokenizer_without_eos_is_refused(text_folder, tmp_path):
    model_dir = make_tokenizer(tmp_path / "model", "no_eos")
    opts = dict(source=str(text_folder), tokenizer=str(model_dir), val_fraction=0.1)
    with pytest.raises(ConfigError, match="names no end-of-sequence token .*pass --eos-token TOKEN"):
        prepare(PrepareOptions(out=str(tmp_path / "refused"), **opts))
    assert not (tmp_path / "refused").exists()
    with pytest.raises(ConfigError, match="--eos-token '<eos>' is not a token of the tokenizer at"):
        prepare(PrepareOptions(out=str(tmp_path / "refused"), eos_token="<eos>", **opts))
    meta = prepare(PrepareOptions(out=str(tmp_path / "d"), eos_token="<pad>", **opts))
    assert (meta["eos_token"], meta["eos_id"]) == ("<pad>", 0)
