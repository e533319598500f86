"""The data side: a corpus made into token shards (`prepare`), and the shards read back for training.

    prepare.py      `prepare` (PrepareOptions): documents -> tokenizing workers -> shards, resumable
    prepare_job.py  what a prepare job is, and whether a directory holds its output or its unfinished work
    sources.py      where documents come from: files and Hub streams, read in chunks with cursors
    encoding.py     what the workers run: a chunk -> its documents -> token ids and each document's split
    tokenize.py     the BPE trained on a sample of the corpus, and the pool of tokenizing workers
    shards.py       the shards written, each closed at a size with its SHA-256 and largest id
    meta.py         meta.json, a DATA_DIR's index: what its fields may hold
    reading.py      a DATA_DIR read (the Data block): its shards, checks, mixtures
    stream.py       a split's shards as one token stream, each read checked against the vocabulary
    order.py        which window each sample index reads: a per-index permutation, mixture blocks
    batches.py      training batches by sample index, read ahead in a thread

Nothing here imports torch at import time: prepare's workers import only encoding.py.
"""
