"""prepare's output files: each split's shards (`ShardWriter`), closed at a size with their SHA-256, and the
JSON files of the job, written so that a kill leaves the old file or the new one."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError


def write_json_synced(path: Path, value: Any) -> None:
    """Atomically: a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


class ShardWriter:
    """One split's shards: appends tokens, closes a shard at `shard_tokens` (fsync, SHA-256, largest id)."""

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
        self.max_id = -1  # the largest token id in the open shard, for meta.json (reading.TokenData.check_model)
        if keep:
            with open(path, "rb") as f:
                while block := f.read(16 << 20):
                    self.hash.update(block)
                    self.max_id = max(self.max_id, int(np.frombuffer(block, dtype=dtype).max()))

    def _path(self) -> Path:
        return self.out / f"{self.split}-{len(self.done):05d}.bin"

    @property
    def tokens(self) -> int:
        return sum(s["tokens"] for s in self.done) + self.open_tokens

    def write(self, ids: np.ndarray, documents: int) -> None:
        self.documents += documents
        while len(ids):
            take = min(len(ids), self.shard_tokens - self.open_tokens)
            if take:
                self.max_id = max(self.max_id, int(ids[:take].max()))
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
        self.done.append(
            {
                "file": self._path().name,
                "tokens": self.open_tokens,
                "sha256": self.hash.hexdigest(),
                "max_id": self.max_id,
            }
        )
        self.open_tokens, self.max_id = 0, -1
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
