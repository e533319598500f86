"""A split's tokens as one stream across its shards (`TokenStream`), each read checked against the model's
vocabulary."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError


class TokenStream:
    """Token arrays (shards, or slices of them) read as one: `len()`, and slices across their seams.

    With `limit` (the model's vocabulary size), every slice read is checked for ids beyond it, naming the
    shard (`names`): a shard damaged or replaced under --verify-data size is refused as it is read, at the cost
    of a max() over tokens the step reads anyway, instead of an index error deep in the embedding."""

    def __init__(
        self, parts: list[np.ndarray], dtype: np.dtype, names: list[str] | None = None, limit: int | None = None
    ):
        names = names or [""] * len(parts)
        kept = [(p, n) for p, n in zip(parts, names, strict=True) if len(p)]
        self.parts, self.names = [p for p, _ in kept], [n for _, n in kept]
        self.dtype = dtype
        self.limit = limit
        self.offsets = np.cumsum([0, *(len(p) for p in self.parts)])

    def _check(self, piece: np.ndarray, i: int, lo: int) -> None:
        if self.limit is not None and len(piece) and int(piece.max()) >= self.limit:
            at = lo + int(np.argmax(piece >= self.limit))
            raise ConfigError(
                f"shard {self.names[i]!r} holds token id {int(piece[at - lo])} at position {at}, beyond the model's "
                f"vocab_size {self.limit}: the shard is corrupt or from another tokenizer; prepare the data again"
            )

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("a TokenStream is read by slices")
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("a TokenStream is read by contiguous slices")
        if stop <= start:
            return np.empty(0, dtype=self.dtype)
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pieces = []
        i = first
        while start < stop:
            lo = start - int(self.offsets[i])
            hi = min(stop, int(self.offsets[i + 1])) - int(self.offsets[i])
            pieces.append(self.parts[i][lo:hi])
            self._check(pieces[-1], i, lo)
            start += hi - lo
            i += 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def tolist(self) -> list[int]:
        return self[:].tolist()
