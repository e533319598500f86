"""Hugging Face checkpoints out: `write_checkpoint` and `save_model`.

Writing streams: `write_checkpoint` lays the files out from the config and writes each (our name, tensor)
of an iterator to its place as it comes, so a caller can produce a large model block by block without
holding more than one tensor of it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError
from .config import ModelConfig
from .decoder import Decoder
from .families import ARCHITECTURES, ours_to_hf, tied_names
from .hf_load import SAFETENSORS, SAFETENSORS_INDEX

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
DEFAULT_SHARD_BYTES = 2 * 2**30

# Written into every checkpoint directory we write. A rewrite replaces a directory only when it is missing,
# empty or holds this file, so pointing --out at a folder of the user's (or at a run, or at `..`) is
# refused instead of emptying it. A hidden file, so the export still reads as a plain HF directory.
EXPORT_MARKER = ".ligo_ds_export"


# Keys of a source's config.json that send transformers to the source repository's own Python code. What we
# write is our decoder's weights in the standard class's layout (`architectures`), which that code may not
# read as we do; and a checkpoint ligo_ds wrote should load without trusting anyone's code.
CODE_KEYS = ("auto_map", "trust_remote_code")

ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


@dataclass
class _Slot:
    """Where one HF tensor goes: its shard file, byte offset in it, and what it must be."""

    shard: int
    offset: int
    shape: tuple[int, ...]


def _plan_shards(cfg: ModelConfig, dtype: torch.dtype, max_shard_bytes: int) -> tuple[dict[str, _Slot], list[dict]]:
    """Every HF tensor's slot, and each shard's safetensors header, from the config alone (the model's
    tensors on the meta device): the files can be laid out before a single weight exists."""
    with torch.device("meta"):
        model = Decoder(cfg)
    skip, size = tied_names(cfg), torch.empty((), dtype=dtype).element_size()
    slots: dict[str, _Slot] = {}
    headers: list[dict] = [{}]
    used = 0
    for ours, meta in model.state_dict().items():
        if ours in skip:
            continue
        for name, piece in ours_to_hf(cfg, ours, meta):
            nbytes = piece.numel() * size
            if headers[-1] and used + nbytes > max_shard_bytes:
                headers.append({})
                used = 0
            headers[-1][name] = {
                "dtype": ST_DTYPES[dtype],
                "shape": list(piece.shape),
                "data_offsets": [used, used + nbytes],
            }
            slots[name] = _Slot(len(headers) - 1, used, tuple(piece.shape))
            used += nbytes
    return slots, headers


def _header_bytes(header: dict) -> bytes:
    """safetensors' header: its length (8 bytes, little-endian), then JSON padded to a multiple of 8."""
    text = json.dumps({"__metadata__": {"format": "pt"}, **header}, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def write_checkpoint(
    cfg: ModelConfig,
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    out_dir: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    extra: Callable[[Path], dict] | None = None,
    guard: bool = True,
) -> Path:
    """Write our tensors as an HF checkpoint directory that transformers loads.

    The shard files are laid out from the config first (_plan_shards) and each tensor is written to its
    place as it arrives, in any order, so the writer holds one tensor at a time, never a shard: a large
    model produced block by block (the operator's grown model, a ZeRO-3 gather) streams to disk.
    The directory is assembled beside `out_dir` and renamed into place, so a crash never leaves a
    half-written checkpoint where a previous good one was. `extra` writes more files into it (the
    tokenizer) and returns the config.json entries they imply (its special token ids).

    `guard`: refuse an `out_dir` that is neither new, empty nor one of our exports (check_replaceable),
    before anything is written. Off only for a run's own hf/ folder inside its run directory.
    """
    out_dir = check_replaceable(out_dir) if guard else _absolute(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_shards(cfg, named_tensors, tmp, dtype, max_shard_bytes, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    hf = {k: v for k, v in cfg.to_hf(DTYPE_NAMES[dtype]).items() if k not in CODE_KEYS}
    hf["architectures"] = [ARCHITECTURES[cfg.model_type]]
    if extra is not None:
        hf.update(extra(tmp))
    (tmp / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    (tmp / EXPORT_MARKER).write_text(json.dumps({"written_by": "ligo_ds"}) + "\n")
    if guard:
        check_replaceable(out_dir)  # again: the folder may have been filled while the tensors streamed
    _replace_dir(tmp, out_dir)
    return out_dir


def _write_shards(
    cfg: ModelConfig,
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    tmp: Path,
    dtype: torch.dtype,
    max_shard_bytes: int,
    out_dir: Path,
) -> None:
    slots, headers = _plan_shards(cfg, dtype, max_shard_bytes)
    names = (
        [SAFETENSORS]
        if len(headers) == 1
        else [f"model-{i + 1:05d}-of-{len(headers):05d}.safetensors" for i in range(len(headers))]
    )
    files, starts = [], []
    for name, header in zip(names, headers):
        f = open(tmp / name, "wb")
        head = _header_bytes(header)
        f.write(head)
        f.truncate(len(head) + sum(end - start for start, end in (v["data_offsets"] for v in header.values())))
        files.append(f)
        starts.append(len(head))
    written: set[str] = set()
    skip = tied_names(cfg)
    try:
        for ours, tensor in named_tensors:
            if ours in skip:
                continue
            for name, piece in ours_to_hf(cfg, ours, tensor.detach().to("cpu", dtype)):
                slot = slots.get(name)
                if slot is None or slot.shape != tuple(piece.shape) or name in written:
                    raise ValueError(
                        f"writing {str(out_dir)!r}: tensor {name!r} {tuple(piece.shape)} is not one of the model's "
                        f"(expected {slot.shape if slot else 'no such tensor'}{', once' if slot else ''})"
                    )
                f = files[slot.shard]
                f.seek(starts[slot.shard] + slot.offset)
                f.write(piece.contiguous().reshape(-1).view(torch.uint8).numpy().data)
                written.add(name)
    finally:
        for f in files:
            f.close()
    missing = sorted(set(slots) - written)
    if missing:
        raise ValueError(f"writing {str(out_dir)!r}: {len(missing)} tensors never came, e.g. {missing[:3]}")
    if len(headers) > 1:
        weight_map = {name: names[slot.shard] for name, slot in slots.items()}
        total = sum(v["data_offsets"][1] - v["data_offsets"][0] for h in headers for v in h.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (tmp / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2))


def _absolute(path: str | Path) -> Path:
    # Not resolve(): a symlink stays one, so check_replaceable sees it; `.` and `..` become the folders they
    # name (whose own name the temporary sibling is built from).
    return Path(os.path.abspath(path))


def check_replaceable(out_dir: str | Path) -> Path:
    """`out_dir` made absolute, once it is a directory a checkpoint write may replace: a missing or empty one,
    or an earlier export of ours (EXPORT_MARKER). Any other is refused, naming what it holds."""
    out_dir = _absolute(out_dir)
    if out_dir.name == "":
        raise ConfigError(
            f"{str(out_dir)!r} is a filesystem root; expected a new or empty folder to write the checkpoint into"
        )
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        what = "a symbolic link" if out_dir.is_symlink() else "not a folder"
        raise ConfigError(f"{str(out_dir)!r} is {what}; expected a new or empty folder, or an earlier export")
    if not out_dir.is_dir() or (out_dir / EXPORT_MARKER).is_file():
        return out_dir
    held = sorted(p.name for p in out_dir.iterdir())
    if held:
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        raise ConfigError(
            f"{str(out_dir)!r} is not empty ({shown}) and is not a checkpoint ligo_ds wrote; nothing was "
            "written: choose a new or empty folder"
        )
    return out_dir


def _replace_dir(new: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def save_model(
    model: Decoder, out_dir: str | Path, *, dtype: torch.dtype | None = None, max_shard_bytes: int = DEFAULT_SHARD_BYTES
) -> Path:
    """Write `model` as an HF checkpoint directory (config.json + safetensors, sharded above a size)."""
    dtype = dtype or next(model.parameters()).dtype
    return write_checkpoint(
        model.cfg, model.state_dict().items(), out_dir, dtype=dtype, max_shard_bytes=max_shard_bytes
    )
