"""A prepared DATA_DIR (prepare.py writes it), or a mixture of several, as training and validation read them.

A DATA_DIR holds each split as shards of about a GB (`train-00000.bin`, ...), listed in meta.json with
their token counts and SHA-256; the reader memory-maps them and reads a split as one token stream
(`TokenStream`). Sizes are checked whenever a split is opened; checksums when a run starts
(`TokenData.verify`, each rank hashing its share of the shards). Format 1 DATA_DIRs (one train.bin and
one val.bin, from before shards) are still read.

`open_data("A=0.7,B=0.3")` mixes DATA_DIRs made with one tokenizer: training samples come from each by
its weight (order.MixtureOrder), validation reads a weighted slice of each one's split.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..folders import confined
from ..options import Block, at_least, derive, option
from .batches import Batches
from .meta import SPLITS, check_meta
from .order import MixtureOrder, SampleOrder, apportion, parse_weights
from .stream import TokenStream

DEFAULT_SEQ_LEN = 256  # tokens per training sequence when --seq-len is not given (and the model holds as many)
FORMAT_VERSION = 2  # of DATA_DIR's layout: prepare writes it into meta.json
READABLE_FORMATS = (1, 2)
VERIFY_MODES = ("checksum", "size")


@dataclass(frozen=True, kw_only=True)
class Data(Block):
    """Tokens: where they are, and how long a training sequence is."""

    data: str = option(
        help="DATA_DIR written by `ligo-ds prepare`, or a mixture of several by weight: web=0.7,code=0.3",
        metavar="DATA_DIR",
        identity="data",  # the DATA_DIR by its path and meta.json (session.run_identity)
    )
    seq_len: int | None = option(
        None,
        "tokens per sequence",
        shown_default=f"{DEFAULT_SEQ_LEN}, or the model's positions where fewer",
        check=at_least(1),
    )
    verify_data: str = option(
        "checksum",
        "check the shards at start: SHA-256 (each rank hashes its share) or sizes only",
        choices=VERIFY_MODES,
        identity=False,
    )
    allow_tokenizer_mismatch: bool = option(
        False,
        "use data tokenized otherwise than the model's own tokenizer (its directory's) says",
        identity=False,
    )

    def for_model(self, positions: int) -> Data:
        """This block with its sequence length decided for a model of `positions`: as given, else
        DEFAULT_SEQ_LEN or the model's positions where fewer, so the default never refuses a model (a length
        the user gave that the model cannot hold stays refused, session.check_data_fits)."""
        if self.seq_len is not None:
            return self
        return derive(self, seq_len=min(DEFAULT_SEQ_LEN, positions))

    def open(self) -> TokenData:
        """The DATA_DIR (or mixture) this block names."""
        return open_data(self.data, self.flag("data"))


def staging_dir(out: str | Path) -> Path:
    """Where `prepare` builds DATA_DIR `out` until it is complete (then renamed to `out`)."""
    out = Path(out)
    return out.with_name(f".{out.name}.prepare")


def sha256_file(path: Path, limit: int | None = None) -> str:
    """SHA-256 of a file (of its first `limit` bytes), read in blocks."""
    h = hashlib.sha256()
    left = path.stat().st_size if limit is None else limit
    with open(path, "rb") as f:
        while left > 0:
            block = f.read(min(left, 16 << 20))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest()


class TokenData:
    """A prepared DATA_DIR: meta, and its splits as memory-mapped token streams."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            unfinished = staging_dir(self.dir).is_dir()
            hint = (
                f"its `ligo-ds prepare` did not finish (its work is in {str(staging_dir(self.dir))!r}): "
                "rerun that command"
                if unfinished
                else "create it with `ligo-ds prepare`"
            )
            raise ConfigError(f"data dir {str(self.dir)!r} has no meta.json; {hint}")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{str(meta_path)!r} is not valid JSON ({e}); the data dir is corrupt") from None
        if not isinstance(self.meta, dict) or self.meta.get("format") not in READABLE_FORMATS:
            found = self.meta.get("format") if isinstance(self.meta, dict) else type(self.meta).__name__
            raise ConfigError(
                f"data dir {str(self.dir)!r} has format {found!r}, "
                f"this ligo_ds reads formats {', '.join(map(str, READABLE_FORMATS))}"
            )
        check_meta(self.meta, meta_path)
        self.vocab_size: int = self.meta["vocab_size"]
        self.eos_id: int = self.meta["eos_id"]
        self.dtype = np.dtype(self.meta["dtype"])
        self.weights = {str(self.dir): 1.0}
        self.limit: int | None = None  # the model's vocabulary, once check_model has seen it
        for split in SPLITS:
            for shard in self.shards(split):
                confined(self.dir, shard["file"], meta_path)

    @property
    def sources(self) -> list[TokenData]:
        return [self]

    def identity(self) -> dict:
        """What a run records of its data: its meta (whose shard checksums name the tokens exactly)."""
        return self.meta

    def shards(self, split: str) -> list[dict]:
        """[{file, tokens, sha256?}] of a split; format 1 has one file per split and no checksum."""
        if self.meta["format"] == 1:
            return [{"file": f"{split}.bin", "tokens": self.meta[f"{split}_tokens"]}]
        return self.meta["splits"][split]["shards"]

    def _size_problem(self, shard: dict) -> str | None:
        path = self.dir / shard["file"]
        expected = shard["tokens"] * self.dtype.itemsize
        size = path.stat().st_size if path.is_file() else None
        if size == expected:
            return None
        return (
            f"shard {str(path)!r}: {'missing' if size is None else f'{size} bytes'}, but meta.json lists "
            f"{shard['tokens']} tokens of {self.dtype.name} ({expected} bytes); the data dir is incomplete or "
            "corrupt: prepare it again"
        )

    def tokens(self, split: str) -> TokenStream:
        parts, names = [], []
        for shard in self.shards(split):
            problem = self._size_problem(shard)
            if problem:
                raise ConfigError(problem)
            if shard["tokens"]:
                parts.append(np.memmap(self.dir / shard["file"], dtype=self.dtype, mode="r"))
                names.append(str(self.dir / shard["file"]))
        return TokenStream(parts, self.dtype, names, self.limit)

    def verify(self, rank: int = 0, world: int = 1, splits: tuple[str, ...] = SPLITS) -> list[str]:
        """Problems with this rank's share of the shards (sizes, then SHA-256), one message naming each."""
        problems = []
        listed = [s for split in splits for s in self.shards(split)]
        for shard in listed[rank::world]:
            problem = self._size_problem(shard)
            if problem is None and "sha256" not in shard:  # format 1 lists none
                problem = (
                    f"data dir {str(self.dir)!r} lists no SHA-256 for {shard['file']!r} (format {self.meta['format']}, "
                    "from before checksums): prepare it again, or pass --verify-data size to check sizes only"
                )
            elif problem is None and sha256_file(self.dir / shard["file"]) != shard["sha256"]:
                problem = (
                    f"shard {str(self.dir / shard['file'])!r} does not match the SHA-256 meta.json lists for it; "
                    "the file is corrupt: prepare the data again"
                )
            if problem:
                problems.append(problem)
        return problems

    def check_model(self, vocab_size: int) -> None:
        """Refuse a model whose vocabulary cannot embed every token id in the data: by the vocabulary meta.json
        names, and by the largest id it lists per shard; from here on every read is checked too (TokenStream)."""
        if self.vocab_size > vocab_size:
            raise ConfigError(
                f"data dir {str(self.dir)!r} has a vocabulary of {self.vocab_size} tokens, larger "
                f"than the model's vocab_size {vocab_size}"
            )
        for split in SPLITS:
            for shard in self.shards(split):
                if shard.get("max_id", -1) >= vocab_size:
                    raise ConfigError(
                        f"shard {str(self.dir / shard['file'])!r} holds token ids up to {shard['max_id']} (meta.json), "
                        f"beyond the model's vocab_size {vocab_size}"
                    )
        self.limit = vocab_size

    def training(self, seq_len: int, seed: int) -> Batches:
        stream = self.tokens("train")
        order = SampleOrder(len(stream), seq_len, seed)
        return Batches(lambda first, count: ([stream], np.zeros(count, np.int64), order.starts(first, count)), seq_len)

    def validation(self) -> TokenStream:
        return self.tokens("val")


class Mixture(TokenData):
    """DATA_DIRs made with one tokenizer, mixed by weight. Reads as the first one where one is needed
    (its tokenizer, vocabulary and eos are everyone's)."""

    def __init__(self, spec: str, what: str):
        weighted = parse_weights(spec, what)
        self.parts = [TokenData(path) for path, _ in weighted]
        first = self.parts[0]
        super().__init__(first.dir)
        self.weights = {str(p.dir): w for p, (_, w) in zip(self.parts, weighted, strict=True)}
        # How a run's identity names it: every path resolved, the weights normalized.
        self.spec = ",".join(f"{p.dir.resolve()}={w:g}" for p, (_, w) in zip(self.parts, weighted, strict=True))
        from ..model.tokenizer import data_fingerprint

        theirs = data_fingerprint(first.dir, first.meta)
        for other in self.parts[1:]:
            ours = data_fingerprint(other.dir, other.meta)
            if ours != theirs or other.eos_id != first.eos_id:
                raise ConfigError(
                    f"{what} {spec!r}: {str(other.dir)!r} was tokenized with another tokenizer (fingerprint "
                    f"{ours}, eos id {other.eos_id}) than {str(first.dir)!r} ({theirs}, eos id {first.eos_id}); "
                    "a mixture needs one tokenizer: prepare them with the same --tokenizer"
                )
        self.vocab_size = max(p.vocab_size for p in self.parts)

    @property
    def sources(self) -> list[TokenData]:
        return self.parts

    def identity(self) -> dict:
        return {"mixture": [[p.meta, self.weights[str(p.dir)]] for p in self.parts]}

    def verify(self, rank: int = 0, world: int = 1, splits: tuple[str, ...] = SPLITS) -> list[str]:
        return [problem for p in self.parts for problem in p.verify(rank, world, splits)]

    def check_model(self, vocab_size: int) -> None:
        for p in self.parts:
            p.check_model(vocab_size)
        self.limit = vocab_size

    def training(self, seq_len: int, seed: int) -> Batches:
        streams = [p.tokens("train") for p in self.parts]
        orders = [SampleOrder(len(s), seq_len, seed) for s in streams]
        mix = MixtureOrder(orders, [self.weights[str(p.dir)] for p in self.parts], seed)
        batches = Batches(lambda first, count: (streams, *mix.locate(first, count)), seq_len)
        batches.consumed = lambda samples: {
            str(p.dir): n * seq_len for p, n in zip(self.parts, mix.consumed(samples), strict=True)
        }
        return batches

    def validation(self) -> TokenStream:
        """Each source's validation split cut in proportion to the weights, as one stream: the largest
        such cut that every split can give."""
        vals = [p.tokens("val") for p in self.parts]
        weights = [self.weights[str(p.dir)] for p in self.parts]
        total = int(min(len(v) / w for v, w in zip(vals, weights, strict=True)))
        cuts = apportion(total, weights)
        return TokenStream([v[:n] for v, n in zip(vals, cuts, strict=True)], self.dtype)


def open_data(spec: str | Path, what: str) -> TokenData:
    """A DATA_DIR, or a mixture `A=0.7,B=0.3` of several; `what`: the option that named it, for the messages."""
    return Mixture(str(spec), what) if "=" in str(spec) else TokenData(spec)
