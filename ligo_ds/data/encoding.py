"""What `prepare`'s tokenizing workers run: a chunk's raw payload (sources.py) -> its documents, decoded and
checked -> token ids and each document's split.

Kept apart from prepare.py so that a spawned worker imports only this, numpy and tokenizers (not torch);
prepare.py runs the same functions in-process for one worker.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import numpy as np

from ..errors import ConfigError

_WORKER: dict[str, Any] = {}
_SURROGATE = re.compile("[\ud800-\udfff]")


# The split is drawn on pieces: a document is cut, at a paragraph or line break near every PIECE_CHARS
# characters, into pieces hashed like documents, so one long file (a book) gives about --val-fraction of its
# text to validation, and a corpus of a few documents a validation split at all. Consecutive pieces of one
# document that fall to the same split stay one document (tokenized whole, one BOS and one end token): a
# document is cut only where the split changes. Copies of a piece always share its split.
PIECE_CHARS = 2048
HASH_SPACE = 2**64


def init_worker(backend_json: str, eos: int, dtype: str, val_threshold: int) -> None:
    from tokenizers import Tokenizer

    _WORKER.update(tok=Tokenizer.from_str(backend_json), eos=eos, dtype=np.dtype(dtype), val_threshold=val_threshold)


def piece_hash(text: str) -> int:
    """A piece's hash, an integer in [0, 2^64): the same text, the same hash, on any machine."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def threshold(val_fraction: float) -> int:
    """The hash below which a piece is held out: val_fraction of the hash space."""
    return int(val_fraction * HASH_SPACE)


def is_validation(text: str, val_fraction: float) -> bool:
    """Whether a piece is held out: its hash, read as a number in [0, 1), below the fraction."""
    return piece_hash(text) < threshold(val_fraction)


def pieces(doc: str, size: int = PIECE_CHARS) -> list[str]:
    """`doc` cut after a blank line, else a line break, in the second half of every `size` characters (a
    cut mid-line only where a stretch has neither); documents up to `size` are one piece."""
    out, start = [], 0
    while len(doc) - start > size:
        lo, hi = start + size // 2, start + size
        cut = doc.rfind("\n\n", lo, hi)
        cut = cut + 2 if cut >= 0 else doc.rfind("\n", lo, hi) + 1 or hi
        out.append(doc[start:cut])
        start = cut
    out.append(doc[start:])
    return out


def runs(parts: list[str], val_threshold: int) -> list[tuple[str, bool, int]]:
    """(text, held out, its pieces' smallest hash) for each stretch of consecutive pieces in one split."""
    out: list[tuple[str, bool, int]] = []
    for piece in parts:
        h = piece_hash(piece)
        held = h < val_threshold
        if out and out[-1][1] == held:
            text, _, low = out[-1]
            out[-1] = (text + piece, held, min(low, h))
        else:
            out.append((piece, held, h))
    return out


def encode_chunk(payload: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(all token ids, tokens per document, held out per document, pieces, the smallest piece hash) of one
    chunk, each document a run of pieces in one split (`runs`). Runs in a worker."""
    w = _WORKER
    cut = [pieces(doc) for doc in texts(payload)]
    stretches = [r for parts in cut for r in runs(parts, w["val_threshold"])]
    docs = [text for text, _, _ in stretches]
    flat: list[int] = []
    lengths = np.empty(len(docs), dtype=np.int64)
    # encode_batch_fast: the same ids without the character offsets (tokenizers >= 0.20), which nothing reads.
    encode = getattr(w["tok"], "encode_batch_fast", w["tok"].encode_batch)
    for j, enc in enumerate(encode(docs)):
        ids = enc.ids
        flat.extend(ids)
        flat.append(w["eos"])
        lengths[j] = len(ids) + 1
    held = np.fromiter((h for _, h, _ in stretches), dtype=bool, count=len(docs))
    count = sum(len(parts) for parts in cut)
    lowest = min((low for _, _, low in stretches), default=HASH_SPACE)
    return np.array(flat, dtype=w["dtype"]), lengths, held, count, lowest


# ---- a chunk's documents ---------------------------------------------------------------------------


def _utf8(data: bytes, where: str, offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{where} is not UTF-8 text (invalid byte at offset {offset + e.start}); convert it or leave it out"
        ) from None


def _field(record: Any, text_field: str, where: str) -> Any:
    if not isinstance(record, dict) or text_field not in record:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ConfigError(f"{where}: no text field {text_field!r} (found {keys}; choose one with --text-field)")
    return record[text_field]


def texts(payload: tuple) -> list[str]:
    """The documents of one chunk, in order; empty documents are dropped. Runs in a worker."""
    kind = payload[0]
    if kind == "files":
        docs = [_utf8(data, repr(name), 0) for name, data in payload[1]]
    elif kind == "lines":
        _, name, base, body, text_field = payload
        docs, offset = [], 0
        for line in body.split(b"\n"):
            if line.strip():
                where = f"{name!r} at byte {base + offset}"
                try:
                    record = json.loads(line)
                except UnicodeDecodeError:
                    _utf8(line, repr(name), base + offset)
                    raise
                except json.JSONDecodeError as e:
                    raise ConfigError(
                        f"{where}: not a JSON line ({e.msg}); expected one JSON object per line"
                    ) from None
                docs.append(_text(_field(record, text_field, where), where))
            offset += len(line) + 1
    elif kind == "array":
        _, name, body, text_field = payload
        records = json.loads(_utf8(body, repr(name), 0))
        docs = [_text(_field(r, text_field, f"{name!r} item {i}"), f"{name!r} item {i}") for i, r in enumerate(records)]
    elif kind == "texts":
        _, name, values = payload
        docs = [_text(v, f"{name!r}") for v in values]
    else:
        raise AssertionError(kind)
    return [d for d in docs if d]


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: the text field holds {type(value).__name__}, expected a string")
    # JSON can spell a lone UTF-16 surrogate ("\\ud800"), which no UTF-8 encoder (the tokenizer's) takes.
    if not value.isascii() and (bad := _SURROGATE.search(value)):
        raise ConfigError(
            f"{where}: the text holds the lone surrogate {bad.group()!r} at character {bad.start()}, which is not "
            "valid text; fix or drop the document"
        )
    return value
