"""One pass of `prepare` over a corpus: its chunks to the tokenizing workers (tokenize.encoded), their results
into the splits' shards in source order, progress committed to progress.json whenever a shard closes (and
every COMMIT_SECONDS) so that a killed pass resumes byte-identical, and a progress line every
PROGRESS_SECONDS. prepare.py decides how many passes (a second one holds out the piece of the smallest hash
where the fraction gave none) and what the DATA_DIR's meta.json says.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..faults import crash_point
from . import encoding, sources
from .reading import SPLITS
from .shards import ShardWriter, write_json_synced
from .tokenize import encoded

PROGRESS_FILE = "progress.json"
COMMIT_SECONDS = 60.0  # a killed run redoes at most this much work beyond the last closed shard
PROGRESS_SECONDS = 10.0


@dataclass(frozen=True)
class Pass:
    """What a pass over the corpus needs: where it writes, what it reads, how it encodes."""

    out: Path
    parts: list
    hub: object
    text_field: str
    initargs: tuple  # encoding.init_worker's, less the threshold
    shard_tokens: int
    dtype: np.dtype
    num_proc: int

    def run(self, saved: dict | None, val_threshold: int):
        """The corpus into the splits' shards at `val_threshold`, resuming from `saved` (progress.json); the
        writers, and the pieces seen with their smallest hash."""
        p = self
        out, parts, dtype, shard_tokens = p.out, p.parts, p.dtype, p.shard_tokens
        progress_path = out / PROGRESS_FILE
        writers = {
            split: ShardWriter(out, split, dtype, shard_tokens, (saved or {}).get("splits", {}).get(split))
            for split in SPLITS
        }
        cursor = tuple(saved["cursor"]) if saved else (0, 0)
        read_bytes = saved["read_bytes"] if saved else 0
        counts = {"pieces": (saved or {}).get("pieces", 0), "lowest": (saved or {}).get("lowest", encoding.HASH_SPACE)}

        def commit(at: tuple[int, int]) -> None:
            state = {
                "cursor": list(at),
                "read_bytes": read_bytes,
                "val_threshold": val_threshold,
                **counts,
                "splits": {s: w.sync() for s, w in writers.items()},
            }
            write_json_synced(progress_path, state)

        if saved is None:
            commit(cursor)
        sizes = [part.size for part in parts]
        shown = _Progress(sum(sizes) if all(s is not None for s in sizes) else None, read_bytes)
        last_commit = time.monotonic()
        chunks = sources.chunks(parts, cursor, p.text_field, p.hub)
        for chunk, (ids, lengths, held, n, lowest) in encoded(chunks, p.num_proc, (*p.initargs, val_threshold)):
            split_chunk(writers, ids, lengths, held)
            read_bytes += chunk.nbytes
            counts["pieces"] += n
            counts["lowest"] = min(counts["lowest"], lowest)
            docs = sum(w.documents for w in writers.values())
            shown.update(chunk.nbytes, docs, sum(w.tokens for w in writers.values()))
            if any(w.closed_since_commit for w in writers.values()) or time.monotonic() - last_commit > COMMIT_SECONDS:
                commit(chunk.cursor)
                last_commit = time.monotonic()
            crash_point("prepare")
        docs = sum(w.documents for w in writers.values())
        shown.update(0, docs, sum(w.tokens for w in writers.values()), force=True)
        return writers, counts


def split_chunk(writers: dict[str, ShardWriter], ids: np.ndarray, lengths: np.ndarray, held: np.ndarray) -> None:
    """A chunk's documents into their splits (`held`: each document's, held out for validation)."""
    if held.any():
        in_val = np.repeat(held, lengths)
        writers["val"].write(ids[in_val], int(held.sum()))
        writers["train"].write(ids[~in_val], int((~held).sum()))
    else:
        writers["train"].write(ids, len(lengths))


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
