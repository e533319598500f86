"""`ligo-ds prepare`: a corpus of any size -> DATA_DIR, streamed, on every core, sharded and resumable.

Documents flow from the source (sources.py) in chunks of a few MB to worker processes, which decode,
tokenize (with the tokenizer's own special tokens, a Llama BOS for instance) and end each document with
the tokenizer's end-of-sequence token. The main process only reads bytes and writes results in source
order into shards of about `--shard-bytes` per split (data.py reads them as one stream). Memory holds
a bounded number of chunks in flight, never the corpus, its ids or an object per document of it.

Validation is drawn on pieces of documents (encoding.py: a document cut near every 2,048 characters), a
piece held out when a hash of its text falls below `--val-fraction`: O(1) per piece, independent of the
number of workers, and copies of one piece land in the same split. Where none falls below it, a second pass
holds out the piece of the smallest hash (passes.py runs each pass).

The work happens in a staging directory beside DATA_DIR (`.NAME.prepare`), renamed to DATA_DIR when
complete, so an existing DATA_DIR (--force) is replaced only by a finished one. Resuming:
prepare_job.json names the command (options, and the source files' sizes and times); progress.json,
rewritten whenever a shard closes (and every `COMMIT_SECONDS`), holds the source cursor after the last
chunk written and each split's finished shards and open-shard length. A rerun of the same command
truncates the open shards to those lengths and reads on from the cursor: its output is byte-identical
to an uninterrupted run's. Same input and options give byte-identical output: no timestamps, no
absolute paths other than the source the user named.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..folders import LOCK_FILE
from ..model import tokenizer
from ..options import Command, at_least, between, option
from . import encoding, sources
from .passes import PROGRESS_FILE, Pass
from .prepare_job import claim, job_of
from .reading import FORMAT_VERSION, staging_dir
from .shards import ShardWriter, token_dtype, write_json_synced
from .tokenize import sample_texts, train_tokenizer

META_FILE = "meta.json"


@dataclass(frozen=True, kw_only=True)
class PrepareOptions(Command):
    """A prepare job. Its identity (prepare_job.json) is every option but where it writes, how many workers
    it uses and --force: a rerun that differs only in those resumes."""

    source: str = option(
        "stdlib", "stdlib | PATH[,PATH...] (files or folders) | hub:NAME (streamed from the Hub)", metavar="SRC"
    )
    out: str = option(
        help="output directory; rerunning the same command resumes it", metavar="DATA_DIR", identity=False
    )
    split: str = option("train", "the Hub dataset's split")
    # Not --config: every command's --config FILE reads its options from a file.
    subset: str | None = option(
        None, "the Hub dataset's subset (what `datasets` calls its config name)", metavar="NAME"
    )
    data_files: str | None = option(
        None, "the Hub dataset's files to read, comma-separated globs (e.g. 'sample/10BT/*.parquet')", metavar="GLOBS"
    )
    tokenizer: str | None = option(
        None,
        "a model's or tokenizer's directory (what AutoTokenizer reads) instead of training one",
        metavar="DIR",
        hub="tokenizer",
    )
    eos_token: str | None = option(
        None, "the token that ends each document (default: the tokenizer's own eos)", metavar="TOKEN"
    )
    vocab_size: int = option(
        8192, "BPE vocabulary when training one (256 bytes + end-of-text at least)", check=at_least(257)
    )
    tokenizer_sample_bytes: int = option(
        500_000_000, "text to train the BPE on, spread over the corpus (e.g. 500M, 2G)", check=at_least(1)
    )
    val_fraction: float = option(
        0.02,
        "share of the text held out, drawn on pieces of documents by a hash of their text (at least one piece)",
        check=between(0.0, 1.0),
    )
    text_field: str = option("text", "column holding the text in json/parquet/hub data")
    num_proc: int | None = option(
        None, "tokenizing processes", shown_default="every core", check=at_least(1), identity=False
    )
    shard_bytes: int = option(1_000_000_000, "size of each token file (e.g. 1G)", check=at_least(1))
    force: bool = option(
        False,
        "start over: discard unfinished work and replace an existing DATA_DIR once the new one is complete",
        identity=False,
    )

    def hub(self) -> sources.HubSpec | None:
        """The Hub dataset split to stream, when the source is hub:NAME."""
        if not self.source.startswith("hub:"):
            if self.subset or self.data_files or self.split != "train":
                hubbed = ", ".join(self.flag(n) for n in ("subset", "data_files", "split"))
                raise ConfigError(
                    f"{hubbed} choose within a Hub dataset; {self.flag('source')} {self.source!r} is not hub:NAME"
                )
            return None
        name, _, legacy_subset = self.source[4:].partition(":")
        if legacy_subset and self.subset and legacy_subset != self.subset:
            raise ConfigError(
                f"{self.flag('source')} {self.source!r} names subset {legacy_subset!r} and {self.flag('subset')} "
                f"{self.subset!r}: give one"
            )
        files = tuple(f for f in (self.data_files or "").split(",") if f)
        return sources.HubSpec(name, self.subset or legacy_subset or None, self.split, files)


def _tokenizer(opts: PrepareOptions, out: Path, parts, hub, resuming: bool):
    """The tokenizer the shards are made with: given, already trained by the run being resumed, or
    trained now on a sample of the corpus."""
    if opts.tokenizer:
        return tokenizer.load(opts.tokenizer, opts.flag("tokenizer"))
    if resuming and (out / "tokenizer.json").is_file():
        return tokenizer.load(out, opts.flag("out"))
    print(
        f"prepare: training a {opts.vocab_size}-token BPE on up to {opts.tokenizer_sample_bytes:,} bytes",
        file=sys.stderr,
    )
    return tokenizer.trained(
        train_tokenizer(sample_texts(parts, hub, opts.text_field, opts.tokenizer_sample_bytes), opts.vocab_size)
    )


def prepare(opts: PrepareOptions) -> dict:
    """Build (or finish) DATA_DIR; returns its meta.json contents."""
    out = Path(opts.out)
    hub = opts.hub()
    parts = sources.pieces(opts.source, hub)
    if hub is not None:
        sources.open_hub(hub)  # fails early and clearly when the dataset is missing (offline)
    job = job_of(opts, parts)
    staging = staging_dir(out)
    state = claim(out, staging, job, opts)
    if state == "complete":
        print(f"prepare: {out} is already complete", file=sys.stderr)
        return json.loads((out / META_FILE).read_text())
    try:
        meta = _run(opts, staging, parts, hub, resuming=state == "resume")
    except ConfigError:
        if state == "fresh":  # the input is wrong: leave nothing half-made where nothing was
            shutil.rmtree(staging, ignore_errors=True)
        raise
    # Only now is an existing --out replaced (--force): a failed or killed run never costs the old data.
    if out.exists():
        old = out.with_name(f".{out.name}.replaced")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old)
    else:
        staging.rename(out)
    # The lock stays held (on the moved file) until this process ends; the DATA_DIR keeps no trace of it, so
    # the same command makes the same files.
    (out / LOCK_FILE).unlink(missing_ok=True)
    return meta


def _run(opts: PrepareOptions, out: Path, parts, hub, resuming: bool) -> dict:
    progress_path = out / PROGRESS_FILE
    saved = json.loads(progress_path.read_text()) if resuming and progress_path.is_file() else None
    tok = _tokenizer(opts, out, parts, hub, resuming=saved is not None)
    eos_token, eos = tokenizer.separator(tok, opts.tokenizer, opts.eos_token, opts.flag("eos_token"))
    backend = tok.backend_tokenizer
    vocab = backend.get_vocab_size()
    dtype = token_dtype(vocab)
    if saved is None:
        tokenizer.save(tok, eos_token, out)
        for stale in out.glob("*.bin"):
            stale.unlink()
    shard_tokens = max(1, opts.shard_bytes // dtype.itemsize)
    num_proc = opts.num_proc or len(os.sched_getaffinity(0))
    initargs = (backend.to_str(), eos, dtype.name)
    val_threshold = (saved or {}).get("val_threshold", encoding.threshold(opts.val_fraction))
    one_pass = Pass(out, parts, hub, opts.text_field, initargs, shard_tokens, dtype, num_proc)
    writers, counts = one_pass.run(saved, val_threshold)
    if writers["val"].documents == 0 and counts["pieces"] >= 2 and writers["train"].documents:
        # No piece fell to validation at the fraction (a small corpus): again, holding out the piece(s) of the
        # smallest hash, which depends on the corpus alone, as the split always does.
        print(
            f"prepare: no piece of the corpus's {counts['pieces']} fell to validation at "
            f"{opts.flag('val_fraction')} {opts.val_fraction}; holding out the one of the smallest hash",
            file=sys.stderr,
        )
        val_threshold = counts["lowest"] + 1
        for stale in out.glob("*.bin"):
            stale.unlink()
        progress_path.unlink(missing_ok=True)
        writers, counts = one_pass.run(None, val_threshold)
    _check_split(writers, opts, counts["pieces"])
    splits = {split: w.finish() for split, w in writers.items()}
    split_rule = {
        "unit": "pieces",
        "piece_chars": encoding.PIECE_CHARS,
        "val_threshold": val_threshold,
        "by": "val_fraction" if val_threshold == encoding.threshold(opts.val_fraction) else "smallest hash",
        "pieces": counts["pieces"],
    }
    meta = _meta(opts, tok, (eos_token, eos), dtype, splits, split_rule)
    write_json_synced(out / META_FILE, meta)
    progress_path.unlink()
    return meta


def _meta(opts: PrepareOptions, tok, eos: tuple[str, int], dtype: np.dtype, splits: dict, split_rule: dict) -> dict:
    """meta.json: what data.reading needs to read the DATA_DIR, and what made it."""
    eos_token, eos_id = eos
    return {
        "format": FORMAT_VERSION,
        "source": opts.source,
        "dtype": dtype.name,
        "vocab_size": tok.backend_tokenizer.get_vocab_size(),
        "eos_id": eos_id,
        "eos_token": eos_token,
        "tokenizer_fingerprint": tokenizer.fingerprint(tok),
        "train_tokens": splits["train"]["tokens"],
        "val_tokens": splits["val"]["tokens"],
        "documents": {split: s["documents"] for split, s in splits.items()},
        "splits": splits,
        # How validation was drawn: pieces of about piece_chars characters, each held out when its hash is
        # below val_threshold (val_fraction of 2^64, or just above the smallest hash where none fell below it).
        "split": split_rule,
        "tokenizer": "tokenizer.json",
        # The options that made it, without paths of this machine (the tokenizer's is named by fingerprint).
        "options": {k: v for k, v in job_of(opts, [])["options"].items() if k not in ("source", "tokenizer")}
        | {"tokenizer": "given" if opts.tokenizer else "trained"},
    }


def _check_split(writers: dict[str, ShardWriter], opts: PrepareOptions, pieces: int) -> None:
    docs = {split: w.documents for split, w in writers.items()}
    total = sum(docs.values())
    if total == 0:
        raise ConfigError(f"corpus {opts.source!r} is empty (no non-empty documents)")
    if pieces < 2:
        raise ConfigError(
            f"the corpus is one piece of text (under {encoding.PIECE_CHARS} characters); at least 2 are needed to "
            "hold out a validation split: give more text"
        )
    for split, n in docs.items():
        if n == 0:
            raise ConfigError(
                f"the {split} split is empty: of the corpus's {pieces} pieces, none fell to it at "
                f"{opts.flag('val_fraction')} {opts.val_fraction} (a piece goes to validation by a hash of its "
                f"text); give more text or another {opts.flag('val_fraction')}"
            )
