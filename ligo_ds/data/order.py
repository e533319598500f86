"""Which training window each global sample index reads, in O(1) memory whatever the corpus size.

A run's position in its data is one integer, the number of samples consumed: it survives restarts and
world-size changes because every sample's window is a pure function of (seed, sample index). Within an
epoch the windows are visited in a seeded pseudo-random permutation computed per index, a Feistel
network over the next power of four with cycle walking (values that land outside [0, n) are encrypted
again until they land inside, which keeps it a bijection of [0, n)): no array of all windows exists,
which at 100B tokens and seq 256 would be 3 GB per rank.

Mixtures (`--data A=0.7,B=0.3`) assign sample indices to sources in blocks of `MIX_BLOCK`: each block
holds a fixed number of samples of each source (the weights apportioned by largest remainder), at
positions a per-block permutation scatters, so source and within-source index are O(1) to compute too.
Each source then has its own window order and its own epochs (a small source repeats sooner).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

# Recorded in a run's identity: a run started with another order cannot resume bit-exact with this one.
DATA_ORDER = "feistel6-v1"
FEISTEL_ROUNDS = 6
MIX_BLOCK = 1 << 16  # samples per mixture block: weights are exact to 1 / MIX_BLOCK over each block
_M64 = (1 << 64) - 1


def _splitmix(x: int) -> int:
    """A 64-bit mixing function on Python ints (for keys)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 arrays (multiplication wraps, as it should)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class Permutation:
    """A seeded bijection of [0, n), evaluated per index: `perm(indices)`."""

    def __init__(self, n: int, *key: int):
        if n < 1:
            raise ValueError(f"a permutation of {n} elements")
        self.n = n
        bits = max(2, (n - 1).bit_length())
        self.half = (bits + 1) // 2
        k = 0
        for part in key:
            k = _splitmix(k ^ (part & _M64))
        self.keys = [np.uint64(_splitmix(k + r)) for r in range(FEISTEL_ROUNDS)]

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        h = np.uint64(self.half)
        mask = np.uint64((1 << self.half) - 1)
        left, right = x >> h, x & mask
        for key in self.keys:
            left, right = right, left ^ (_mix(right ^ key) & mask)
        return (left << h) | right

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        x = np.asarray(indices, dtype=np.uint64)
        if x.size and (x.max() >= self.n):
            raise IndexError(f"index {int(x.max())} outside a permutation of {self.n}")
        out = self._encrypt(x)
        outside = out >= np.uint64(self.n)
        while outside.any():  # cycle walking: a bijection of the larger domain restricted to [0, n)
            out[outside] = self._encrypt(out[outside])
            outside = out >= np.uint64(self.n)
        return out.astype(np.int64)


class SampleOrder:
    """Which window of one token stream each sample index reads.

    Windows are the non-overlapping (seq_len + 1)-token slices starting every seq_len tokens; each epoch
    visits all of them in a permutation seeded by (seed, epoch).
    """

    def __init__(self, num_tokens: int, seq_len: int, seed: int):
        self.seq_len = seq_len
        self.seed = seed
        self.num_windows = (num_tokens - 1) // seq_len
        if self.num_windows < 1:
            raise ConfigError(f"{num_tokens} training tokens are fewer than one window of --seq-len {seq_len} + 1")
        self._perms: dict[int, Permutation] = {}

    def _perm(self, epoch: int) -> Permutation:
        # The prefetch thread and the training thread may both ask: never read back what was stored.
        perm = self._perms.get(epoch)
        if perm is None:
            if len(self._perms) > 4:
                self._perms = {}
            perm = self._perms[epoch] = Permutation(self.num_windows, self.seed, epoch)
        return perm

    def starts_of(self, samples: np.ndarray) -> np.ndarray:
        """Token offsets of the given sample indices."""
        samples = np.asarray(samples, dtype=np.int64)
        epoch, index = np.divmod(samples, self.num_windows)
        out = np.empty(len(samples), dtype=np.int64)
        for e in np.unique(epoch):
            sel = epoch == e
            out[sel] = self._perm(int(e))(index[sel]) * self.seq_len
        return out

    def starts(self, first: int, count: int) -> np.ndarray:
        """Token offsets of samples first .. first + count - 1."""
        return self.starts_of(np.arange(first, first + count, dtype=np.int64))


def parse_weights(spec: str, what: str) -> list[tuple[str, float]]:
    """`A=0.7,B=0.3` -> [(A, 0.7), (B, 0.3)] normalized to sum 1; a plain `A` is [(A, 1.0)]. `what`: the
    option that gave `spec`, for the messages."""
    if "=" not in spec:
        return [(spec, 1.0)]
    out = []
    for part in spec.split(","):
        path, eq, weight = part.rpartition("=")
        try:
            w = float(weight)
        except ValueError:
            w = float("nan")
        if not eq or not path or not (w > 0 and np.isfinite(w)):
            raise ConfigError(
                f"{what} {spec!r}: {part!r} is not DATA_DIR=WEIGHT with a positive weight (e.g. web=0.7,code=0.3)"
            )
        out.append((path, w))
    paths = [p for p, _ in out]
    if len(set(paths)) != len(paths):
        raise ConfigError(f"{what} {spec!r} names a DATA_DIR twice")
    total = sum(w for _, w in out)
    return [(p, w / total) for p, w in out]


def apportion(total: int, weights: list[float]) -> list[int]:
    """Integers summing to `total`, proportional to `weights` (largest remainder, ties to the first)."""
    exact = [w * total for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda j: (-(exact[j] - counts[j]), j))
    for j in by_remainder[: total - sum(counts)]:
        counts[j] += 1
    return counts


class MixtureOrder:
    """Sample index -> (source, that source's window start), for sources mixed by weight."""

    def __init__(self, orders: list[SampleOrder], weights: list[float], seed: int):
        self.orders = orders
        self.counts = apportion(MIX_BLOCK, weights)
        if min(self.counts) == 0:
            raise ConfigError(f"mixture weights {weights} give a source less than 1 / {MIX_BLOCK} of the samples")
        self.bounds = np.cumsum([0, *self.counts])
        self.seed = seed
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """(source, rank among that source's samples) of each position of a block: O(MIX_BLOCK) memory,
        computed once per block. Ranks rise in sample order, so each source walks its own order from
        its start, epoch after epoch, however the mixture interleaves it."""
        cached = self._blocks.get(block)
        if cached is None:
            # A key apart from the window orders' (seed, epoch): -1 is never an epoch.
            slot = Permutation(MIX_BLOCK, self.seed, -1, block)(np.arange(MIX_BLOCK, dtype=np.int64))
            source = np.searchsorted(self.bounds, slot, side="right") - 1
            rank = np.empty(MIX_BLOCK, dtype=np.int64)
            for j in range(len(self.counts)):
                sel = source == j
                rank[sel] = np.arange(int(sel.sum()))
            if len(self._blocks) > 2:
                self._blocks = {}
            cached = self._blocks[block] = (source, rank)
        return cached

    def locate(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(source index, token start in that source) of samples first .. first + count - 1."""
        samples = np.arange(first, first + count, dtype=np.int64)
        block, pos = np.divmod(samples, MIX_BLOCK)
        source = np.empty(count, dtype=np.int64)
        within = np.empty(count, dtype=np.int64)
        for b in np.unique(block):
            sel = block == b
            src, rank = self._block(int(b))
            source[sel] = src[pos[sel]]
            within[sel] = int(b) * np.asarray(self.counts)[source[sel]] + rank[pos[sel]]
        starts = np.empty(count, dtype=np.int64)
        for j, order in enumerate(self.orders):
            sel = source == j
            if sel.any():
                starts[sel] = order.starts_of(within[sel])
        return source, starts

    def consumed(self, samples: int) -> list[int]:
        """How many of the first `samples` sample indices each source served."""
        full, rest = divmod(samples, MIX_BLOCK)
        partial = (
            np.bincount(self._block(full)[0][:rest], minlength=len(self.counts)) if rest else [0] * len(self.counts)
        )
        return [full * c + int(p) for c, p in zip(self.counts, partial, strict=True)]
