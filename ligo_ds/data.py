"""Corpus -> tokenized, packed, memory-mapped token files; and the reader training uses.

`prepare` writes DATA_DIR/{train.bin, val.bin, meta.json, tokenizer.json}. Documents are tokenized,
each followed by the end-of-text token, and concatenated. Validation takes whole documents in the
order of a hash of their index until it holds `val_fraction` of the tokens, so the split is
deterministic and spread over the whole corpus (the tail of a sorted corpus would be one corner of it). Same input and options give byte-identical
output: no timestamps, no absolute paths, sorted file order.

Sources: `stdlib` (the Python standard library's .py files, tests and site-packages excluded), local
paths (.txt, .jsonl/.json with a text field, .parquet, or folders of them), or `hub:NAME[:CONFIG]`.
Loading and tokenizing go through `datasets`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sysconfig
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError

EOS_TOKEN = "<|endoftext|>"
FORMAT_VERSION = 1
# extension -> datasets builder. .txt files are one document each (sample_by="document").
LOADERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class PrepareOptions:
    source: str = "stdlib"
    out: str = "data/stdlib"
    tokenizer: str | None = None  # a directory holding tokenizer.json; None trains a byte-level BPE
    vocab_size: int = 8192
    val_fraction: float = 0.02
    text_field: str = "text"
    num_proc: int = 2
    force: bool = False  # replace an existing, different DATA_DIR

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction {self.val_fraction} must lie strictly between 0 and 1")
        if self.vocab_size < 257:
            raise ConfigError(f"--vocab-size {self.vocab_size} must be at least 257 (256 bytes + end-of-text)")
        if self.num_proc < 1:
            raise ConfigError(f"--num-proc {self.num_proc} must be at least 1")


# ---- sources ---------------------------------------------------------------------------------------

def stdlib_files() -> list[Path]:
    """The standard library's own .py files in sorted order, without tests and installed packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if _EXCLUDED_DIRS.intersection(rel.parts[:-1]) or rel.name.startswith("test_"):
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{str(path)!r} is not UTF-8 text (invalid byte at offset {e.start}); "
                          "convert it or leave it out of the corpus") from None


def local_files(paths: list[str]) -> list[Path]:
    """Expand files and folders into the supported files they hold, sorted within each folder."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in LOADERS)
            if not found:
                raise ConfigError(f"folder {str(p)!r} holds no {'/'.join(LOADERS)} files")
            out.extend(found)
        elif p.is_file():
            if p.suffix not in LOADERS:
                raise ConfigError(f"{str(p)!r}: unsupported file type {p.suffix!r}; expected one of "
                                  f"{', '.join(LOADERS)}")
            out.append(p)
        else:
            raise ConfigError(f"corpus path {str(p)!r} does not exist")
    return out


def load_corpus(source: str, text_field: str, cache_dir: str):
    """The corpus as a `datasets.Dataset` with one document per row in column "text"."""
    import datasets

    if source == "stdlib":
        files = stdlib_files()
        if not files:
            raise ConfigError(f"no .py files found under the standard library {sysconfig.get_paths()['stdlib']!r}")
        return datasets.Dataset.from_dict({"text": [_read_utf8(f) for f in files]})
    if source.startswith("hub:"):
        name, _, config = source[4:].partition(":")
        try:
            ds = datasets.load_dataset(name, config or None, split="train", cache_dir=cache_dir)
        except Exception as e:
            raise ConfigError(f"cannot load hub dataset {name!r} (config {config or None!r}): {e}. Offline "
                              "machines need local files or --source stdlib") from None
        return _text_column(ds, text_field, source)
    files = local_files(source.split(","))
    parts = []
    for ext in sorted({f.suffix for f in files}):
        group = [str(f) for f in files if f.suffix == ext]
        builder = LOADERS[ext]
        if builder == "text":
            for f in group:
                _read_utf8(Path(f))  # names the file; datasets' own error does not
        kwargs = {"sample_by": "document"} if builder == "text" else {}
        try:
            ds = datasets.load_dataset(builder, data_files=group, split="train", cache_dir=cache_dir, **kwargs)
        except datasets.exceptions.DatasetGenerationError as e:
            if isinstance(e.__cause__, OSError):  # a full disk or a read-only cache: report it as such
                raise e.__cause__ from None
            raise ConfigError(f"cannot read {', '.join(group)}: {e.__cause__ or e}") from None
        parts.append(_text_column(ds, text_field, ", ".join(group)))
    return datasets.concatenate_datasets(parts)


def _text_column(ds, text_field: str, where: str):
    if text_field not in ds.column_names:
        raise ConfigError(f"{where}: no text field {text_field!r}; columns are {ds.column_names} "
                          "(choose one with --text-field)")
    return ds.select_columns([text_field]).rename_column(text_field, "text") if text_field != "text" \
        else ds.select_columns(["text"])


# ---- tokenizer -------------------------------------------------------------------------------------

def train_tokenizer(texts, vocab_size: int):
    """A byte-level BPE with one special token, end-of-text, trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def load_tokenizer(directory: str | Path):
    from tokenizers import Tokenizer

    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise ConfigError(f"--tokenizer {str(directory)!r} holds no tokenizer.json")
    tok = Tokenizer.from_file(str(path))
    if tok.token_to_id(EOS_TOKEN) is None:
        raise ConfigError(f"tokenizer {str(path)!r} has no {EOS_TOKEN!r} token to separate documents")
    return tok


# ---- prepare ---------------------------------------------------------------------------------------

def _doc_hash(index: int) -> bytes:
    return hashlib.blake2b(index.to_bytes(8, "little"), digest_size=8).digest()


def choose_validation(lengths: list[int], val_fraction: float) -> list[bool]:
    """Per document, whether it is held out: hash order, until `val_fraction` of all tokens is reached.

    At least one document goes each way; a corpus of one document cannot be split.
    """
    if len(lengths) < 2:
        raise ConfigError(f"the corpus has {len(lengths)} document(s); at least 2 are needed to hold out "
                          "a validation split")
    target = val_fraction * sum(lengths)
    held = [False] * len(lengths)
    taken = 0
    for i in sorted(range(len(lengths)), key=_doc_hash):
        if taken >= target or sum(held) == len(lengths) - 1:
            break
        held[i] = True
        taken += lengths[i]
    return held


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def prepare(opts: PrepareOptions) -> dict:
    """Build DATA_DIR; returns its meta.json contents."""
    from tqdm import tqdm

    out = Path(opts.out)
    if out.exists() and any(out.iterdir()) and not opts.force:
        raise ConfigError(f"--out {str(out)!r} exists and is not empty; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        ds = load_corpus(opts.source, opts.text_field, str(tmp / "hf_cache"))
        ds = ds.filter(lambda row: bool(row["text"]), num_proc=None)
        if len(ds) == 0:
            raise ConfigError(f"corpus {opts.source!r} is empty (no non-empty documents)")
        if opts.tokenizer:
            tok = load_tokenizer(opts.tokenizer)
        else:
            tok = train_tokenizer(ds["text"], opts.vocab_size)
        tok.save(str(tmp / "tokenizer.json"))
        eos, vocab = tok.token_to_id(EOS_TOKEN), tok.get_vocab_size()
        dtype = token_dtype(vocab)

        def encode(batch):
            return {"ids": [e.ids + [eos] for e in tok.encode_batch(batch["text"])]}

        # Forked workers must not inherit the Rust thread pool the training above started.
        os.environ["TOKENIZERS_PARALLELISM"] = "false" if opts.num_proc > 1 else "true"
        ds = ds.map(encode, batched=True, remove_columns=["text"],
                    num_proc=opts.num_proc if len(ds) >= opts.num_proc else None, desc="tokenizing")
        ds = ds.map(lambda b: {"n": [len(x) for x in b["ids"]]}, batched=True, desc="counting")
        held = choose_validation(ds["n"], opts.val_fraction)
        counts = {"train": 0, "val": 0}
        docs = {"train": 0, "val": 0}
        with open(tmp / "train.bin", "wb") as ftrain, open(tmp / "val.bin", "wb") as fval:
            i = 0
            for batch in tqdm(ds.iter(batch_size=256), total=-(-len(ds) // 256), desc="writing", unit="batch"):
                for ids in batch["ids"]:
                    split = "val" if held[i] else "train"
                    (fval if held[i] else ftrain).write(np.asarray(ids, dtype=dtype).tobytes())
                    counts[split] += len(ids)
                    docs[split] += 1
                    i += 1
        meta = {
            "format": FORMAT_VERSION,
            "source": opts.source,
            "dtype": dtype.name,
            "vocab_size": vocab,
            "eos_id": eos,
            "train_tokens": counts["train"],
            "val_tokens": counts["val"],
            "documents": docs,
            "tokenizer": "tokenizer.json",
            "options": {k: v for k, v in asdict(opts).items() if k in ("vocab_size", "val_fraction", "text_field")}
                       | {"tokenizer": "given" if opts.tokenizer else "trained"},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(tmp / "hf_cache", ignore_errors=True)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return meta
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- reading ---------------------------------------------------------------------------------------

class TokenData:
    """A prepared DATA_DIR: meta plus memory-mapped train/val token arrays."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            raise ConfigError(f"data dir {str(self.dir)!r} has no meta.json; create it with `ligo-ds prepare`")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT_VERSION:
            raise ConfigError(f"data dir {str(self.dir)!r} has format {self.meta.get('format')!r}, "
                              f"this ligo_ds reads format {FORMAT_VERSION}")
        self.vocab_size: int = self.meta["vocab_size"]
        self.eos_id: int = self.meta["eos_id"]

    def tokens(self, split: str) -> np.memmap:
        path = self.dir / f"{split}.bin"
        expected = self.meta[f"{split}_tokens"]
        dtype = np.dtype(self.meta["dtype"])
        if not path.is_file() or path.stat().st_size != expected * dtype.itemsize:
            size = path.stat().st_size if path.is_file() else "missing"
            raise ConfigError(f"{str(path)!r}: size {size} does not match meta.json's {expected} tokens "
                              f"of {dtype.name}; the data dir is incomplete or corrupt")
        return np.memmap(path, dtype=dtype, mode="r")

    def check_model(self, vocab_size: int) -> None:
        """Refuse a model whose vocabulary cannot embed every token id in the data."""
        if self.vocab_size > vocab_size:
            raise ConfigError(f"data dir {str(self.dir)!r} has a vocabulary of {self.vocab_size} tokens, larger "
                              f"than the model's vocab_size {vocab_size}")


class SampleOrder:
    """Which training window each global sample index reads.

    Windows are the non-overlapping (seq_len + 1)-token slices starting every seq_len tokens; each
    epoch visits all of them in a permutation seeded by (seed, epoch). A run's position in the data is
    then one integer, the number of samples consumed, which survives restarts and world-size changes.
    """

    def __init__(self, num_tokens: int, seq_len: int, seed: int):
        self.seq_len = seq_len
        self.seed = seed
        self.num_windows = (num_tokens - 1) // seq_len
        if self.num_windows < 1:
            raise ConfigError(f"{num_tokens} training tokens are fewer than one window of --seq-len {seq_len} + 1")
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)
        return self._perm

    def starts(self, first: int, count: int) -> np.ndarray:
        """Token offsets of samples first .. first + count - 1."""
        out = np.empty(count, dtype=np.int64)
        for j, g in enumerate(range(first, first + count)):
            epoch, i = divmod(g, self.num_windows)
            out[j] = self._permutation(epoch)[i] * self.seq_len
        return out


def window_batch(tokens: np.ndarray, starts: np.ndarray, seq_len: int):
    """(inputs, targets) int64 tensors of shape (len(starts), seq_len) from a token array."""
    import torch

    rows = np.stack([np.asarray(tokens[s: s + seq_len + 1], dtype=np.int64) for s in starts])
    chunk = torch.from_numpy(rows)
    return chunk[:, :-1], chunk[:, 1:]
