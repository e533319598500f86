"""Hugging Face checkpoints in: `load_model`, and `SourceWeights`, a checkpoint's weights under our names one
tensor at a time.

A checkpoint directory holds config.json and weights as safetensors (one file, or shards with a
`model.safetensors.index.json`), or as `pytorch_model.bin` (one file or shards with its index, zip or the
pre-1.6 format; read with weights_only=True: nothing but tensors is unpickled). Tensor names may carry the
causal-LM class's prefix or not (`_Layout`); names and layouts are translated by the tables in families.py.
What a directory holds is checked before a weight is used: an index's shards are file names inside it, and
every weight is stored as floating point.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import ConfigError
from ..folders import confined
from ..options import load_json
from .config import ModelConfig
from .config_checks import check_path
from .decoder import Decoder
from .families import ARCHITECTURES, FAMILIES, hf_names, hf_to_ours, tied_names

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
TORCH_BIN, TORCH_BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"


class CheckpointReader:
    """Lazy access to the tensors of an HF checkpoint directory, whatever its file layout."""

    def __init__(self, directory: str | Path, hint: str = ""):
        self.dir = Path(directory)
        self._files: dict[str, Path] = {}  # HF tensor name -> file holding it
        self._loaded: dict[Path, dict[str, torch.Tensor]] = {}
        if (self.dir / SAFETENSORS_INDEX).is_file() or (self.dir / TORCH_BIN_INDEX).is_file():
            index = self.dir / (SAFETENSORS_INDEX if (self.dir / SAFETENSORS_INDEX).is_file() else TORCH_BIN_INDEX)
            self._files = {name: self.dir / f for name, f in weight_map(index).items()}
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
                f"{TORCH_BIN} or {TORCH_BIN_INDEX}{hint}"
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

    def dtypes(self) -> dict[str, str]:
        """HF tensor name -> its dtype as the file stores it ("F32", "I64"; torch's names for .bin files),
        from the safetensors headers without reading a tensor."""
        out: dict[str, str] = {}
        for path in sorted(set(self._files.values())):
            if path.suffix == ".safetensors":
                try:
                    with safe_open(str(path), framework="pt") as f:
                        out.update({k: f.get_slice(k).get_dtype() for k in f.keys() if self._files.get(k) == path})
                except (SafetensorError, OSError) as e:  # a shard an index lists, opened here first
                    raise ConfigError(f"{str(path)!r} is not a readable safetensors file: {e}") from None
            else:
                out.update({k: str(t.dtype).removeprefix("torch.") for k, t in self._torch_file(path).items()})
        return out

    def _torch_file(self, path: Path) -> dict[str, torch.Tensor]:
        if path not in self._loaded:
            self._loaded[path] = _load_torch_file(path)
        return self._loaded[path]


def weight_map(index: Path) -> dict[str, str]:
    """An index file's tensor name -> shard file, each shard a plain file name in the index's folder
    (folders.confined): a name with a path in it would read another folder's weights
    (`../other_model/model.safetensors`) or any file on the machine (`/etc/passwd`). A shard that is a link
    is followed only within the folder or, for a Hugging Face cache snapshot, into its repository's blobs/."""
    weights = load_json(index, "model index").get("weight_map")
    if not isinstance(weights, dict) or not all(isinstance(f, str) for f in weights.values()):
        raise ConfigError(
            f"{str(index)!r} holds no weight_map; expected a JSON object whose weight_map maps each tensor "
            "name to its shard's file name"
        )
    folder = index.parent
    # huggingface_hub's cache: snapshots/<commit>/f -> ../../blobs/<hash>
    blobs = (folder.resolve().parent.parent / "blobs",) if folder.resolve().parent.name == "snapshots" else ()
    for file in set(weights.values()):
        confined(folder, file, index, blobs)
    return weights


def _load_torch_file(path: Path) -> dict[str, torch.Tensor]:
    """A pytorch_model.bin read as transformers reads it: weights_only=True, which unpickles tensors and
    containers only and refuses anything that would run code. Files saved before torch 1.6 (not zip
    archives) cannot be memory-mapped, so they are read whole."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on its way to refusing a file
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError:
        raise ConfigError(
            f"refusing to load {str(path)!r}: it holds pickled objects besides tensors, which would run code to "
            "load (read with weights_only=True); expected a plain tensor file, or safetensors"
        ) from None
    except Exception as e:  # a truncated or foreign file: torch raises many kinds
        raise ConfigError(f"refusing to load {str(path)!r}: not a readable tensor file ({_first_line(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise ConfigError(f"{str(path)!r} holds a {type(state).__name__}; expected a dict of tensor name -> tensor")
    return state


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


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
    renamed: Mapping[str, str]  # our table's HF name -> the name this file holds it under (Family.also_named)

    def name(self, hf_name: str) -> str:
        hf_name = self.renamed.get(hf_name, hf_name)
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
    present = set(keys)
    renamed = {
        n: other for n, other in FAMILIES[cfg.family].also_named.items() if n not in present and other in present
    }
    return _Layout(prefix=prefix if base_only else "", ignore=ignore, renamed=renamed)


class SourceWeights(Mapping):
    """An HF checkpoint directory's weights under our names, each read from disk when asked for: what a
    consumer that keeps one tensor at a time (the operator's ZeRO-3 partitions) reads a model through.
    Built after checking the files hold exactly what the config describes (every tensor and no other)."""

    def __init__(self, path: str | Path, dtype: torch.dtype = torch.float32, hint: str = ""):
        self.path, self.dtype = Path(path), dtype
        self.cfg = ModelConfig.from_file(self.path)
        self.reader = CheckpointReader(self.path, hint)  # `hint`: what the caller takes besides a checkpoint
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
        self.used = used  # the file's names of the tensors read (not the buffers it may carry besides)
        _check_floating(self.path, {k: v for k, v in self.reader.dtypes().items() if k in used})
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

    def check_finite(self) -> None:
        """Refuse weights holding NaN or inf, naming the first such tensor: reading every tensor once, one at
        a time. Whatever is grown or trained from them is NaN from the first step, which would read as
        divergence (a lower learning rate does not cure it) and, with nothing to train, be written out."""
        for name in (k for k in self.reader.keys() if k in self.used):
            t = self.reader.get(name)
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                what = "NaN" if bool(t.isnan().any()) else "inf"
                raise ConfigError(
                    f"checkpoint {str(self.path)!r}: tensor {name!r} holds {what} values; expected finite weights"
                )

    def __getitem__(self, ours: str) -> torch.Tensor:
        shape = self.shapes[ours]
        read = "tok_emb.weight" if ours in self.tied else ours  # a tied head is the embedding
        return hf_to_ours(self.cfg, read, shape, lambda n: self.reader.get(self.layout.name(n))).to(self.dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


# Stored dtypes a weight may have: the safetensors names, and torch's for .bin files.
FLOATING = {"F64", "F32", "F16", "BF16", "float64", "float32", "float16", "bfloat16"}


def _check_floating(path: Path, dtypes: dict[str, str]) -> None:
    """Refuse a weight stored as integers or booleans: converted to float it would load silently as whole
    numbers, which no trained model holds."""
    for name, dtype in sorted(dtypes.items()):
        if dtype not in FLOATING:
            raise ConfigError(
                f"checkpoint {str(path)!r}: tensor {name!r} is stored as {dtype}; expected a floating-point weight "
                "(float32, float16 or bfloat16)"
            )


def load_model(path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Decoder:
    """An HF checkpoint directory -> our Decoder with its weights; a config.json file -> random init."""
    path = Path(path)
    check_path(path, "model path", "an HF checkpoint directory or a config.json file")
    if path.is_file():
        cfg = ModelConfig.from_file(path)
        return Decoder(cfg).to(device=device, dtype=dtype)
    weights = SourceWeights(path, dtype, hint=" (or pass a config.json file for a random init)")
    with torch.device("meta"):
        model = Decoder(weights.cfg)
    state = {k: weights[k] for k in weights if k not in weights.tied}
    model.load_state_dict({**state, **{k: state["tok_emb.weight"] for k in weights.tied}}, assign=True)
    model.tie_weights()
    return model.to(device)
