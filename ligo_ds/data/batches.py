"""Training batches by global sample index, read a batch ahead in a background thread, and the windows of
a token stream as (inputs, targets) tensors."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np


def _as_batch(windows: list) -> tuple:
    """(inputs, targets) int64 tensors from windows of seq_len + 1 tokens each."""
    import torch

    chunk = torch.from_numpy(np.stack([np.asarray(w, dtype=np.int64) for w in windows]))
    return chunk[:, :-1], chunk[:, 1:]


def window_batch(tokens, starts: np.ndarray, seq_len: int):
    """(inputs, targets) int64 tensors of shape (len(starts), seq_len) from a token stream or array."""
    return _as_batch([tokens[s : s + seq_len + 1] for s in starts])


class Batches:
    """Training batches by global sample index, the next one read in a background thread.

    `locate(first, count)` gives (streams, source per sample, token start per sample). `read` returns
    (inputs, targets); after each read it starts reading the batch `stride` samples on (the next one
    this rank asks for), so the copy from the page cache or disk overlaps the step.
    """

    def __init__(self, locate: Callable, seq_len: int):
        self.locate = locate
        self.seq_len = seq_len
        self.consumed: Callable[[int], dict[str, int]] | None = None  # per source, for mixtures
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: tuple[int, int, Future] | None = None

    def _read(self, first: int, count: int):
        streams, source, starts = self.locate(first, count)
        return _as_batch([streams[j][s : s + self.seq_len + 1] for j, s in zip(source, starts, strict=True)])

    def read(self, first: int, count: int, stride: int | None = None):
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[:2] == (first, count):
            batch = ahead[2].result()
        else:
            batch = self._read(first, count)
        if stride is not None:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ligo-ds-data")
            nxt = first + stride
            self._ahead = (nxt, count, self._pool.submit(self._read, nxt, count))
        return batch

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool, self._ahead = None, None
