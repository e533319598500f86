"""Run directories read as validation curves: (FLOPs, seconds, validation loss) in training order, with what
the savings report needs besides (the small model's cost and loss for a grown run, the run's length and
schedule, the growth method). Nothing but a run's files is read, so runs from other machines mix.

Accepted directories: a `pretrain` RUN_DIR, a `grow` RUN_DIR (fit/ + train/), or a `fit --steps 0` +
`pretrain` pair laid out the same way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..model.config import ModelConfig
from ..training.rundir import read_metrics, val_protocol


@dataclass
class Curve:
    name: str
    kind: str  # "scratch" | "grown" | "pretrain"
    points: list[tuple[float, float, float]]  # (flops, seconds, val_loss), in training order
    small_flops: float | None = None  # the source model's own pretraining, when known
    small_val: float | None = None  # the source model's final validation loss, when known
    small_protocol: dict | None = None  # how small_val was measured (rundir.val_protocol)
    protocol: dict | None = None  # how this run's validation loss was measured
    notes: dict = field(default_factory=dict)
    tokens: int | None = None  # training tokens its schedule runs for (the fit's left out)
    schedule: dict | None = None  # lr, floor, warmup and shape of its training schedule
    method: str | None = None  # a grown run's fit, whole but for its directory: runs of one method share it
    # A grown run's loss before its first training step (the fitted or heuristic start): where a heuristic is
    # not function preserving, this gap to the small model's loss is what the fit is for.
    start_val: float | None = None
    params: int | None = None  # the trained model's parameters (embeddings in, a tied head once), when recorded

    @property
    def final(self) -> tuple[float, float, float]:
        return self.points[-1]


def loss_at(points: list[tuple[float, float, float]], flops: float) -> float | None:
    """Validation loss at `flops` by linear interpolation; None outside the curve."""
    for (x0, _, l0), (x1, _, l1) in zip(points, points[1:]):
        if x0 <= flops <= x1:
            return l0 if x1 == x0 else l0 + (flops - x0) / (x1 - x0) * (l1 - l0)
    if points and math.isclose(points[-1][0], flops, rel_tol=1e-9):
        return points[-1][2]
    return None


def _val_rows(metrics: Path) -> list[dict]:
    return [r for r in read_metrics(metrics) if "val_loss" in r]


def _val_points(rows: list[dict]) -> list[tuple[float, float, float]]:
    return [(r["flops"], r.get("train_seconds", 0.0), r["val_loss"]) for r in rows]


def _start_val(rows: list[dict]) -> float | None:
    """The validation loss logged at step 0 (training evaluates before its first step), if it was."""
    return rows[0]["val_loss"] if rows and rows[0].get("step") == 0 else None


def _config(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


SCHEDULE_KEYS = ("lr", "min_lr", "warmup_steps", "schedule")


def _length(config: dict) -> tuple[int | None, dict | None]:
    """(training tokens, schedule) from a run's recorded identity; (None, None) for a run without one."""
    ident = config.get("identity") or {}
    if not all(k in ident for k in ("total_steps", "global_batch", "seq_len")):
        return None, None
    tokens = ident["total_steps"] * ident["global_batch"] * ident["seq_len"]
    return tokens, {k: ident.get(k) for k in SCHEDULE_KEYS}


def _params(config: dict) -> int | None:
    """The run's model's parameter count, from the config its run recorded (None for a run without one)."""
    cfg = config.get("model_config")
    if not isinstance(cfg, dict):
        return None
    try:
        return ModelConfig.from_hf(cfg).num_params()
    except ConfigError:  # recorded by another version that read fields this one does not: no regime line
        return None


def load_curve(run: str | Path) -> Curve:
    run = Path(run)
    if (run / "train" / "metrics.jsonl").is_file():  # a grow run: the fit's curve, then training
        fit_cfg = _config(run / "fit" / "config.json")
        fit_points = (
            _val_points(_val_rows(run / "fit" / "metrics.jsonl")) if (run / "fit" / "metrics.jsonl").is_file() else []
        )
        train_rows = _val_rows(run / "train" / "metrics.jsonl")
        points = fit_points + _val_points(train_rows)
        fit = fit_cfg.get("fit", {})
        train_cfg = _config(run / "train" / "config.json")
        method = {k: v for k, v in fit.items() if k != "out"}
        # Recorded when the fit started (None for a source made elsewhere), so a run dir copied from
        # another machine keeps it.
        return Curve(
            run.name,
            "grown",
            points,
            fit_cfg.get("source_pretraining_flops"),
            fit_cfg.get("source_final_val_loss"),
            fit_cfg.get("source_val_protocol"),
            val_protocol(train_cfg),
            {"fit_steps": fit.get("steps"), "width_init": fit.get("width_init"), "depth_init": fit.get("depth_init")},
            *_length(train_cfg),
            method=json.dumps(method, sort_keys=True) if fit else None,
            start_val=_start_val(train_rows),
            params=_params(train_cfg),
        )
    if not (run / "metrics.jsonl").is_file():
        raise ConfigError(f"{str(run)!r} holds no metrics.jsonl (nor train/metrics.jsonl): not a ligo_ds run")
    config = _config(run / "config.json")
    model = config.get("options", {}).get("model", "")
    kind = "scratch" if model.endswith(".json") else "pretrain"
    tokens, schedule = _length(config)
    return Curve(
        run.name,
        kind,
        _val_points(_val_rows(run / "metrics.jsonl")),
        protocol=val_protocol(config),
        tokens=tokens,
        schedule=schedule,
        params=_params(config),
    )
