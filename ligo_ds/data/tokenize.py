"""The tokenizer's side of `prepare`: a byte-level BPE trained on a sample spread over the corpus (when no
tokenizer is given), and the pool of worker processes that tokenize chunks (encoding.py) in source order."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator

from ..model import tokenizer
from . import encoding, sources

IN_FLIGHT_PER_WORKER = 3  # chunks queued per worker: enough to hide the reader, bounded memory


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
            for doc in encoding.texts(chunk.payload):
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
            for doc in encoding.texts(chunk.payload):
                yield doc
                allowance -= len(doc.encode())
                if allowance <= 0:
                    break
            if allowance <= 0:
                break


def encoded(chunks: Iterator[sources.Chunk], num_proc: int, initargs: tuple) -> Iterator[tuple]:
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
