"""The run directory: one layout, owned here.

RUN_DIR/config.json      resolved options, model and data identity, versions, git sha
RUN_DIR/ds_config.json   exactly what DeepSpeed received
RUN_DIR/checkpoints/     DeepSpeed checkpoints by tag, and `latest` (written last: distributed/checkpoint.py)
RUN_DIR/metrics.jsonl    one row per logging step, and a row per event (a skipped step, a rollback)
RUN_DIR/skips.json       the data a spike rollback skipped, so a rerun skips it too (health.py)
RUN_DIR/tb/              TensorBoard events
RUN_DIR/hf/              the final weights as an HF checkpoint
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..folders import hold, only_the_lock
from ..options import load_json


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def versions() -> dict[str, Any]:
    """What made a run, for its config.json; read from the installed packages' metadata, so that recording
    it imports nothing (deepspeed among them)."""
    from importlib.metadata import version

    import ligo_ds

    return {
        "ligo_ds": ligo_ds.__version__,
        "git_sha": _git_sha(),
        "torch": version("torch"),
        "deepspeed": version("deepspeed"),
        "python": platform.python_version(),
    }


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.ds_config = self.root / "ds_config.json"
        self.checkpoints = self.root / "checkpoints"
        self.metrics = self.root / "metrics.jsonl"
        self.tb = self.root / "tb"
        self.hf = self.root / "hf"
        self.skips = self.root / "skips.json"

    def read_skips(self) -> list[dict]:
        return json.loads(self.skips.read_text()) if self.skips.is_file() else []

    def record_skip(self, record: dict) -> None:
        """Add a rollback's skip, atomically: a kill leaves the file with or without it, never half of it."""
        write_json_atomic(self.skips, [*self.read_skips(), record])

    def claim(self, identity: dict[str, Any], record: dict[str, Any], what: str) -> bool:
        """Start a new run here, or confirm this is the same run. Returns True when resuming.

        `identity` holds what must not change across a resume (model, data, batch, schedule); a
        mismatch is refused with every differing field named, and nothing on disk is touched. `what`: the
        option that named this directory, for the messages. The directory's lock (folders.py) is taken first
        and held until the process ends: a second job on it is refused naming the first.
        """
        if self.root.is_symlink() or (self.root.exists() and not self.root.is_dir()):
            raise ConfigError(f"{what} {str(self.root)!r} is not a folder")
        if not self.config.is_file() and self.root.is_dir() and not only_the_lock(self.root):
            raise ConfigError(f"{what} {str(self.root)!r} exists, is not empty and holds no ligo_ds run")
        # Compared before the lock, so that a refused command leaves even the lock file as it was; and again
        # under it, in case another job claimed the folder in between.
        self._same_run(identity, what)
        hold(self.root, what)
        if self._same_run(identity, what):
            return True
        write_json_atomic(self.config, {"identity": identity, **record})
        return False

    def _same_run(self, identity: dict[str, Any], what: str) -> bool:
        """True when the directory holds a run with this identity, False when it holds none; a different
        run is refused with every differing field named."""
        if not self.config.is_file():
            return False
        previous = load_json(self.config, "run config").get("identity")
        if previous is None:
            raise ConfigError(f"{str(self.config)!r} was not written by ligo_ds pretrain; choose another {what}")
        diffs = [
            f"{k}: {previous.get(k)!r} in the run, {identity.get(k)!r} now"
            for k in sorted(set(previous) | set(identity))
            if previous.get(k) != identity.get(k)
        ]
        if diffs:
            raise ConfigError(
                f"{what} {str(self.root)!r} belongs to a different run; refusing to resume it. "
                f"Differences: {'; '.join(diffs)}"
            )
        return True

    def truncate_metrics(self, step: int) -> None:
        """Drop rows logged after `step` (by a run that died after its last checkpoint, or rolled back to
        it), and a last line cut short by a kill in the middle of writing it; event rows at `step` itself
        go too, since the run repeats them from its checkpoint. step=-1 empties the log (a fresh start)."""
        if not self.metrics.is_file():
            return
        lines = _metrics_lines(self.metrics)
        kept = [
            line
            for line, row in lines
            if row is not None and (row["step"] < step or (row["step"] == step and "event" not in row))
        ]
        if len(kept) != len(lines):
            tmp = self.metrics.with_name(".metrics.jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.metrics)


def _metrics_lines(path: Path) -> list[tuple[str, dict | None]]:
    """(line, row) pairs; row is None for a last line cut short by a kill. Anything else unparsable is
    damage, and is refused."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            out.append((line, _checked_row(json.loads(line), path, i)))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ConfigError(f"{str(path)!r} line {i + 1} is not JSON; the file is damaged") from None
            out.append((line, None))
    return out


def _checked_row(row, path: Path, i: int) -> dict:
    """A metrics row as the readers rely on it: an object with its step, and a training row with its FLOPs
    (what `report` puts on its axis)."""

    def number(v) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    if not isinstance(row, dict) or not (isinstance(row.get("step"), int) and not isinstance(row["step"], bool)):
        raise ConfigError(f"{str(path)!r} line {i + 1} is not a metrics row with a step; the file is damaged")
    if "event" not in row and not number(row.get("flops")):
        raise ConfigError(
            f"{str(path)!r} row at step {row['step']} has no flops (found {row.get('flops')!r}); the file is damaged "
            "or not written by ligo_ds"
        )
    return row


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl; a last line cut short by a kill is left out."""
    return [row for _, row in _metrics_lines(Path(path)) if row is not None]


def last_val_loss(rows: list[dict]) -> float | None:
    """The last validation loss among metrics rows (read_metrics), or None when none was measured."""
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    return vals[-1] if vals else None


def final_val_loss(metrics: str | Path) -> float | None:
    """The last validation loss in a metrics.jsonl, or None when the file is missing or has none."""
    return last_val_loss(read_metrics(metrics)) if Path(metrics).is_file() else None


_SHA_MARK = " (meta sha "


def data_identity(data_dir: str | Path, meta_sha: str) -> str:
    """How a run's identity names its data: the path for the reader (a mixture's spec, its paths already
    resolved, as it is), the meta sha for comparisons."""
    is_mixture = isinstance(data_dir, str) and "=" in data_dir
    return f"{data_dir if is_mixture else Path(data_dir).resolve()}{_SHA_MARK}{meta_sha})"


def val_protocol(config: dict) -> dict | None:
    """What a run's validation loss was measured on, from its config.json: comparable runs match.

    The data counts by its meta sha (data_identity), not its path, so run dirs from other machines
    still compare.
    """
    identity, options = config.get("identity") or {}, config.get("options") or {}
    if "data" not in identity or "seq_len" not in identity or "eval_samples" not in options:
        return None
    data = identity["data"]
    sha = data.rsplit(_SHA_MARK, 1)[1].rstrip(")") if _SHA_MARK in data else data
    return {"data_sha": sha, "seq_len": identity["seq_len"], "eval_samples": options["eval_samples"]}


# The options whose values are paths (or a mixture of DATA_DIRs, or a Hub id or builtin name that is not a
# path here): a run records them absolute, so that reading its config.json from elsewhere finds the same files.
PATH_OPTIONS = ("model", "out", "data", "ds_config", "branch_from", "source", "target", "tokenizer")


def _each_path(value: str, fn) -> str:
    """`fn` applied to each path of an option's value: one path, or a mixture's `A=0.7,B=0.3`."""
    if "=" not in value:
        return fn(value)
    return ",".join(f"{fn(path)}={weight}" for path, weight in (part.rsplit("=", 1) for part in value.split(",")))


def absolute_paths(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with every path option that names an existing file or folder made absolute and resolved (a Hub
    id or a builtin ds config name stays as it is; `out` is made absolute whether or not it exists yet)."""

    def absolute(p: str) -> str:
        return str(Path(p).resolve()) if os.path.exists(p) else p

    out = dict(values)
    for key in PATH_OPTIONS:
        if isinstance(out.get(key), str):
            out[key] = os.path.abspath(out[key]) if key == "out" else _each_path(out[key], absolute)
    return out


def recorded_cwd(record: dict[str, Any], run: str | Path) -> str | None:
    """The working directory a run's relative paths were relative to: recorded since runs record it; for an
    older run, inferred from its relative --out and where the run folder is now; None when neither tells."""
    if record.get("cwd"):
        return record["cwd"]
    out = (record.get("options") or record.get("fit") or {}).get("out")
    if not out or os.path.isabs(out):
        return None
    parts, here = Path(out).parts, Path(run).resolve().parts
    return str(Path(*here[: -len(parts)])) if len(here) > len(parts) and here[-len(parts) :] == parts else None


def recorded_paths(values: dict[str, Any], record: dict[str, Any], run: str | Path, advice: str) -> dict[str, Any]:
    """A run's recorded options with their relative paths resolved against the run's working directory
    (recorded_cwd); a relative DATA_DIR whose directory nothing tells is refused, naming it: read against the
    current directory it could be another dataset (`advice`: what the command's user can do instead)."""
    cwd = recorded_cwd(record, run)
    out = dict(values)
    for key in PATH_OPTIONS:
        value = out.get(key)
        if not isinstance(value, str):
            continue

        def resolve(p: str, key=key) -> str:
            if os.path.isabs(p):
                return p
            if cwd is not None:
                there = os.path.join(cwd, p)
                return there if os.path.exists(there) or key in ("data", "out") else p
            if key == "data":
                raise ConfigError(
                    f"run {str(run)!r} records its data as the relative path {p!r} but not the directory it was "
                    f"relative to: {advice}"
                )
            return p

        out[key] = _each_path(value, resolve)
    return out


def source_record(hf_dir: str | Path) -> dict[str, Any]:
    """What `report` needs of the run that exported `hf_dir` (a RUN_DIR/hf), recorded when a fit
    starts so that a grow run copied elsewhere keeps it: the source's pretraining FLOPs, its final
    validation loss and how that loss was measured. None for a model from elsewhere."""
    run = Path(hf_dir).parent
    rows = read_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
    config = json.loads((run / "config.json").read_text()) if rows and (run / "config.json").is_file() else {}
    return {
        "source_pretraining_flops": rows[-1]["flops"] if rows else None,
        "source_final_val_loss": last_val_loss(rows),
        "source_val_protocol": val_protocol(config),
    }


def final_model(path: Path) -> tuple[Path, dict]:
    """The HF directory a MODEL argument means: a pretrain or fit RUN_DIR (or a grow RUN_DIR, its training
    phase) means its final model, hf/; anything else is itself. With the run's record, or {}."""
    for run_dir in (path, path / "train"):
        record = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
        if "identity" not in record:
            continue
        if not (run_dir / "hf" / "config.json").is_file():
            raise ConfigError(
                f"run {str(run_dir)!r} has no final model yet (no hf/): export a checkpoint with `ligo-ds export` "
                "and use that"
            )
        return run_dir / "hf", record
    return path, {}
