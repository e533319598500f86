"""`ligo-ds prepare`: corpus -> DATA_DIR/{train.bin, val.bin, meta.json} and the tokenizer's files.

Documents are tokenized (with the tokenizer's own special tokens, a Llama BOS for instance), each
followed by the tokenizer's end-of-sequence token, and concatenated. Validation takes
whole documents in the order of a hash of their index until it holds `val_fraction` of the tokens, so
the split is deterministic and spread over the whole corpus (the tail of a sorted corpus would be one
corner of it). Same input and options give byte-identical output: no timestamps, no absolute paths,
sorted file order. data.py reads what this writes.

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
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import tokenizer
from .data import FORMAT_VERSION
from .errors import ConfigError

if TYPE_CHECKING:
    from .options import PrepareOptions

# extension -> datasets builder. .txt files are one document each (sample_by="document").
LOADERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


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
        raise ConfigError(
            f"{str(path)!r} is not UTF-8 text (invalid byte at offset {e.start}); "
            "convert it or leave it out of the corpus"
        ) from None


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
                raise ConfigError(
                    f"{str(p)!r}: unsupported file type {p.suffix!r}; expected one of {', '.join(LOADERS)}"
                )
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
            raise ConfigError(
                f"cannot load hub dataset {name!r} (config {config or None!r}): {e}. Offline "
                "machines need local files or --source stdlib"
            ) from None
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
        raise ConfigError(
            f"{where}: no text field {text_field!r}; columns are {ds.column_names} (choose one with --text-field)"
        )
    return (
        ds.select_columns([text_field]).rename_column(text_field, "text")
        if text_field != "text"
        else ds.select_columns(["text"])
    )


# ---- tokenizer -------------------------------------------------------------------------------------


def train_tokenizer(texts, vocab_size: int):
    """A byte-level BPE with one special token, end-of-text, trained on `texts` (a `tokenizers.Tokenizer`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[tokenizer.TRAINED_SPECIAL],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


# ---- prepare ---------------------------------------------------------------------------------------


def _doc_hash(index: int) -> bytes:
    return hashlib.blake2b(index.to_bytes(8, "little"), digest_size=8).digest()


def choose_validation(lengths: list[int], val_fraction: float) -> list[bool]:
    """Per document, whether it is held out: hash order, until `val_fraction` of all tokens is reached.

    At least one document goes each way; a corpus of one document cannot be split.
    """
    if len(lengths) < 2:
        raise ConfigError(
            f"the corpus has {len(lengths)} document(s); at least 2 are needed to hold out a validation split"
        )
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
            tok = tokenizer.load(opts.tokenizer)
        else:
            tok = tokenizer.trained(train_tokenizer(ds["text"], opts.vocab_size))
        eos_token, eos = tokenizer.separator(tok, opts.tokenizer, opts.eos_token)
        tokenizer.save(tok, eos_token, tmp)
        backend = tok.backend_tokenizer
        vocab = backend.get_vocab_size()
        dtype = token_dtype(vocab)

        def encode(batch):
            # The tokenizer's own post-processor adds what its model expects at a document's start (a BOS)
            return {"ids": [e.ids + [eos] for e in backend.encode_batch(batch["text"])]}

        # Forked workers must not inherit the Rust thread pool the training above started.
        os.environ["TOKENIZERS_PARALLELISM"] = "false" if opts.num_proc > 1 else "true"
        ds = ds.map(
            encode,
            batched=True,
            remove_columns=["text"],
            num_proc=opts.num_proc if len(ds) >= opts.num_proc else None,
            desc="tokenizing",
        )
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
            "eos_token": eos_token,
            "tokenizer_fingerprint": tokenizer.fingerprint(tok),
            "train_tokens": counts["train"],
            "val_tokens": counts["val"],
            "documents": docs,
            "tokenizer": "tokenizer.json",
            "options": {
                "text_field": opts.text_field,
                "tokenizer": "given" if opts.tokenizer else "trained",
                "eos_token": opts.eos_token,
                "val_fraction": opts.val_fraction,
                "vocab_size": opts.vocab_size,
            },
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(tmp / "hf_cache", ignore_errors=True)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return meta
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
