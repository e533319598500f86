"""What a prepare job is (prepare_job.json: the options that decide its output, and the source files'
sizes and times) and where it stands: whether DATA_DIR or its staging directory holds this job's finished
output, its unfinished work, or another job's."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import ConfigError
from ..folders import LOCK_FILE, hold
from ..options import Command, flat_identity, load_json
from . import sources
from .reading import FORMAT_VERSION
from .shards import write_json_synced

JOB_FILE = "prepare_job.json"


def job_of(opts: Command, parts: list[sources.Piece]) -> dict:
    """What decides the output: the options (but where it goes and how many workers) and the source's
    files with their sizes and modification times."""
    options = flat_identity(opts)
    return {"format": FORMAT_VERSION, "options": options, "files": [p.fingerprint for p in parts]}


def _differences(old: dict, new: dict) -> list[str]:
    out = [
        f"{k}: {old['options'].get(k)!r} -> {new['options'].get(k)!r}"
        for k in sorted(set(old.get("options", {})) | set(new["options"]))
        if old.get("options", {}).get(k) != new["options"].get(k)
    ]
    if old.get("format") != new["format"]:
        out.append(f"format: {old.get('format')!r} -> {new['format']!r}")
    old_files, new_files = old.get("files", []), new["files"]
    if old_files != new_files:
        changed = next(
            (f"{a[0]} (size, mtime {a[1:]} -> {b[1:]})" for a, b in zip(old_files, new_files, strict=False) if a != b),
            f"{len(old_files)} -> {len(new_files)} files",
        )
        out.append(f"source files: {changed}")
    return out


def _refusal(where: Path, differences: list[str], opts: Command) -> ConfigError:
    return ConfigError(
        f"{str(where)!r} holds the output of another prepare command ({'; '.join(differences)}); "
        f"give another {opts.flag('out')}, rerun the same command to resume it, or pass {opts.flag('force')} to "
        "replace it"
    )


def claim(out: Path, staging: Path, job: dict, opts: Command) -> str:
    """'complete' (out is this command's finished output), 'resume' (staging holds this command's
    unfinished work) or 'fresh'. Refuses an --out or staging directory that holds something else unless
    --force, which starts over (out itself is replaced only once the new output is complete, and only when it
    is a DATA_DIR: --force never deletes a folder prepare did not write). The staging directory's lock
    (folders.py) is held from here on: a second prepare of the same --out is refused naming this one."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"{opts.flag('out')} {str(out)!r} is not a folder")
    if out.exists() and any(out.iterdir()):
        if not ((out / JOB_FILE).is_file() or (out / "meta.json").is_file()):
            raise ConfigError(
                f"{opts.flag('out')} {str(out)!r} exists, is not empty and is not a DATA_DIR; prepare writes a new "
                f"or empty folder, or replaces a DATA_DIR (with {opts.flag('force')}), never a folder of other files"
            )
        if not opts.force:
            if not (out / JOB_FILE).is_file():  # a DATA_DIR from before prepare_job.json
                raise ConfigError(
                    f"{opts.flag('out')} {str(out)!r} holds a DATA_DIR this command did not write; pass "
                    f"{opts.flag('force')} to replace it"
                )
            differences = _differences(load_json(out / JOB_FILE, "prepare job record"), job)
            if differences:
                raise _refusal(out, differences, opts)
            return "complete"
    # Compared before the lock, so that a refusal creates nothing; and again under it.
    _resumable(staging, job, opts)
    hold(staging, opts.flag("out"))
    if _resumable(staging, job, opts):
        return "resume"
    for stale in staging.iterdir():
        if stale.name != LOCK_FILE:
            shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
    write_json_synced(staging / JOB_FILE, job)
    return "fresh"


def _resumable(staging: Path, job: dict, opts: Command) -> bool:
    """Whether `staging` holds this job's unfinished work (--force discards any); another job's is refused."""
    if opts.force or not (staging / JOB_FILE).is_file():
        return False
    differences = _differences(load_json(staging / JOB_FILE, "prepare job record"), job)
    if differences:
        raise _refusal(staging, differences, opts)
    return True
