"""Tokenizers as transformers' AutoTokenizer reads them: the model's own, or one trained on the corpus.

A DATA_DIR keeps its tokenizer as a tokenizer directory (tokenizer.json, tokenizer_config.json with the
special tokens set), so every HF checkpoint a run writes carries one that AutoTokenizer loads whole,
and meta.json records which token separates documents and a fingerprint of the vocabulary. The
fingerprint is what `pretrain`, `fit` and `grow` compare with the model's own tokenizer: a model trained
on one vocabulary's ids and fed another's learns nonsense without an error.

Only fast (Rust `tokenizers`) tokenizers are taken: the data is encoded by the Rust tokenizer in batches,
and the fingerprint is taken from its JSON. Nothing of a tokenizer directory runs as code.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# A directory holding any of these has a tokenizer (sentencepiece-only models ship tokenizer.model).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
# The tokenizer trained by `prepare` when none is given: GPT-2's convention, one special token for all uses.
TRAINED_SPECIAL = "<|endoftext|>"


def has_tokenizer(directory: str | Path) -> bool:
    d = Path(directory)
    return d.is_dir() and any((d / f).is_file() for f in TOKENIZER_FILES)


def load(directory: str | Path, what: str = "tokenizer directory") -> Any:
    """The tokenizer of a model or tokenizer directory, as AutoTokenizer loads it (never remote code);
    `what`: what named the directory (the user's option, its flag), for the messages."""
    from transformers import AutoTokenizer

    d = Path(directory)
    if not has_tokenizer(d):
        expected = ", ".join(TOKENIZER_FILES)
        raise ConfigError(f"{what} {str(directory)!r} holds no tokenizer (expected one of {expected})")
    try:
        tok = AutoTokenizer.from_pretrained(str(d), trust_remote_code=False)
    except Exception as e:  # transformers raises many kinds for a broken or foreign tokenizer directory
        code = _code_file(d)
        if code is not None:  # transformers' own message advises trust_remote_code=True, which ligo-ds has not
            raise ConfigError(
                f"{what} {str(directory)!r} needs its own Python code to load (auto_map in {code}); ligo-ds does "
                "not run a model's or tokenizer's own code: expected a tokenizer that transformers' classes load "
                "(a tokenizer.json)"
            ) from None
        raise ConfigError(f"{what} {str(directory)!r}: AutoTokenizer cannot load it: {_one_line(e)}") from None
    if not getattr(tok, "is_fast", False) or not hasattr(tok, "backend_tokenizer"):
        raise ConfigError(
            f"{what} {str(directory)!r} loads as {type(tok).__name__}, a slow tokenizer; expected a fast one "
            "(a tokenizer.json beside its config)"
        )
    return tok


def _code_file(directory: Path) -> str | None:
    """The file of `directory` whose auto_map points AutoTokenizer at the repository's own code, if any."""
    for name in ("tokenizer_config.json", "config.json"):
        try:
            auto_map = json.loads((directory / name).read_text()).get("auto_map")
        except (OSError, ValueError, AttributeError):  # absent, not JSON, not an object: not code either
            continue
        # tokenizer_config.json's auto_map is the tokenizer's alone (a list in older files); config.json's
        # also names the model's classes
        if auto_map and (
            name == "tokenizer_config.json" or (isinstance(auto_map, dict) and "AutoTokenizer" in auto_map)
        ):
            return name
    return None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def trained(backend: Any) -> Any:
    """A `tokenizers.Tokenizer` trained by `prepare`, wrapped with its special tokens set."""
    from transformers import PreTrainedTokenizerFast

    s = TRAINED_SPECIAL
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=s, bos_token=s, pad_token=s)


def _generation_eos(directory: Path) -> int | None:
    path = directory / "generation_config.json"
    if not path.is_file():
        return None
    ids = json.loads(path.read_text()).get("eos_token_id")
    return ids[0] if isinstance(ids, list) and ids else ids if isinstance(ids, int) else None


# A chat model's tokenizer names the end of a turn as its eos (Qwen3's <|im_end|>, Llama 3 Instruct's
# <|eot_id|>, Gemma's <end_of_turn>); the same vocabulary ends pretraining documents with another token,
# which is what continued pretraining must separate documents with. First found wins.
CHAT_TURN_ENDS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>")
DOCUMENT_ENDS = ("<|endoftext|>", "<|end_of_text|>", "<eos>", "</s>")


def document_end(tok: Any, eos: str) -> str:
    """The tokenizer's eos, or where that ends a chat turn, the vocabulary's document end if it has one."""
    if eos not in CHAT_TURN_ENDS:
        return eos
    vocab = tok.backend_tokenizer
    return next((t for t in DOCUMENT_ENDS if vocab.token_to_id(t) is not None), eos)


def separator(tok: Any, directory: str | Path | None, eos_token: str | None, what: str) -> tuple[str, int]:
    """(token, id) that ends each document: `eos_token` if given, else the tokenizer's own eos
    (tokenizer_config.json / special_tokens_map.json; document_end where it ends a chat turn), else
    generation_config.json's first eos id. `what`: the option that gives `eos_token`, for the messages."""
    backend = tok.backend_tokenizer
    where = f"the tokenizer at {str(directory)!r}" if directory else "the tokenizer"
    if eos_token is not None:
        token_id = backend.token_to_id(eos_token)
        if token_id is None:
            raise ConfigError(f"{what} {eos_token!r} is not a token of {where}")
        return eos_token, token_id
    if tok.eos_token is not None:
        token = document_end(tok, tok.eos_token)
        if token != tok.eos_token:
            print(
                f"prepare: documents end with {token!r}, not the tokenizer's eos {tok.eos_token!r} (it ends a chat "
                f"turn); {what} chooses another",
                file=sys.stderr,
            )
        return token, backend.token_to_id(token)
    token_id = _generation_eos(Path(directory)) if directory else None
    if token_id is not None:
        token = backend.id_to_token(token_id)
        if token is None:
            raise ConfigError(
                f"generation_config.json in {str(directory)!r} names eos_token_id {token_id}, outside the "
                f"tokenizer's {backend.get_vocab_size()} ids; pass {what} TOKEN"
            )
        return token, token_id
    raise ConfigError(
        f"{where} names no end-of-sequence token (no eos_token in tokenizer_config.json or "
        f"special_tokens_map.json, no eos_token_id in generation_config.json): pass {what} TOKEN, the "
        "token that separates documents"
    )


def fingerprint(tok: Any) -> str:
    """What decides which text becomes which id: the model (vocabulary, merges) and the added tokens.
    Stable across the files' formatting and across special-token settings, which change no id."""
    spec = json.loads(tok.backend_tokenizer.to_str())
    added = sorted((t["id"], t["content"]) for t in spec.get("added_tokens") or [])
    canonical = json.dumps({"model": spec.get("model"), "added_tokens": added}, sort_keys=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def save(tok: Any, eos_token: str, out: str | Path) -> None:
    """Write the tokenizer files into `out`, `eos_token` set as its eos whatever it said before."""
    tok.eos_token = eos_token
    tok.save_pretrained(str(out))


def data_fingerprint(data_dir: Path, meta: dict) -> str:
    """The fingerprint of a DATA_DIR's tokenizer; DATA_DIRs from before it was recorded get it computed."""
    return meta.get("tokenizer_fingerprint") or fingerprint(load(data_dir, "data dir"))


def mismatch(data_dir: Path, meta: dict, model: str | Path, role: str) -> tuple[str, str] | None:
    """(the data's tokenizer fingerprint, the model's) when `model`'s directory has a tokenizer that is not the
    one the data was made with; None when they match or the model has none. `role`: what named the model."""
    if not has_tokenizer(model):
        return None
    ours, theirs = data_fingerprint(data_dir, meta), fingerprint(load(model, role))
    return None if ours == theirs else (ours, theirs)


def export_files(data_dir: str | Path, eos_id: int) -> Callable[[Path], dict]:
    """For hf_save.write_checkpoint's `extra`: the data's tokenizer, eos set to the id that ended its
    documents, and a generation_config.json, so that generation stops where training learnt to."""

    def write(out: Path) -> dict:
        from transformers import GenerationConfig

        tok = load(data_dir, "data dir")
        save(tok, tok.backend_tokenizer.id_to_token(eos_id), out)
        ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": eos_id, "pad_token_id": tok.pad_token_id}
        GenerationConfig(**{k: v for k, v in ids.items() if v is not None}).save_pretrained(str(out))
        # All three go into config.json, None included: a class default (GPT-2's 50256) left in place
        # would name a token the tokenizer may not have.
        return ids

    return write
