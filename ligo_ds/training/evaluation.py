"""Validation loss: the windows training evaluates, and `ligo-ds eval` on any model.

The set is the first N windows of `seq_len` tokens of the validation split, at offsets i * seq_len:
the same at every evaluation, for every world size and every launcher. Each rank takes windows
r, r + W, ... and the token-weighted sum of losses is all-reduced, so the mean is the same whatever the
split. `ligo-ds eval` runs a plain forward of an HF model (every rank a whole copy) on the same windows,
so its number for a run's final model is the run's last val_loss.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..data.reading import window_batch
from ..errors import ConfigError
from ..faults import crash_point

if TYPE_CHECKING:
    from ..options import EvalOptions


def num_windows(val_tokens: int, seq_len: int, wanted: int | None) -> int:
    """How many windows fit the validation split (at most `wanted`; all of them for None)."""
    n = (val_tokens - 1) // seq_len
    if n < 1:
        raise ConfigError(f"validation split has {val_tokens} tokens, fewer than one --seq-len {seq_len} window")
    return n if wanted is None else min(wanted, n)


def window_totals(
    forward: Callable[[torch.Tensor], torch.Tensor],
    val,  # a token stream or array
    seq_len: int,
    micro_batch: int,
    n: int,
    rank: int,
    world: int,
    device: torch.device,
) -> torch.Tensor:
    """(sum of token losses, token count) in float64 over this rank's share of the first `n` windows.

    Every rank runs the same number of forwards; ranks with fewer windows run padded batches of weight
    zero, because under ZeRO-3 every rank must take part in every forward.
    """
    mine = list(range(rank, n, world))
    batches = math.ceil(math.ceil(n / world) / micro_batch)
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for i in range(batches):
        idx = mine[i * micro_batch : (i + 1) * micro_batch]
        ids, targets = window_batch(val, np.asarray(idx or [0], dtype=np.int64) * seq_len, seq_len)
        logits = forward(ids.to(device))
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.to(device).flatten(), reduction="sum")
        crash_point("eval")
        if idx:
            totals += torch.stack([loss.double(), torch.tensor(targets.numel(), dtype=torch.float64, device=device)])
    return totals


def _model_dir(path: Path) -> tuple[Path, dict]:
    """An HF directory for a MODEL argument (a run directory means its final model), and the run record."""
    for run in (path, path / "train"):  # a pretrain or fit RUN_DIR, or a grow RUN_DIR's training phase
        record = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
        if "identity" not in record:
            continue
        if not (run / "hf" / "config.json").is_file():
            raise ConfigError(
                f"run {str(run)!r} has no final model yet (no hf/): export a checkpoint with `ligo-ds export` "
                "and evaluate that"
            )
        return run / "hf", record
    return path, {}


def run(opts: EvalOptions) -> dict:
    """Evaluate `opts.model` on `opts.data`'s validation windows; every rank returns the result."""
    from ..data.reading import open_data
    from ..distributed import launch
    from ..model.hf_io import load_model
    from .session import check_data_fits

    model_dir, record = _model_dir(Path(opts.model))
    options = record.get("options", {})
    data_dir = opts.data or options.get("data")
    if data_dir is None:
        raise ConfigError("--data is required unless MODEL is a run directory (whose own data is the default)")
    seq_len = opts.seq_len or options.get("seq_len") or 256
    wanted = opts.eval_samples or options.get("eval_samples")
    data = open_data(data_dir)
    d = launch.init()
    model = load_model(model_dir, device=d.device).eval()
    check_data_fits(model.cfg, model_dir, data, seq_len, "MODEL", opts.allow_tokenizer_mismatch)
    val = data.validation()
    n = num_windows(len(val), seq_len, wanted)
    with torch.no_grad():
        totals = window_totals(model, val, seq_len, opts.micro_batch, n, d.rank, d.world_size, d.device)
    loss = (launch.all_reduce_sum(totals)[0] / totals[1]).item()
    result = {
        "model": str(model_dir),
        "data": str(data_dir),
        "val_loss": loss,
        "perplexity": math.exp(loss),
        "windows": n,
        "seq_len": seq_len,
        "tokens": int(totals[1].item()),
    }
    if d.is_main and opts.out:
        Path(opts.out).write_text(json.dumps(result, indent=2) + "\n")
    return result
