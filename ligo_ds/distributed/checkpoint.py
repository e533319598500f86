"""Checkpoints: DeepSpeed's shards plus ours. A checkpoint counts only once it is complete: `latest` moves
after every rank's files are on disk, synced, and listed with their sizes in a manifest; a checkpoint
with a missing or truncated file is refused by name rather than half-loaded. Written by N ranks and
read by M, it is converted once to DeepSpeed's universal layout. Loading repairs two DeepSpeed 0.19.8
bugs in the optimizer state it restores."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import ConfigError
from ..faults import crash_point
from .launch import barrier, broadcast_object

MANIFEST = "ligo_manifest.json"


def save_checkpoint(engine, ckpt_dir: Path, tag: str, client_state: dict, rank: int) -> None:
    """Save every rank's shard, then, once all are on disk, point `latest` at `tag` (atomically).

    DeepSpeed's own `latest` is written without syncing the files it points to; ours moves only after
    every rank has fsynced its files and passed a barrier, so a crash never leaves it at a partial tag.
    """
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    crash_point("checkpoint")  # a no-op unless a reliability test asks
    os.sync()
    barrier()
    if rank == 0:
        # The manifest: which files make this checkpoint complete, and the world that wrote it.
        files = {
            str(p.relative_to(ckpt_dir / tag)): p.stat().st_size
            for p in sorted((ckpt_dir / tag).rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        manifest = {
            "tag": tag,
            "world_size": dist.get_world_size() if dist.is_initialized() else 1,
            "zero_stage": engine.zero_optimization_stage(),
            "files": files,
        }
        _write_synced(ckpt_dir / tag / MANIFEST, json.dumps(manifest, indent=1))
        tmp = ckpt_dir / f".latest.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(tag)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, ckpt_dir / "latest")
        _fsync_dir(ckpt_dir)
    barrier()


def _write_synced(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(ckpt_dir: Path, tag: str) -> dict:
    """The manifest of a checkpoint, after checking every file it lists is there with its size."""
    if not (ckpt_dir / tag).is_dir():
        have = ", ".join(sorted(step_tags(ckpt_dir), key=step_of)) or "none"
        raise ConfigError(
            f"no checkpoint {tag!r} in {str(ckpt_dir)!r} (there: {have}; --keep-last and --keep-every decide "
            "which a run keeps)"
        )
    path = ckpt_dir / tag / MANIFEST
    if not path.is_file():
        raise ConfigError(
            f"checkpoint {str(ckpt_dir / tag)!r} has no {MANIFEST}: it was not completed by ligo_ds "
            "(or was damaged); restore it or remove the directory and the `latest` pointer"
        )
    manifest = json.loads(path.read_text())
    problems = []
    for name, size in manifest["files"].items():
        f = ckpt_dir / tag / name
        if not f.is_file():
            problems.append(f"missing {name}")
        elif f.stat().st_size != size:
            problems.append(f"{name} has {f.stat().st_size} bytes, {size} were written")
    if problems:
        raise ConfigError(
            f"checkpoint {str(ckpt_dir / tag)!r} is incomplete: {'; '.join(problems)}. Restore the "
            "files, or point checkpoints/latest at an earlier complete tag"
        )
    return manifest


# ---- retention -------------------------------------------------------------------------------------
# A checkpoint is pruned by renaming it to .pruned-TAG (atomic) and then deleting that: a kill at any point
# leaves each tag whole or gone, and what is left of a .pruned- directory is deleted by the next prune.
_STEP_TAG = re.compile(r"step(\d+)")
PRUNED = ".pruned-"


def step_of(tag: str) -> int:
    return int(_STEP_TAG.fullmatch(tag).group(1))


def step_tags(ckpt_dir: Path) -> list[str]:
    """The trainer's checkpoints in `ckpt_dir` (stepN), without their universal conversions."""
    if not ckpt_dir.is_dir():
        return []
    return [p.name for p in ckpt_dir.iterdir() if p.is_dir() and _STEP_TAG.fullmatch(p.name)]


def to_prune(tags: list[str], latest: str, keep_last: int, keep_every: int | None) -> list[str]:
    """The tags retention removes: all but the newest `keep_last`, those at multiples of `keep_every` steps,
    and `latest` (whatever its step: a resume and a rollback load it)."""
    newest = sorted(tags, key=step_of)[-keep_last:]
    kept = {latest, *newest, *(t for t in tags if keep_every and step_of(t) % keep_every == 0)}
    return sorted((t for t in tags if t not in kept), key=step_of)


def prune(ckpt_dir: Path, keep_last: int, keep_every: int | None) -> list[str]:
    """Apply retention to `ckpt_dir` after a save (rank 0 only); returns the tags removed. A tag's universal
    conversion (stepN_universal) goes with it."""
    for leftover in ckpt_dir.glob(f"{PRUNED}*"):  # a prune killed half-way
        shutil.rmtree(leftover, ignore_errors=True)
    latest = latest_tag(ckpt_dir)
    if latest is None:
        return []
    removed = to_prune(step_tags(ckpt_dir), latest, keep_last, keep_every)
    for tag in removed:
        for name in (tag, f"{tag}_universal"):
            if (ckpt_dir / name).exists():
                os.replace(ckpt_dir / name, ckpt_dir / f"{PRUNED}{name}")
        _fsync_dir(ckpt_dir)
        crash_point("prune")
        for name in (tag, f"{tag}_universal"):
            shutil.rmtree(ckpt_dir / f"{PRUNED}{name}", ignore_errors=True)
    return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def latest_tag(ckpt_dir: Path) -> str | None:
    path = ckpt_dir / "latest"
    return path.read_text().strip() if path.is_file() else None


def universal_info() -> dict:
    """What ds_to_universal asserts a checkpoint's client state holds."""
    from deepspeed.checkpoint.constants import (
        UNIVERSAL_CHECKPOINT_INFO,
        UNIVERSAL_CHECKPOINT_VERSION_KEY,
        UNIVERSAL_CHECKPOINT_VERSION_VALUE,
    )

    return {UNIVERSAL_CHECKPOINT_INFO: {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE}}


def to_universal(ckpt_dir: Path, tag: str, rank: int) -> str:
    """Convert checkpoint `tag` to DeepSpeed's world-size-independent layout (once; rank 0 converts,
    everyone waits) and return the converted tag. The same conversion by hand:
        python -m deepspeed.checkpoint.ds_to_universal --input_folder RUN/checkpoints/TAG \
            --output_folder RUN/checkpoints/TAG_universal
    """
    out = f"{tag}_universal"
    done = ckpt_dir / out / "ligo_converted"
    failure = None
    if rank == 0 and not done.is_file():
        shutil.rmtree(ckpt_dir / out, ignore_errors=True)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "deepspeed.checkpoint.ds_to_universal",
                "--input_folder",
                str(ckpt_dir / tag),
                "--output_folder",
                str(ckpt_dir / out),
                "--num_extract_workers",
                "1",
                "--num_merge_workers",
                "1",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            failure = (
                f"converting {str(ckpt_dir / tag)!r} to a universal checkpoint failed:\n{result.stdout[-3000:]}"
                f"{result.stderr[-3000:]}"
            )
        else:
            _write_synced(done, tag)
    failure = broadcast_object(failure)
    if failure:
        raise ConfigError(failure)
    return out


def load_checkpoint(engine, ckpt_dir: Path, tag: str) -> dict:
    """Load `tag` into `engine`; returns the client state. Param-group weight decay is ours and is kept
    (see _restore_weight_decay), and every optimizer state gets its own step (see _unshare_steps)."""
    decays = [group["weight_decay"] for group in engine.optimizer.param_groups]
    try:
        load_path, client_state = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    except RuntimeError as e:  # torch's strict load_state_dict: other parameter names or shapes
        if "Error(s) in loading state_dict" not in str(e):
            raise
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise ConfigError(
            f"checkpoint {str(ckpt_dir / tag)!r} does not fit the model being trained ({first[:300]}); "
            "it was written for another model, or by a ligo_ds that named the parameters otherwise "
            "(the operator's frozen source weights are named by position since the options tidy): "
            "finish it with the version that wrote it, or move the run directory away to start "
            "again"
        ) from None
    _restore_weight_decay(engine, decays)
    _unshare_steps(engine)
    if load_path is None:
        raise ConfigError(
            f"checkpoint {str(ckpt_dir / tag)!r} named by {str(ckpt_dir / 'latest')!r} "
            "could not be loaded (missing or incomplete files)"
        )
    return client_state


def fp32_state_from_checkpoint(ckpt_dir: Path, tag: str) -> dict[str, torch.Tensor]:
    """Full fp32 weights from ZeRO shards on disk, assembled in CPU memory (any stage)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    if not (ckpt_dir / tag).is_dir():
        raise ConfigError(f"no checkpoint {tag!r} in {str(ckpt_dir)!r}")
    return get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)


def _unshare_steps(engine) -> None:
    """Give every optimizer state its own `step`. DeepSpeed 0.19.8's universal-checkpoint loader for ZeRO-3
    assigns one step tensor to all param groups; torch's AdamW increments it in place once per group, so
    the bias correction would run ahead by a step per group and step."""
    inner = getattr(engine.optimizer, "optimizer", None)
    for state in getattr(inner, "state", {}).values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


def _restore_weight_decay(engine, per_group: list[float]) -> None:
    """Re-apply each param group's weight decay. DeepSpeed 0.19.8's universal-checkpoint loader for ZeRO-3
    (stage3.py, load_hp_checkpoint_state_from_checkpoint_dir_stage3) copies the first group's settings onto
    every group, which would put decay on the norms and biases."""
    groups = engine.optimizer.param_groups
    assert len(groups) == len(per_group), (len(groups), len(per_group))
    for group, decay in zip(groups, per_group):
        group["weight_decay"] = decay
