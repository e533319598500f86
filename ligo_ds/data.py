"""A prepared DATA_DIR (prepare.py writes it): the memory-mapped token files, and which training window
each global sample index reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ConfigError

FORMAT_VERSION = 1  # of DATA_DIR's layout: prepare writes it into meta.json, TokenData refuses another


class TokenData:
    """A prepared DATA_DIR: meta plus memory-mapped train/val token arrays."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            raise ConfigError(f"data dir {str(self.dir)!r} has no meta.json; create it with `ligo-ds prepare`")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT_VERSION:
            raise ConfigError(
                f"data dir {str(self.dir)!r} has format {self.meta.get('format')!r}, "
                f"this ligo_ds reads format {FORMAT_VERSION}"
            )
        self.vocab_size: int = self.meta["vocab_size"]
        self.eos_id: int = self.meta["eos_id"]

    def tokens(self, split: str) -> np.memmap:
        path = self.dir / f"{split}.bin"
        expected = self.meta[f"{split}_tokens"]
        dtype = np.dtype(self.meta["dtype"])
        if not path.is_file() or path.stat().st_size != expected * dtype.itemsize:
            size = path.stat().st_size if path.is_file() else "missing"
            raise ConfigError(
                f"{str(path)!r}: size {size} does not match meta.json's {expected} tokens "
                f"of {dtype.name}; the data dir is incomplete or corrupt"
            )
        return np.memmap(path, dtype=dtype, mode="r")

    def check_model(self, vocab_size: int) -> None:
        """Refuse a model whose vocabulary cannot embed every token id in the data."""
        if self.vocab_size > vocab_size:
            raise ConfigError(
                f"data dir {str(self.dir)!r} has a vocabulary of {self.vocab_size} tokens, larger "
                f"than the model's vocab_size {vocab_size}"
            )


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

    rows = np.stack([np.asarray(tokens[s : s + seq_len + 1], dtype=np.int64) for s in starts])
    chunk = torch.from_numpy(rows)
    return chunk[:, :-1], chunk[:, 1:]
