"""`ligo-ds prepare` (the work: data/prepare.py)."""

from __future__ import annotations

import time

from ..data.prepare import PrepareOptions, prepare

Options = PrepareOptions
CONFIG_FILE = True


def run(opts: PrepareOptions) -> int:
    """Tokenize a corpus into sharded, memory-mapped train/val token files (DATA_DIR), on every core.

    SRC is `stdlib` (the Python standard library source, offline), comma-separated local files or
    folders (.txt, .jsonl/.json, also .gz, with a text field, .parquet), or hub:NAME, streamed through
    `datasets` and your HF cache (--split, --subset, --data-files). Without --tokenizer a byte-level BPE
    of --vocab-size tokens is trained on --tokenizer-sample-bytes of the corpus. A killed prepare
    resumes when the same command is run again.
    """
    start = time.perf_counter()
    meta = prepare(opts)
    print(
        f"wrote {opts.out}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
        f"({meta['documents']['train']:,} + {meta['documents']['val']:,} documents, "
        f"{sum(len(meta['splits'][s]['shards']) for s in meta['splits'])} shards), vocabulary {meta['vocab_size']}, "
        f"{time.perf_counter() - start:.1f} s"
    )
    return 0
