"""data/prepare.py, sources.py, encoding.py and tokenize.py: sources, determinism across workers and kills, the
validation split, resume and refusal, bad corpora refused."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys

import numpy as np
import pytest

from ligo_ds import ConfigError
from ligo_ds.data import encoding
from ligo_ds.data.encoding import is_validation
from ligo_ds.data.prepare import PrepareOptions, prepare
from ligo_ds.data.reading import TokenData, staging_dir
from ligo_ds.data.sources import pieces, stdlib_files
from ligo_ds.data.tokenize import sample_texts
from ligo_ds.model import tokenizer

from conftest import DOCS, make_tokenizer
from procs import ROOT, job_env


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


def _files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_prepare_local_roundtrip_and_determinism(text_folder, tmp_path):
    meta = prepare(PrepareOptions(source=str(text_folder), out=str(tmp_path / "a"), vocab_size=300, val_fraction=0.1))
    prepare(PrepareOptions(source=str(text_folder), out=str(tmp_path / "b"), vocab_size=300, val_fraction=0.1))
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert {"meta.json", "tokenizer.json", "train-00000.bin", "val-00000.bin"} <= set(_files(tmp_path / "a"))
    assert sorted(_decode_docs(tmp_path / "a")) == sorted(DOCS)
    assert meta["documents"]["train"] + meta["documents"]["val"] == len(DOCS)
    assert meta["vocab_size"] == 300 and meta["dtype"] == "uint16" and meta["format"] == 2
    assert meta["documents"]["val"] == sum(is_validation(d, 0.1) for d in DOCS) > 0
    assert not any(str(tmp_path) in json.dumps(v) for k, v in meta.items() if k != "source"), "no paths of this machine"


# ---- a corpus of 10k documents in JSON lines: workers, shards, the split, kills ---------------------

N_DOCS = 10_000


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """10k documents of varied length in two .jsonl files, and a tokenizer for them."""
    root = tmp_path_factory.mktemp("big")
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "x", "yy", "def", "return", "ünï", "\n"]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 60))) + f" {i}" for i in range(N_DOCS)]
    (root / "corpus").mkdir()
    for part in range(2):
        with open(root / "corpus" / f"part{part}.jsonl", "w") as f:
            for d in docs[part::2]:
                f.write(json.dumps({"text": d}) + "\n")
    make_tokenizer(root / "tok", "gpt2")
    return root, docs


def _big_args(root, out, *extra):
    return [
        *("prepare", "--source", str(root / "corpus"), "--out", str(out), "--tokenizer", str(root / "tok")),
        *("--val-fraction", "0.1", "--shard-bytes", "40000", *extra),
    ]


@pytest.fixture(scope="module")
def reference(big, tmp_path_factory):
    """The big corpus prepared uninterrupted on one worker: what every other way of preparing it must give."""
    root, _ = big
    out = tmp_path_factory.mktemp("reference") / "d"
    result = _prepare_cli(_big_args(root, out, "--num-proc", "1"))
    assert result.returncode == 0, result.stderr
    return _files(out), out


def _prepare_cli(args, **env):
    return subprocess.run(
        [sys.executable, "-m", "ligo_ds", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=job_env(LIGO_DS_CHUNK_BYTES="65536", **env),
    )


def test_workers_shards_and_validation_fraction(big, reference, tmp_path):
    """Byte-identical shards whatever --num-proc; several shards; the split within 1 % of the request."""
    root, docs = big
    expected, one = reference
    two = tmp_path / "two"
    r2 = _prepare_cli(_big_args(root, two, "--num-proc", "2"))
    assert r2.returncode == 0, r2.stderr
    assert _files(two) == expected
    meta = TokenData(one).meta
    assert len(meta["splits"]["train"]["shards"]) > 3, "small --shard-bytes gives several shards"
    assert meta["documents"] == {"train": N_DOCS - meta["documents"]["val"], "val": meta["documents"]["val"]}
    total = meta["train_tokens"] + meta["val_tokens"]
    assert abs(meta["val_tokens"] / total - 0.1) < 0.01
    assert abs(meta["documents"]["val"] / N_DOCS - 0.1) < 0.01
    for shard in meta["splits"]["train"]["shards"][:-1]:
        assert shard["tokens"] == 20_000  # 40000 bytes of uint16
    assert "documents" in r2.stderr and "tokens" in r2.stderr, "progress is shown"


@pytest.mark.parametrize("crash_at", [1, 7])
def test_killed_prepare_resumes_byte_identical(big, reference, tmp_path, crash_at):
    """SIGKILL after the 1st chunk (nothing committed but the job) or the 7th (shards closed, one open),
    then the same command, on another number of workers: the output of an uninterrupted run."""
    root, _ = big
    expected, _ = reference
    killed = tmp_path / "killed"
    env = {"LIGO_DS_CRASH_AT": f"prepare:{crash_at}"}
    first = _prepare_cli(_big_args(root, killed, "--num-proc", "2"), **env)
    assert first.returncode == -9, first.stderr
    staging = staging_dir(killed)
    assert not killed.exists() and (staging / "progress.json").exists(), "unfinished work stays out of --out"
    if crash_at > 1:
        progress = json.loads((staging / "progress.json").read_text())
        assert progress["splits"]["train"]["shards"], "the kill came after shards were committed"
    again = _prepare_cli(_big_args(root, killed, "--num-proc", "1"))
    assert again.returncode == 0, again.stderr
    assert _files(killed) == expected
    # Once complete, the same command does nothing and says so.
    done = _prepare_cli(_big_args(root, killed))
    assert done.returncode == 0 and "already complete" in done.stderr and _files(killed) == expected


def test_another_command_on_the_same_out_is_refused(big, reference, tmp_path):
    import shutil

    root, _ = big
    out = tmp_path / "d"
    shutil.copytree(reference[1], out)
    before = _files(out)
    other = _prepare_cli(_big_args(root, out, "--val-fraction", "0.2"))
    assert other.returncode == 2
    assert "holds the output of another prepare command (val_fraction: 0.1 -> 0.2)" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1 and _files(out) == before
    (root / "corpus" / "part0.jsonl").touch()  # an edited source file is another source
    edited = _prepare_cli(_big_args(root, out))
    assert edited.returncode == 2 and "source files:" in edited.stderr and "part0.jsonl" in edited.stderr


def test_hub_stream_path_equals_local_files(big, reference, tmp_path):
    """hub:NAME streams through `datasets` (IterableDataset, skip on resume); its packaged `json` builder
    is a dataset name that works offline, through the same code as a Hub repository."""
    root, _ = big
    files = ",".join(str(root / "corpus" / f"part{i}.jsonl") for i in range(2))
    args = _big_args(root, tmp_path / "hub")
    args[args.index("--source") + 1] = "hub:json"
    streamed = _prepare_cli([*args, "--data-files", files, "--split", "train"], LIGO_DS_CRASH_AT="prepare:5")
    assert streamed.returncode == -9
    resumed = _prepare_cli([*args, "--data-files", files, "--split", "train"])
    assert resumed.returncode == 0, resumed.stderr
    hub_files, local_files = _files(tmp_path / "hub"), reference[0]
    assert {k: v for k, v in hub_files.items() if k.endswith(".bin")} == {
        k: v for k, v in local_files.items() if k.endswith(".bin")
    }


def test_validation_hash_is_per_document_and_content_based():
    docs = [f"document number {i}" for i in range(20_000)]
    share = sum(is_validation(d, 0.05) for d in docs) / len(docs)
    assert abs(share - 0.05) < 0.005
    assert all(is_validation(d, 0.05) == is_validation(d, 0.05) for d in docs[:100])
    assert not is_validation(docs[0], 0.0) and is_validation(docs[0], 1.0)


# ---- sources ------------------------------------------------------------------------------------------


def test_gzip_json_array_and_parquet_sources(text_folder, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    prepare(PrepareOptions(source=str(text_folder), out=str(tmp_path / "a"), vocab_size=300, val_fraction=0.1))
    src = tmp_path / "src"
    src.mkdir()
    with gzip.open(src / "a.jsonl.gz", "wt") as f:
        for d in DOCS[:20]:
            f.write(json.dumps({"body": d}) + "\n")
    (src / "b.json").write_text(json.dumps([{"body": d} for d in DOCS[20:40]]))
    pq.write_table(pa.table({"body": DOCS[40:]}), src / "c.parquet", row_group_size=7)
    meta = prepare(
        PrepareOptions(
            source=str(src), out=str(tmp_path / "p"), tokenizer=str(tmp_path / "a"), text_field="body", val_fraction=0.1
        )
    )
    assert meta["options"]["tokenizer"] == "given"
    assert meta["tokenizer_fingerprint"] == TokenData(tmp_path / "a").meta["tokenizer_fingerprint"]
    assert _decode_docs(tmp_path / "p") != [] and sorted(_decode_docs(tmp_path / "p")) == sorted(DOCS)


def test_parquet_and_jsonl_resume_mid_file(tmp_path):
    """Reading from a cursor inside a file gives exactly the rest of it (the resume path)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ligo_ds.data import encoding, sources

    docs = [f"row {i} " * (i % 13 + 1) for i in range(3000)]
    pq.write_table(pa.table({"text": docs}), tmp_path / "x.parquet", row_group_size=700)
    with open(tmp_path / "y.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    old = sources.CHUNK_BYTES
    sources.CHUNK_BYTES = 4096
    try:
        for name in ("x.parquet", "y.jsonl"):
            parts = pieces(str(tmp_path / name), None)
            chunks = list(sources.chunks(parts, (0, 0), "text"))
            assert [d for c in chunks for d in encoding.texts(c.payload)] == docs
            for cut in (1, len(chunks) // 2):
                rest = sources.chunks(parts, chunks[cut - 1].cursor, "text")
                assert [d for c in rest for d in encoding.texts(c.payload)] == [
                    d for c in chunks[cut:] for d in encoding.texts(c.payload)
                ]
    finally:
        sources.CHUNK_BYTES = old


def test_tokenizer_sample_is_bounded_and_spread(tmp_path):
    for i in range(10):
        (tmp_path / f"{i}.txt").write_text(f"file {i} " * 100)  # 700-800 bytes each
    parts = pieces(str(tmp_path), None)
    sample = list(sample_texts(parts, None, "text", 2000))
    assert 2000 <= sum(len(s) for s in sample) < 3000
    taken = [int(s.split()[1]) for s in sample]
    assert taken == sorted(taken) and taken[-1] - taken[0] >= 6, f"spread over the corpus, not its head: {taken}"
    assert len(list(sample_texts(parts, None, "text", 10**9))) == 10, "a budget above the corpus takes it all"
    meta = prepare(
        PrepareOptions(
            source=str(tmp_path), out=str(tmp_path / "d"), vocab_size=300, tokenizer_sample_bytes=1500, val_fraction=0.5
        )
    )
    assert meta["options"]["tokenizer_sample_bytes"] == 1500


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
        (lambda p: (p / "empty").mkdir() or p / "empty", r"holds no .txt/.jsonl/.json/.jsonl.gz/.json.gz/.parquet"),
        (lambda p: (p / "e.txt").write_text("") and None or p / "e.txt", "is empty"),
        (
            lambda p: (p / "x.bin").write_bytes(b"\x00\x01\x02") and None or p / "x.bin",
            "x.bin': unsupported file type; expected plain UTF-8 text",
        ),
        (
            lambda p: (p / "l.txt").write_bytes(b"ok \xff\xfe bad") and None or p / "l.txt",
            r"l.txt' is not UTF-8 text \(invalid byte at offset 3\)",
        ),
        (
            lambda p: (
                (p / "l.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "bad \xff"}\n') and None or p / "l.jsonl"
            ),
            r"l.jsonl' is not UTF-8 text \(invalid byte at offset 31\)",
        ),
        (
            lambda p: (p / "k.jsonl").write_text('{"text": "a"}\n{"body": "b"}\n') and None or p / "k.jsonl",
            r"k.jsonl' at byte 14: no text field 'text' \(found \['body'\]",
        ),
        (lambda p: (p / "j.jsonl").write_text("{not json}\n") and None or p / "j.jsonl", "at byte 0: not a JSON line"),
        (lambda p: (p / "one.txt").write_text("a single document") and None or p / "one.txt", "at least 2 are needed"),
    ],
)
def test_bad_corpus(tmp_path, make, message):
    source = make(tmp_path)
    with pytest.raises(ConfigError, match=message):
        prepare(PrepareOptions(source=str(source), out=str(tmp_path / "out"), vocab_size=300, num_proc=1))
    assert not (tmp_path / "out").exists()


def test_existing_out_is_refused_and_kept(text_folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    for force in (False, True):  # --force replaces a DATA_DIR, never a folder of the user's files
        with pytest.raises(ConfigError, match="exists, is not empty and is not a DATA_DIR"):
            prepare(PrepareOptions(source=str(text_folder), out=str(out), vocab_size=300, force=force))
        assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
        assert (out / "precious.txt").read_text() == "keep me"
        assert not staging_dir(out).exists()


def test_hub_source_offline_fails_clearly(tmp_path):
    args = ["prepare", "--source", "hub:someone/absent-dataset", "--subset", "en", "--out", str(tmp_path / "h")]
    result = _prepare_cli(args, HF_DATASETS_OFFLINE="1")
    assert result.returncode == 2
    assert "cannot load hub dataset 'someone/absent-dataset' (subset 'en', split 'train')" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "h").exists()


def test_meta_lists_each_shards_largest_id(text_folder, tmp_path):
    meta = prepare(PrepareOptions(source=str(text_folder), out=str(tmp_path / "d"), vocab_size=300, shard_bytes=256))
    shards = [s for split in ("train", "val") for s in meta["splits"][split]["shards"]]
    assert len(shards) > 2
    for shard in shards:
        ids = np.fromfile(tmp_path / "d" / shard["file"], dtype=np.uint16)
        assert shard["max_id"] == int(ids.max()) < 300


def test_trained_tokenizer_is_a_whole_autotokenizer(text_folder, tmp_path):
    from transformers import AutoTokenizer

    meta = prepare(PrepareOptions(source=str(text_folder), out=str(tmp_path / "d"), vocab_size=300, val_fraction=0.1))
    tok = AutoTokenizer.from_pretrained(tmp_path / "d")
    assert (tok.eos_token, tok.bos_token, tok.pad_token) == ("<|endoftext|>",) * 3
    assert tok.eos_token_id == TokenData(tmp_path / "d").eos_id == meta["eos_id"]
    assert meta["eos_token"] == "<|endoftext|>" and meta["tokenizer_fingerprint"] == tokenizer.fingerprint(tok)
    assert np.dtype(TokenData(tmp_path / "d").meta["dtype"]) == np.uint16


@pytest.mark.parametrize(
    "style, eos",
    [("llama2", "</s>"), ("llama3", "<|end_of_text|>"), ("qwen3", "<|endoftext|>"), ("gemma3", "<eos>")],
)
def test_models_own_tokenizer_separates_documents_with_its_eos(style, eos, text_folder, tmp_path, capsys):
    """Llama 2 / Mistral name </s> in tokenizer_config.json; a Llama 3 base names <|end_of_text|> only
    through generation_config.json's eos ids. Their post-processors put a BOS before each document, as Gemma
    3's does (<bos>, documents ending <eos>). Qwen3 names <|im_end|>, a chat turn's end: its documents end
    with <|endoftext|>, and prepare says so."""
    model_dir = make_tokenizer(tmp_path / "model", style)
    meta = prepare(
        PrepareOptions(source=str(text_folder), out=str(tmp_path / "d"), tokenizer=str(model_dir), val_fraction=0.1)
    )
    tok = tokenizer.load(model_dir)
    assert meta["eos_token"] == eos and meta["eos_id"] == tok.convert_tokens_to_ids(eos)
    assert meta["tokenizer_fingerprint"] == tokenizer.fingerprint(tok)
    ids = TokenData(tmp_path / "d").tokens("train").tolist()
    assert ids.count(meta["eos_id"]) == meta["documents"]["train"]
    if style == "qwen3":
        assert tok.bos_token is None and tok.convert_tokens_to_ids("<|im_end|>") not in ids
        assert "documents end with '<|endoftext|>', not the tokenizer's eos '<|im_end|>'" in capsys.readouterr().err
    else:
        bos = tok.convert_tokens_to_ids(tok.bos_token or "<|begin_of_text|>")
        assert ids[0] == bos and ids.count(bos) == meta["documents"]["train"]
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


def test_size_flags_accept_suffixes():
    from ligo_ds.options.argv import integer

    assert [integer(v) for v in ("4096", "1e11", "512M", "100B", "2.5T", "1_000", "1.1K", "2.3T")] == [
        4096,
        10**11,
        512 * 10**6,
        10**11,
        25 * 10**11,
        1000,
        1100,  # not 1100.0000000000002, as 1.1 * 1000 is in floats
        23 * 10**11,
    ]
    for bad in ("1.5", "abc", "2.5K5", "nan", "inf", "1e"):
        with pytest.raises(ValueError):
            integer(bad)


# ---- corpora of few or long documents: the split is drawn on pieces ------------------------------------


def _book(words: int = 60_000, seed: int = 0) -> str:
    """A long text of paragraphs of lines, about 6 characters a word (a few hundred KB)."""
    import random

    rng = random.Random(seed)
    vocab = ["the", "of", "ship", "sea", "whale", "and", "a", "to", "in", "captain", "water", "he", "said", "was"]
    lines, line = [], []
    for _ in range(words):
        line.append(rng.choice(vocab) + ("." if rng.random() < 0.08 else ""))
        if len(line) >= rng.randint(8, 14):
            lines.append(" ".join(line))
            line = []
        if lines and rng.random() < 0.01:
            lines.append("")
    return "\n".join(lines) + f"\nTHE END {words}\n"


def test_pieces_cut_at_breaks_and_rejoin_into_the_document():
    doc = _book(5_000)
    parts = encoding.pieces(doc)
    assert "".join(parts) == doc and len(parts) > 10
    assert all(len(p) <= encoding.PIECE_CHARS for p in parts)
    assert all(p.endswith("\n") for p in parts[:-1]), "cut after a line break"
    assert encoding.pieces("short") == ["short"]
    assert encoding.pieces("x" * 5000) == ["x" * 2048, "x" * 2048, "x" * 904]  # no break at all: cut anyway
    # consecutive pieces in one split stay one document; a stretch is cut only where the split changes
    runs = encoding.runs(parts, encoding.threshold(0.2))
    assert "".join(text for text, _, _ in runs) == doc
    assert all(a[1] != b[1] for a, b in zip(runs, runs[1:]))


@pytest.mark.parametrize(
    "corpus",
    ["one_book", "seventeen_files", "thirty_json_lines"],
)
def test_small_corpora_prepare_at_the_defaults(tmp_path, corpus, capsys):
    """One file of a few hundred KB, 17 files of a few KB, 30 short JSON lines: each prepares with only
    --source and --out, the val share near the default 2 % where there are pieces enough, at least one piece
    held out where the fraction gave none; the same bytes on 1 and 2 workers."""
    src = tmp_path / "src"
    src.mkdir()
    if corpus == "one_book":
        (src / "book.txt").write_text(_book())
        source = src / "book.txt"
    elif corpus == "seventeen_files":
        for i in range(17):  # named as /usr/share/common-licenses names them: no ending, read as plain text
            (src / f"GPL-{i}.0").write_text(_book(400 + 150 * i, seed=i))
        (src / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")  # not text: left out
        (src / ".git").mkdir()
        (src / ".git" / "HEAD").write_text("ref: refs/heads/main\n")  # hidden: left out
        source = src
    else:  # records none of which falls to validation at 2 %, as happens to most corpora of 30
        texts = (f"record {i}: " + _book(20, seed=i) for i in range(1000))
        kept = [t for t in texts if not is_validation(t, 0.02)][:30]
        lines = [json.dumps({"text": t}) for t in kept]
        (src / "records.jsonl").write_text("\n".join(lines) + "\n")
        source = src / "records.jsonl"
    one = prepare(PrepareOptions(source=str(source), out=str(tmp_path / "one"), num_proc=1))
    capsys.readouterr()
    prepare(PrepareOptions(source=str(source), out=str(tmp_path / "two"), num_proc=2))
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    assert one["documents"]["val"] >= 1 and one["documents"]["train"] >= 1
    share = one["val_tokens"] / (one["val_tokens"] + one["train_tokens"])
    assert one["split"]["unit"] == "pieces" and one["split"]["pieces"] >= 17
    if corpus == "seventeen_files":
        assert not any("refs/heads" in d or "PNG" in d for d in _decode_docs(tmp_path / "one"))
    if corpus == "one_book":
        assert one["split"]["pieces"] > 150 and one["split"]["by"] == "val_fraction"
        assert 0.005 < share < 0.06, share  # about 2 % of the text, drawn on about 200 pieces
    if corpus == "thirty_json_lines":  # 30 pieces at 2 %: none fell, so the one of the smallest hash is held out
        assert one["split"]["by"] == "smallest hash" and one["documents"]["val"] == 1
    train = TokenData(tmp_path / "one")
    assert len(train.validation()) == one["val_tokens"]


def test_a_kill_in_the_smallest_hash_pass_resumes_to_the_same_bytes(tmp_path):
    texts = (f"record {i}: " + _book(20, seed=i) for i in range(1000))
    kept = [t for t in texts if not is_validation(t, 0.02)][:30]
    source = tmp_path / "records.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in kept))
    reference = _prepare_cli(["prepare", "--source", str(source), "--out", str(tmp_path / "ref")])
    assert reference.returncode == 0 and "holding out the one of the smallest hash" in reference.stderr
    args = ["prepare", "--source", str(source), "--out", str(tmp_path / "killed")]
    killed = _prepare_cli(args, LIGO_DS_CRASH_AT="prepare:2")  # the second pass's first chunk
    assert killed.returncode == -9, killed.stderr
    progress = json.loads((staging_dir(tmp_path / "killed") / "progress.json").read_text())
    assert progress["val_threshold"] != encoding.threshold(0.02), "killed in the second pass"
    again = _prepare_cli(args)
    assert again.returncode == 0, again.stderr
    assert _files(tmp_path / "killed") == _files(tmp_path / "ref")
