"""What `prepare`'s tokenizing workers run: a chunk of raw documents -> token ids and each document's split.

Kept apart from prepare.py so that a spawned worker imports only this, sources.py, numpy and
tokenizers (not torch); prepare.py runs the same functions in-process for --num-proc 1.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from . import sources

_WORKER: dict[str, Any] = {}


def init_worker(backend_json: str, eos: int, dtype: str, val_fraction: float) -> None:
    from tokenizers import Tokenizer

    _WORKER.update(tok=Tokenizer.from_str(backend_json), eos=eos, dtype=np.dtype(dtype), val_fraction=val_fraction)


def is_validation(text: str, val_fraction: float) -> bool:
    """Whether a document is held out: a hash of its text, read as a number in [0, 1), below the fraction."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") < val_fraction * 2**64


def encode_chunk(payload: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(all token ids, tokens per document, held out per document) of one chunk. Runs in a worker."""
    w = _WORKER
    docs = sources.texts(payload)
    flat: list[int] = []
    lengths = np.empty(len(docs), dtype=np.int64)
    # encode_batch_fast: the same ids without the character offsets (tokenizers >= 0.20), which nothing reads.
    encode = getattr(w["tok"], "encode_batch_fast", w["tok"].encode_batch)
    for j, enc in enumerate(encode(docs)):
        ids = enc.ids
        flat.extend(ids)
        flat.append(w["eos"])
        lengths[j] = len(ids) + 1
    held = np.fromiter((is_validation(d, w["val_fraction"]) for d in docs), dtype=bool, count=len(docs))
    return np.array(flat, dtype=w["dtype"]), lengths, held
