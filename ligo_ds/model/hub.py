"""Hugging Face Hub ids where a model, config or tokenizer directory is expected: ORG/NAME[@REVISION].

An existing local path always wins. Anything else shaped like a Hub id is resolved with huggingface_hub
to a snapshot directory: downloaded when online, taken from the local cache when HF_HUB_OFFLINE=1, so a
cluster's compute nodes work from a cache filled on a login node. The snapshot directory's name is the
commit, which is what a run records (`resolutions`) and what its identity holds through the path: a
resume against another commit of the same id is refused.

Only weights, configs and tokenizer files are fetched; a repository's code never is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ConfigError

_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
# What each kind of option needs of a repository: a config or a tokenizer is its small files (configs,
# tokenizer files); a model adds its weights, safetensors preferred, .bin files fetched only without them.
_SMALL_FILES = ["*.json", "tokenizer.model", "*.txt", "*.tiktoken"]
KINDS = {"config": _SMALL_FILES, "tokenizer": _SMALL_FILES, "model": [*_SMALL_FILES, "*.safetensors"]}
_BIN_PATTERNS = ["*.bin"]

_resolved: dict[str, dict[str, str]] = {}


def parse(spec: str) -> tuple[str, str | None] | None:
    """(repo id, revision) when `spec` is shaped like a Hub id, else None."""
    m = _HUB_ID.match(spec)
    return (m["repo"], m["revision"]) if m else None


def resolve(spec: str | None, flag: str, kind: str = "model") -> str | None:
    """A local path for `spec`: itself when it exists (or is not a Hub id), else the Hub snapshot's
    directory holding what a `kind` (a key of KINDS) needs."""
    if spec is None or Path(spec).exists():
        return spec
    parsed = parse(spec)
    if parsed is None:
        return spec  # a missing local path: the command's own check names it
    repo, revision = parsed
    snapshot = Path(_download(repo, revision, flag, KINDS[kind]))
    if kind == "model" and not any(snapshot.glob("*.safetensors")):
        snapshot = Path(_download(repo, revision, flag, KINDS[kind] + _BIN_PATTERNS))
    _resolved[flag] = {"id": repo, "revision": revision or "main", "commit": snapshot.name, "path": str(snapshot)}
    return str(snapshot)


def _download(repo: str, revision: str | None, flag: str, patterns: list[str]) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    at = f"@{revision}" if revision else ""
    try:
        return snapshot_download(repo, revision=revision, allow_patterns=patterns)
    except RevisionNotFoundError:
        raise ConfigError(f"{flag} {repo}{at}: the Hub repository has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise ConfigError(
            f"{flag} {repo}{at} is neither a local path nor a model on the Hub (or it is private: log in "
            "with `hf auth login`)"
        ) from None
    except LocalEntryNotFoundError:
        what = f"revision {revision!r} of Hub model {repo!r}" if revision else f"Hub model {repo!r}"
        why = "HF_HUB_OFFLINE=1 forbids downloading it" if offline else "the Hub cannot be reached"
        raise ConfigError(
            f"{flag} {repo}{at}: no such local path, and {what} is not in the local Hugging Face cache "
            f"({_cache_dir()}); {why}"
        ) from None
    except HFValidationError as e:
        raise ConfigError(f"{flag} {repo}{at} is not a valid Hub id: {e}") from None


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def resolutions() -> dict[str, dict[str, str]]:
    """flag -> {id, revision, commit, path} of every Hub id this process resolved, for the run record."""
    return dict(_resolved)
