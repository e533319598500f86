"""Where `prepare`'s documents come from, read as a stream of chunks that each know their place.

A source is a list of pieces (files, or one Hub dataset split) read in a fixed order. Reading yields
chunks of a few MB: a chunk carries raw payload for a tokenizing worker (JSON lines as bytes, whole
text files as bytes, or strings from Parquet and the Hub) and the cursor just after it, (piece index,
position in the piece). A cursor is all that `prepare` needs to resume: byte offsets for JSON lines,
rows for Parquet and the Hub, whole files for text. Nothing here holds more than one chunk, and the
main process only reads bytes: decoding, JSON parsing and UTF-8 checks happen in the workers
(encoding.texts), which name the file and byte offset of a bad document.

Kinds of piece, by file name: .txt (a document per file) and the standard library's .py files;
.jsonl / .json (JSON lines; a .json that holds one array is read whole), also gzip-compressed
(.jsonl.gz, .json.gz); .parquet; and `hub:NAME`, streamed through `datasets` from the user's HF cache.
"""

from __future__ import annotations

import gzip
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

# Bytes per worker task: large enough that IPC is noise, small enough to keep many in flight. The
# variable exists for the tests, whose corpora are a few MB.
CHUNK_BYTES = int(os.environ.get("LIGO_DS_CHUNK_BYTES", 4 << 20))
ROWS_PER_CHUNK = 1024  # Parquet and Hub rows per task (their strings are already decoded)
_EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}

# file name ending -> kind of piece; the longest matching ending wins (.jsonl.gz before .gz)
KINDS = {
    ".txt": "text",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".jsonl.gz": "jsonl",
    ".json.gz": "jsonl",
    ".parquet": "parquet",
}


@dataclass(frozen=True)
class Piece:
    """One file (or one Hub split) of a source."""

    name: str  # a path, or hub:NAME
    kind: str  # text | jsonl | parquet | hub
    size: int | None  # bytes on disk, None for a stream of unknown size
    mtime_ns: int | None = None

    @property
    def fingerprint(self) -> list:
        """What a resumed `prepare` compares: a file edited in between is not the file it read."""
        return [self.name, self.size, self.mtime_ns]


@dataclass(frozen=True)
class Chunk:
    """Raw documents for one worker task and where the source stands after them."""

    payload: tuple  # (kind, ...) as `texts` reads it
    cursor: tuple[int, int]  # (piece index, position in that piece) just after this chunk
    nbytes: int  # bytes read from disk for it, for progress


@dataclass(frozen=True)
class HubSpec:
    name: str
    config: str | None
    split: str
    data_files: tuple[str, ...]


# ---- finding the pieces ----------------------------------------------------------------------------


def kind_of(path: Path) -> str | None:
    """The file's kind by its name's ending; a file with another ending (or none: LICENSE, GPL-3,
    Apache-2.0) is plain text when it looks like text, else None."""
    name = path.name
    endings = sorted((e for e in KINDS if name.endswith(e)), key=len, reverse=True)
    if endings:
        return KINDS[endings[0]]
    return "text" if looks_like_text(path) else None


def looks_like_text(path: Path, probe: int = 8192) -> bool:
    """UTF-8 without NUL bytes in its first `probe` bytes (a character cut at the end of the probe allowed)."""
    try:
        with open(path, "rb") as f:
            head = f.read(probe)
    except OSError:
        return False
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3 and e.reason == "unexpected end of data"
    return True


def stdlib_files() -> list[Path]:
    """The standard library's own .py files in sorted order, without tests and installed packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if _EXCLUDED_DIRS.intersection(rel.parts[:-1]) or rel.name.startswith("test_"):
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def local_files(paths: list[str]) -> list[Path]:
    """Expand files and folders into the supported files they hold, sorted within each folder."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            # hidden files and folders (.git, .DS_Store) are no part of a corpus
            visible = (f for f in p.rglob("*") if not any(part.startswith(".") for part in f.relative_to(p).parts))
            found = sorted(f for f in visible if f.is_file() and kind_of(f))
            if not found:
                raise ConfigError(f"folder {str(p)!r} holds no {'/'.join(KINDS)} files nor plain text")
            out.extend(found)
        elif p.is_file():
            if kind_of(p) is None:
                raise ConfigError(
                    f"{str(p)!r}: unsupported file type; expected plain UTF-8 text or a name ending in "
                    f"{', '.join(KINDS)}"
                )
            out.append(p)
        else:
            raise ConfigError(f"corpus path {str(p)!r} does not exist")
    return out


def _file_piece(path: Path, kind: str) -> Piece:
    st = path.stat()
    return Piece(str(path), kind, st.st_size, st.st_mtime_ns)


def pieces(source: str, hub: HubSpec | None) -> list[Piece]:
    if source == "stdlib":
        files = stdlib_files()
        if not files:
            raise ConfigError(f"no .py files found under the standard library {sysconfig.get_paths()['stdlib']!r}")
        return [_file_piece(f, "text") for f in files]
    if hub is not None:
        return [Piece(f"hub:{hub.name}", "hub", None)]
    return [_file_piece(f, kind_of(f)) for f in local_files(source.split(","))]


# ---- reading chunks ----------------------------------------------------------------------------------


def chunks(parts: list[Piece], start: tuple[int, int], text_field: str, hub: HubSpec | None = None) -> Iterator[Chunk]:
    """The source's chunks from cursor `start` on, in order."""
    index, pos = start
    while index < len(parts):
        piece = parts[index]
        if piece.kind == "text":
            # Whole small files batched into one task; a cursor between files is (next file, 0).
            batch, nbytes = [], 0
            while index < len(parts) and parts[index].kind == "text" and (not batch or nbytes < CHUNK_BYTES):
                data = Path(parts[index].name).read_bytes()
                batch.append((parts[index].name, data))
                nbytes += len(data)
                index += 1
            yield Chunk(("files", batch), (index, 0), nbytes)
            pos = 0
            continue
        reader = {"jsonl": _jsonl_chunks, "parquet": _parquet_chunks, "hub": _hub_chunks}[piece.kind]
        for payload, after, nbytes in reader(piece, pos, text_field, hub):
            yield Chunk(payload, (index, after), nbytes)
        index, pos = index + 1, 0


def _jsonl_chunks(piece: Piece, pos: int, text_field: str, _hub) -> Iterator[tuple[tuple, int, int]]:
    """Blocks of whole lines; positions are offsets in the (decompressed) text."""
    path = Path(piece.name)
    gz = path.name.endswith(".gz")
    with open(path, "rb") as raw:
        f = gzip.GzipFile(fileobj=raw) if gz else raw
        head = f.read(64).lstrip()
        f.seek(0)
        if pos == 0 and head.startswith(b"["):  # one JSON array: read whole (it cannot be streamed)
            yield ("array", piece.name, f.read(), text_field), 1, piece.size or 0
            return
        if head.startswith(b"[") and pos == 1:
            return
        f.seek(pos)
        tail = b""
        last_disk = raw.tell()
        while True:
            block = f.read(CHUNK_BYTES)
            if not block:
                break
            block = tail + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a block: keep reading
                tail = block
                continue
            body, tail = block[:cut], block[cut:]
            disk = raw.tell()
            yield ("lines", piece.name, pos, body, text_field), pos + len(body), disk - last_disk
            pos, last_disk = pos + len(body), disk
        if tail.strip():
            yield ("lines", piece.name, pos, tail, text_field), pos + len(tail), raw.tell() - last_disk


def _parquet_chunks(piece: Piece, pos: int, text_field: str, _hub) -> Iterator[tuple[tuple, int, int]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(piece.name)
    except Exception as e:  # pyarrow raises ArrowInvalid and OSError kinds for a file that is not Parquet
        raise ConfigError(f"{piece.name!r} cannot be read as Parquet: {e}") from None
    columns = pf.schema_arrow.names
    if text_field not in columns:
        raise ConfigError(
            f"{piece.name}: no text field {text_field!r}; columns are {columns} (choose one with --text-field)"
        )
    total = pf.metadata.num_rows
    per_row = (piece.size or 0) / max(total, 1)
    # Skip whole row groups before the cursor without reading them.
    groups, first = [], 0
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if groups or first + n > pos:
            groups.append(g)
        else:
            first += n
    row = first
    for batch in pf.iter_batches(batch_size=ROWS_PER_CHUNK, row_groups=groups, columns=[text_field]):
        texts = batch.column(0).to_pylist()
        begin, row = row, row + len(texts)
        if row <= pos:  # inside the first group kept: rows already done
            continue
        yield ("texts", piece.name, texts[max(pos - begin, 0) :]), row, int(per_row * len(texts))


def open_hub(hub: HubSpec):
    """The Hub split as a streaming `datasets.IterableDataset`, through the user's HF cache."""
    import datasets

    try:
        return datasets.load_dataset(
            hub.name, hub.config, split=hub.split, data_files=list(hub.data_files) or None, streaming=True
        )
    except Exception as e:  # datasets raises many kinds: missing offline, no such config or split, network
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"cannot load hub dataset {hub.name!r} (subset {hub.config!r}, split {hub.split!r}): {first}. "
            "Offline (HF_DATASETS_OFFLINE=1) it must be in your HF cache already; or give local files"
        ) from None


def _hub_chunks(piece: Piece, pos: int, text_field: str, hub: HubSpec) -> Iterator[tuple[tuple, int, int]]:
    ds = open_hub(hub)
    names = ds.column_names
    if names is not None and text_field not in names:
        raise ConfigError(
            f"{piece.name}: no text field {text_field!r}; columns are {names} (choose one with --text-field)"
        )
    # A stream cannot seek: a resume reads past the rows already done (they are not tokenized again).
    rows = iter(ds.skip(pos) if pos else ds)
    while True:
        texts = []
        for row in rows:
            if text_field not in row:
                raise ConfigError(f"{piece.name}: row {pos + len(texts)} has no field {text_field!r}")
            texts.append(row[text_field])
            if len(texts) == ROWS_PER_CHUNK:
                break
        if not texts:
            return
        pos += len(texts)
        yield ("texts", piece.name, texts), pos, sum(len(t) for t in texts if isinstance(t, str))
