"""`ligo-ds prepare`: a corpus of any size -> DATA_DIR, streamed, on every core, sharded and resumable.

Documents flow from the source (sources.py) in chunks of a few MB to worker processes, which decode,
tokenize (with the tokenizer's own special tokens, a Llama BOS for instance) and end each document with
the tokenizer's end-of-sequence token. The main process only reads bytes and writes results in source
order into shards of about `--shard-bytes` per split (data.py reads them as one stream). Memory holds
a bounded number of chunks in flight, never the corpus, its ids or an object per document of it.

A document goes to validation when a hash of its text falls below `--val-fraction`: O(1) per document,
independent of the number of workers, and copies of one document land in the same split.

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

import hashlib
import json
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..faults import crash_point
from ..model import tokenizer
from ..options import to_flat
from . import encoding, sources
from .reading import FORMAT_VERSION, SPLITS, staging_dir

if TYPE_CHECKING:
    from ..options import PrepareOptions

JOB_FILE, PROGRESS_FILE, META_FILE = "prepare_job.json", "progress.json", "meta.json"
COMMIT_SECONDS = 60.0  # a killed run redoes at most this much work beyond the last closed shard
PROGRESS_SECONDS = 10.0
IN_FLIGHT_PER_WORKER = 3  # chunks queued per worker: enough to hide the reader, bounded memory
# Options that do not change the output: a rerun that differs only in these resumes.
_NOT_IN_JOB = ("out", "force", "num_proc")


# ---- tokenizer ------------------------------------------------------------------------------------


def train_tokenizer(texts: Iterator[str], vocab_size: int):
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
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def sample_texts(
    parts: list[sources.Piece], hub: sources.HubSpec | None, text_field: str, budget: int
) -> Iterator[str]:
    """About `budget` bytes of documents spread over the corpus: where every file's size is known, each
    file gives its share (a prefix of a JSON lines or Parquet file; whole text files, one in so many);
    a stream of unknown size gives its first `budget` bytes."""
    sizes = [p.size for p in parts]
    known = all(s is not None for s in sizes)
    total = sum(sizes) if known else None
    if total is None or total <= budget:
        taken = 0
        for chunk in sources.chunks(parts, (0, 0), text_field, hub):
            for doc in sources.texts(chunk.payload):
                yield doc
                taken += len(doc.encode())
                if taken >= budget:
                    return
        return
    allowance = 0.0
    for piece in parts:
        allowance += budget * piece.size / total
        if allowance <= 0:
            continue
        for chunk in sources.chunks([piece], (0, 0), text_field, hub):
            for doc in sources.texts(chunk.payload):
                yield doc
                allowance -= len(doc.encode())
                if allowance <= 0:
                    break
            if allowance <= 0:
                break


def _tokenizer(opts: PrepareOptions, out: Path, parts, hub, resuming: bool):
    """The tokenizer the shards are made with: given, already trained by the run being resumed, or
    trained now on a sample of the corpus."""
    if opts.tokenizer:
        return tokenizer.load(opts.tokenizer)
    if resuming and (out / "tokenizer.json").is_file():
        return tokenizer.load(out, "--out")
    print(
        f"prepare: training a {opts.vocab_size}-token BPE on up to {opts.tokenizer_sample_bytes:,} bytes",
        file=sys.stderr,
    )
    return tokenizer.trained(
        train_tokenizer(sample_texts(parts, hub, opts.text_field, opts.tokenizer_sample_bytes), opts.vocab_size)
    )


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


# ---- the workers (encoding.py) ---------------------------------------------------------------------


def _encoded(chunks: Iterator[sources.Chunk], num_proc: int, initargs: tuple) -> Iterator[tuple]:
    """(chunk, encoding.encode_chunk's result) in source order, `num_proc` workers, a bounded number in flight."""
    if num_proc == 1:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        encoding.init_worker(*initargs)
        for chunk in chunks:
            yield chunk, encoding.encode_chunk(chunk.payload)
        return
    import multiprocessing

    # Workers are spawned, not forked: a fork would inherit the Rust thread pool of a tokenizer trained
    # above, and tokenizers then disables itself. Each worker encodes on one thread.
    ctx = multiprocessing.get_context("spawn")
    env_before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    pool = ctx.Pool(num_proc, initializer=encoding.init_worker, initargs=initargs)
    try:
        pending: deque = deque()
        for chunk in chunks:
            pending.append((chunk, pool.apply_async(encoding.encode_chunk, (chunk.payload,))))
            if len(pending) >= num_proc * IN_FLIGHT_PER_WORKER:
                done, result = pending.popleft()
                yield done, result.get()
        while pending:
            done, result = pending.popleft()
            yield done, result.get()
        pool.close()
    finally:
        pool.terminate()
        pool.join()
        if env_before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = env_before


# ---- shards ---------------------------------------------------------------------------------------


class ShardWriter:
    """One split's shards: appends tokens, closes a shard at `shard_tokens` (fsync, SHA-256)."""

    def __init__(self, out: Path, split: str, dtype: np.dtype, shard_tokens: int, saved: dict | None):
        self.out, self.split, self.dtype, self.shard_tokens = out, split, dtype, shard_tokens
        saved = saved or {"shards": [], "open_tokens": 0, "documents": 0}
        self.done: list[dict] = list(saved["shards"])
        self.documents: int = saved["documents"]
        self.open_tokens: int = saved["open_tokens"]
        self.closed_since_commit = False
        # Shards a killed run opened after its last commit hold nothing this run keeps.
        for stale in out.glob(f"{split}-*.bin"):
            if int(stale.stem.rsplit("-", 1)[1]) > len(self.done):
                stale.unlink()
        path = self._path()
        keep = self.open_tokens * dtype.itemsize
        if path.exists() and path.stat().st_size < keep:
            raise ConfigError(
                f"{str(path)!r} holds {path.stat().st_size} bytes, fewer than the {keep} its progress.json "
                "recorded: the DATA_DIR was damaged; rerun with --force to prepare it anew"
            )
        self.file = open(path, "r+b" if path.exists() else "wb")
        self.file.truncate(keep)
        self.file.seek(keep)
        self.hash = hashlib.sha256()
        if keep:
            with open(path, "rb") as f:
                while block := f.read(16 << 20):
                    self.hash.update(block)

    def _path(self) -> Path:
        return self.out / f"{self.split}-{len(self.done):05d}.bin"

    @property
    def tokens(self) -> int:
        return sum(s["tokens"] for s in self.done) + self.open_tokens

    def write(self, ids: np.ndarray, documents: int) -> None:
        self.documents += documents
        while len(ids):
            take = min(len(ids), self.shard_tokens - self.open_tokens)
            data = ids[:take].tobytes()
            self.file.write(data)
            self.hash.update(data)
            self.open_tokens += take
            ids = ids[take:]
            if self.open_tokens == self.shard_tokens:
                self._close_shard()
                self.file = open(self._path(), "wb")
                self.hash = hashlib.sha256()

    def _close_shard(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.done.append({"file": self._path().name, "tokens": self.open_tokens, "sha256": self.hash.hexdigest()})
        self.open_tokens = 0
        self.closed_since_commit = True

    def sync(self) -> dict:
        """Flush the open shard to disk; the state progress.json records."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.closed_since_commit = False
        return {"shards": self.done, "open_tokens": self.open_tokens, "documents": self.documents}

    def finish(self) -> dict:
        """Close the last shard (an empty one is removed); the split's entry in meta.json."""
        if self.open_tokens:
            self._close_shard()
        else:
            self.file.close()
            self._path().unlink(missing_ok=True)
        return {"tokens": self.tokens, "documents": self.documents, "shards": self.done}


# ---- the job and its resume ------------------------------------------------------------------------


def _write_json(path: Path, value: Any) -> None:
    """Atomically: a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def job_of(opts: PrepareOptions, parts: list[sources.Piece]) -> dict:
    """What decides the output: the options (but where it goes and how many workers) and the source's
    files with their sizes and modification times."""
    options = {k: v for k, v in to_flat(opts).items() if k not in _NOT_IN_JOB}
    return {"format": FORMAT_VERSION, "options": options, "files": [p.fingerprint for p in parts]}


def _differences(old: dict, new: dict) -> list[str]:
    out = [
        f"{k}: {old['options'].get(k)!r} -> {new['options'].get(k)!r}"
        for k in sorted(set(old.get("options", {})) | set(new["options"]))
        if old.get("options", {}).get(k) != new["options"].get(k)
    ]
    if old.get("format") != new["format"]:
        out.append(f"format: {old.get('format')!r} -> {new['format']!r}")
    old_files, new_files = old.get("files", []), new["files"]
    if old_files != new_files:
        changed = next(
            (f"{a[0]} (size, mtime {a[1:]} -> {b[1:]})" for a, b in zip(old_files, new_files, strict=False) if a != b),
            f"{len(old_files)} -> {len(new_files)} files",
        )
        out.append(f"source files: {changed}")
    return out


def _refusal(where: Path, differences: list[str]) -> ConfigError:
    return ConfigError(
        f"{str(where)!r} holds the output of another prepare command ({'; '.join(differences)}); "
        "give another --out, rerun the same command to resume it, or pass --force to replace it"
    )


def _claim(out: Path, staging: Path, job: dict, force: bool) -> str:
    """'complete' (out is this command's finished output), 'resume' (staging holds this command's
    unfinished work) or 'fresh'. Refuses an --out or staging directory that holds something else unless
    --force, which starts over (out itself is replaced only once the new output is complete)."""
    if out.exists() and any(out.iterdir()) and not force:
        if not (out / JOB_FILE).is_file():
            raise ConfigError(f"--out {str(out)!r} exists and is not empty; pass --force to replace it")
        differences = _differences(json.loads((out / JOB_FILE).read_text()), job)
        if differences:
            raise _refusal(out, differences)
        return "complete"
    if (staging / JOB_FILE).is_file() and not force:
        differences = _differences(json.loads((staging / JOB_FILE).read_text()), job)
        if differences:
            raise _refusal(staging, differences)
        return "resume"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _write_json(staging / JOB_FILE, job)
    return "fresh"


class _Progress:
    """A line on stderr every PROGRESS_SECONDS: documents, tokens, MB/s and, for files, an ETA."""

    def __init__(self, total_bytes: int | None, done_bytes: int):
        self.total, self.done, self.start_done = total_bytes, done_bytes, done_bytes
        self.start = self.last = time.monotonic()
        self.shown: tuple[int, int] | None = None

    def update(self, nbytes: int, documents: int, tokens: int, force: bool = False) -> None:
        self.done += nbytes
        now = time.monotonic()
        if (not force and now - self.last < PROGRESS_SECONDS) or self.shown == (documents, tokens):
            return
        self.shown = (documents, tokens)
        self.last = now
        rate = (self.done - self.start_done) / max(now - self.start, 1e-9)
        line = f"prepare: {documents:,} documents, {tokens:,} tokens, {self.done / 1e6:,.1f} MB read"
        line += f", {rate / 1e6:.1f} MB/s"
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            line += f", {100 * self.done / self.total:.1f} % of {self.total / 1e6:,.1f} MB, ETA {eta:,.0f} s"
        print(line, file=sys.stderr, flush=True)


def prepare(opts: PrepareOptions) -> dict:
    """Build (or finish) DATA_DIR; returns its meta.json contents."""
    out = Path(opts.out)
    hub = (
        sources.hub_spec(opts.source, opts.subset, opts.split, opts.data_files)
        if opts.source.startswith("hub:")
        else None
    )
    if hub is None and (opts.subset or opts.data_files or opts.split != "train"):
        raise ConfigError(
            f"--subset, --data-files and --split choose within a Hub dataset; --source {opts.source!r} is not hub:NAME"
        )
    parts = sources.pieces(opts.source, hub)
    if hub is not None:
        sources.open_hub(hub)  # fails early and clearly when the dataset is missing (offline)
    job = job_of(opts, parts)
    staging = staging_dir(out)
    state = _claim(out, staging, job, opts.force)
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
    return meta


def _run(opts: PrepareOptions, out: Path, parts, hub, resuming: bool) -> dict:
    progress_path = out / PROGRESS_FILE
    saved = json.loads(progress_path.read_text()) if resuming and progress_path.is_file() else None
    tok = _tokenizer(opts, out, parts, hub, resuming=saved is not None)
    eos_token, eos = tokenizer.separator(tok, opts.tokenizer, opts.eos_token)
    backend = tok.backend_tokenizer
    vocab = backend.get_vocab_size()
    dtype = token_dtype(vocab)
    if saved is None:
        tokenizer.save(tok, eos_token, out)
        for stale in out.glob("*.bin"):
            stale.unlink()
    shard_tokens = max(1, opts.shard_bytes // dtype.itemsize)
    writers = {
        split: ShardWriter(out, split, dtype, shard_tokens, (saved or {}).get("splits", {}).get(split))
        for split in SPLITS
    }
    cursor = tuple(saved["cursor"]) if saved else (0, 0)
    read_bytes = saved["read_bytes"] if saved else 0

    def commit(at: tuple[int, int]) -> None:
        state = {"cursor": list(at), "read_bytes": read_bytes, "splits": {s: w.sync() for s, w in writers.items()}}
        _write_json(progress_path, state)

    if saved is None:
        commit(cursor)
    num_proc = opts.num_proc or len(os.sched_getaffinity(0))
    sizes = [p.size for p in parts]
    shown = _Progress(sum(sizes) if all(s is not None for s in sizes) else None, read_bytes)
    last_commit = time.monotonic()
    initargs = (backend.to_str(), eos, dtype.name, opts.val_fraction)
    for chunk, (ids, lengths, held) in _encoded(
        sources.chunks(parts, cursor, opts.text_field, hub), num_proc, initargs
    ):
        if held.any():
            in_val = np.repeat(held, lengths)
            writers["val"].write(ids[in_val], int(held.sum()))
            writers["train"].write(ids[~in_val], int((~held).sum()))
        else:
            writers["train"].write(ids, len(lengths))
        read_bytes += chunk.nbytes
        docs = sum(w.documents for w in writers.values())
        shown.update(chunk.nbytes, docs, sum(w.tokens for w in writers.values()))
        if any(w.closed_since_commit for w in writers.values()) or time.monotonic() - last_commit > COMMIT_SECONDS:
            commit(chunk.cursor)
            last_commit = time.monotonic()
        crash_point("prepare")
    _check_split(writers, opts)
    splits = {split: w.finish() for split, w in writers.items()}
    shown.update(0, sum(s["documents"] for s in splits.values()), sum(s["tokens"] for s in splits.values()), force=True)
    meta = {
        "format": FORMAT_VERSION,
        "source": opts.source,
        "dtype": dtype.name,
        "vocab_size": vocab,
        "eos_id": eos,
        "eos_token": eos_token,
        "tokenizer_fingerprint": tokenizer.fingerprint(tok),
        "train_tokens": splits["train"]["tokens"],
        "val_tokens": splits["val"]["tokens"],
        "documents": {split: s["documents"] for split, s in splits.items()},
        "splits": splits,
        "tokenizer": "tokenizer.json",
        # The options that made it, without paths of this machine (the tokenizer's is named by fingerprint).
        "options": {k: v for k, v in job_of(opts, [])["options"].items() if k not in ("source", "tokenizer")}
        | {"tokenizer": "given" if opts.tokenizer else "trained"},
    }
    _write_json(out / META_FILE, meta)
    progress_path.unlink()
    return meta


def _check_split(writers: dict[str, ShardWriter], opts: PrepareOptions) -> None:
    docs = {split: w.documents for split, w in writers.items()}
    total = sum(docs.values())
    if total == 0:
        raise ConfigError(f"corpus {opts.source!r} is empty (no non-empty documents)")
    if total < 2:
        raise ConfigError(f"the corpus has {total} document(s); at least 2 are needed to hold out a validation split")
    for split, n in docs.items():
        if n == 0:
            raise ConfigError(
                f"the {split} split is empty: of the corpus's {total} documents, none fell to it at --val-fraction "
                f"{opts.val_fraction} (a document goes to validation by a hash of its text); give more documents "
                "or another --val-fraction"
            )
