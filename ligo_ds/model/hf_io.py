"""Hugging Face checkpoints in and out: `load_model` and `save_model`.

A checkpoint directory holds config.json and weights as safetensors (one file, or shards with a
`model.safetensors.index.json`), or as `pytorch_model.bin` (one file or shards with its index; read with
weights_only=True: user files are never unpickled). Tensor names may carry the causal-LM class's prefix
or not (`_Layout`); names and layouts are translated by the tables in families.py.

Writing streams: `write_checkpoint` lays the files out from the config and writes each (our name,
tensor) of an iterator to its place as it comes, so a caller can produce a large model block by block
without holding more than one tensor of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import ConfigError
from .config import ModelConfig
from .decoder import Decoder
from .families import ARCHITECTURES, FAMILIES, template

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
TORCH_BIN, TORCH_BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
DEFAULT_SHARD_BYTES = 2 * 2**30


# ---- reading --------------------------------------------------------------------------------------


class CheckpointReader:
    """Lazy access to the tensors of an HF checkpoint directory, whatever its file layout."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self._files: dict[str, Path] = {}  # HF tensor name -> file holding it
        self._loaded: dict[Path, dict[str, torch.Tensor]] = {}
        if (self.dir / SAFETENSORS_INDEX).is_file() or (self.dir / TORCH_BIN_INDEX).is_file():
            index = self.dir / (SAFETENSORS_INDEX if (self.dir / SAFETENSORS_INDEX).is_file() else TORCH_BIN_INDEX)
            weight_map = json.loads(index.read_text())["weight_map"]
            self._files = {name: self.dir / f for name, f in weight_map.items()}
            missing = sorted({str(f) for f in self._files.values() if not f.is_file()})
            if missing:
                raise ConfigError(
                    f"checkpoint {str(self.dir)!r}: {index.name} lists shard files that do "
                    f"not exist: {', '.join(missing)}"
                )
        elif (self.dir / SAFETENSORS).is_file():
            self._files = {name: self.dir / SAFETENSORS for name in self._safetensors_keys(self.dir / SAFETENSORS)}
        elif (self.dir / TORCH_BIN).is_file():
            self._files = {name: self.dir / TORCH_BIN for name in self._torch_file(self.dir / TORCH_BIN)}
        else:
            raise ConfigError(
                f"no weights in {str(self.dir)!r}: expected {SAFETENSORS}, {SAFETENSORS_INDEX}, "
                f"{TORCH_BIN} or {TORCH_BIN_INDEX} (pass a config.json file for a random init)"
            )

    def keys(self) -> list[str]:
        return list(self._files)

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def get(self, name: str) -> torch.Tensor:
        path = self._files[name]
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt") as f:
                    return f.get_tensor(name)
            except (SafetensorError, OSError) as e:
                raise ConfigError(f"cannot read tensor {name!r} from {str(path)!r}: {e}") from None
        return self._torch_file(path)[name]

    @staticmethod
    def _safetensors_keys(path: Path) -> list[str]:
        try:
            with safe_open(str(path), framework="pt") as f:
                return list(f.keys())
        except (SafetensorError, OSError) as e:
            raise ConfigError(f"{str(path)!r} is not a readable safetensors file: {e}") from None

    def _torch_file(self, path: Path) -> dict[str, torch.Tensor]:
        if path not in self._loaded:
            try:
                self._loaded[path] = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:  # weights_only refuses pickled code with an UnpicklingError
                raise ConfigError(
                    f"refusing to load {str(path)!r}: not a plain tensor file (read with weights_only=True): {e}"
                ) from None
        return self._loaded[path]


def _expected_hf_shapes(cfg: ModelConfig, ours: str, shape: torch.Size) -> list[tuple[int, ...]]:
    family = FAMILIES[cfg.family]
    tmpl, _ = template(ours)
    if tmpl in family.split:
        return [(getattr(cfg, attr), *shape[1:]) for attr in family.split[tmpl]]
    if tmpl in family.transposed:
        return [tuple(reversed(shape))]
    return [tuple(shape)]


def hf_names(cfg: ModelConfig, ours: str) -> list[str]:
    tmpl, layer = template(ours)
    return [n.format(layer) for n in FAMILIES[cfg.family].names[tmpl]]


def hf_to_ours(cfg: ModelConfig, ours: str, shape: torch.Size, get: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """Assemble our tensor `ours` of `shape` from the HF tensors `get` returns, checking every shape."""
    names = hf_names(cfg, ours)
    pieces = []
    for name, expected in zip(names, _expected_hf_shapes(cfg, ours, shape)):
        t = get(name)
        if tuple(t.shape) != expected:
            raise ConfigError(
                f"checkpoint tensor {name!r} has shape {tuple(t.shape)}, but the config expects {expected}"
            )
        pieces.append(t)
    t = torch.cat(pieces, dim=0) if len(pieces) > 1 else pieces[0]
    # Contiguous: a transposed view would stay strided in the model (slower, and ZeRO-3 refuses it).
    return t.t().contiguous() if template(ours)[0] in FAMILIES[cfg.family].transposed else t


def ours_to_hf(cfg: ModelConfig, ours: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Split and lay out one of our tensors as the HF tensors it stands for."""
    family = FAMILIES[cfg.family]
    tmpl, _ = template(ours)
    if tmpl in family.transposed:
        tensor = tensor.t()
    if tmpl in family.split:
        pieces = tensor.split([getattr(cfg, attr) for attr in family.split[tmpl]], dim=0)
    else:
        pieces = (tensor,)
    return [(name, p.contiguous()) for name, p in zip(hf_names(cfg, ours), pieces)]


def tied_names(cfg: ModelConfig) -> set[str]:
    """Our names that alias another parameter and are neither read nor written."""
    return {"lm_head.weight"} if cfg.tie_embeddings else set()


@dataclass(frozen=True)
class _Layout:
    """How a checkpoint's tensor names relate to the full model class's names.

    Hub files come in two layouts: the causal-LM class's own (`transformer.h.0...`, `model.layers.0...`)
    and the base model's, saved without its prefix and without a head (`h.0...`, `wte.weight`: the
    original GPT-2 checkpoints). Which one a file is, and what it may carry besides weights, is taken
    from the transformers class (its base_model_prefix and the keys it ignores on load).
    """

    prefix: str  # "transformer." to strip from our HF names, or "" for the class's own layout
    ignore: tuple[str, ...]  # regexes of tensors that are not weights

    def name(self, hf_name: str) -> str:
        return hf_name[len(self.prefix) :] if self.prefix and hf_name.startswith(self.prefix) else hf_name

    def ignored(self, name: str) -> bool:
        return any(re.search(pattern, name) for pattern in self.ignore)


def _layout(cfg: ModelConfig, keys: list[str]) -> _Layout:
    import transformers  # the class's own knowledge of its files; only loading a checkpoint needs it

    cls = getattr(transformers, ARCHITECTURES[cfg.model_type])
    prefix = f"{cls.base_model_prefix}."
    # transformers searches its patterns anywhere in a name; anchored to whole name parts here, so that
    # "attn.bias" (GPT-2's mask buffer) cannot excuse an unused "h.5.attn.c_attn.bias" (a weight).
    ignore = tuple(rf"(^|\.){p}$" for p in cls._keys_to_ignore_on_load_unexpected or ())
    ignore += tuple(re.escape(suffix) + "$" for suffix in FAMILIES[cfg.family].buffer_suffixes)
    base_only = not any(k.startswith(prefix) for k in keys)
    return _Layout(prefix=prefix if base_only else "", ignore=ignore)


class SourceWeights(Mapping):
    """An HF checkpoint directory's weights under our names, each read from disk when asked for: what a
    consumer that keeps one tensor at a time (the operator's ZeRO-3 partitions) reads a model through.
    Built after checking the files hold exactly what the config describes (every tensor and no other)."""

    def __init__(self, path: str | Path, dtype: torch.dtype = torch.float32):
        self.path, self.dtype = Path(path), dtype
        self.cfg = ModelConfig.from_file(self.path)
        self.reader = CheckpointReader(self.path)
        self.layout = _layout(self.cfg, self.reader.keys())
        with torch.device("meta"):
            self.shapes = {k: p.shape for k, p in Decoder(self.cfg).state_dict().items()}
        self.tied = tied_names(self.cfg)
        used = set()
        where = f" (a base-model checkpoint: names without {self.layout.prefix!r})" if self.layout.prefix else ""
        for ours in self.shapes:
            if ours in self.tied:
                continue
            for hf_name in hf_names(self.cfg, ours):
                name = self.layout.name(hf_name)
                if name not in self.reader:
                    where = (
                        f" (a base-model checkpoint: names without {self.layout.prefix!r})"
                        if self.layout.prefix
                        else ""
                    )
                    raise ConfigError(
                        f"checkpoint {str(self.path)!r}{where} lacks tensor {name!r} that its config requires"
                    )
                used.add(name)
        extra = [
            k
            for k in self.reader.keys()
            if k not in used and not self.layout.ignored(k) and not (k == "lm_head.weight" and self.tied)
        ]
        if extra:
            shown = ", ".join(sorted(extra)[:8]) + (" ..." if len(extra) > 8 else "")
            raise ConfigError(
                f"checkpoint {str(self.path)!r} has {len(extra)} tensor(s) its config does not describe: {shown}"
            )

    def __getitem__(self, ours: str) -> torch.Tensor:
        shape = self.shapes[ours]
        read = "tok_emb.weight" if ours in self.tied else ours  # a tied head is the embedding
        return hf_to_ours(self.cfg, read, shape, lambda n: self.reader.get(self.layout.name(n))).to(self.dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def load_model(path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Decoder:
    """An HF checkpoint directory -> our Decoder with its weights; a config.json file -> random init."""
    path = Path(path)
    if path.is_file():
        cfg = ModelConfig.from_file(path)
        return Decoder(cfg).to(device=device, dtype=dtype)
    if not path.is_dir():
        raise ConfigError(
            f"model path {str(path)!r} does not exist (expected an HF checkpoint directory or a config.json file)"
        )
    weights = SourceWeights(path, dtype)
    with torch.device("meta"):
        model = Decoder(weights.cfg)
    state = {k: weights[k] for k in weights if k not in weights.tied}
    model.load_state_dict({**state, **{k: state["tok_emb.weight"] for k in weights.tied}}, assign=True)
    model.tie_weights()
    return model.to(device)


# ---- writing --------------------------------------------------------------------------------------


# safetensors' names of the dtypes we write
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
) -> Path:
    """Write our tensors as an HF checkpoint directory that transformers loads.

    The shard files are laid out from the config first (_plan_shards) and each tensor is written to its
    place as it arrives, in any order, so the writer holds one tensor at a time, never a shard: a large
    model produced block by block (the operator's grown model, a ZeRO-3 gather) streams to disk.
    The directory is assembled beside `out_dir` and renamed into place, so a crash never leaves a
    half-written checkpoint where a previous good one was. `extra` writes more files into it (the
    tokenizer) and returns the config.json entries they imply (its special token ids).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_shards(cfg, named_tensors, tmp, dtype, max_shard_bytes, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    hf = cfg.to_hf(DTYPE_NAMES[dtype])
    hf["architectures"] = [ARCHITECTURES[cfg.model_type]]
    if extra is not None:
        hf.update(extra(tmp))
    (tmp / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
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
