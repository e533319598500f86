"""`ligo-ds eval`: validation loss and perplexity of any model on a DATA_DIR's validation windows, the windows
training evaluates (training/evaluation.py), so that a run's final model gives the run's last val_loss."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.reading import DEFAULT_SEQ_LEN, Data
from ..distributed import launch
from ..errors import ConfigError
from ..model.hf_load import load_model
from ..options import Command, block, derive, option
from ..training.cadence import Cadence
from ..training.evaluation import num_windows, window_totals
from ..training.loop import Loop
from ..training.rundir import final_model, recorded_paths
from ..training.session import check_data_fits
from . import is_rank0


@dataclass(frozen=True, kw_only=True)
class EvalOptions(Command):
    model: str = option(
        help="an HF model directory, or a RUN_DIR (its final model, and by default its data and windows)",
        metavar="MODEL",
        positional=True,
        hub="model",
        identity=False,
    )
    data: Data = block(
        Data,
        only=("data", "seq_len", "allow_tokenizer_mismatch"),
        data=None,
        seq_len=None,
        shown={"data": "the run's", "seq_len": f"the run's, else {DEFAULT_SEQ_LEN} or the model's positions if fewer"},
    )
    cadence: Cadence = block(
        Cadence, only=("eval_samples",), eval_samples=None, shown={"eval_samples": "the run's, else all"}
    )
    loop: Loop = block(Loop, only=("micro_batch",))
    out: str | None = option(None, "also write the result as JSON to FILE", metavar="FILE", identity=False)


Options = EvalOptions
CONFIG_FILE = False


def run(opts: EvalOptions) -> int:
    """Validation loss and perplexity of a model on DATA_DIR's validation windows, as training evaluates.

    MODEL is an HF directory, a Hub id, or a run directory: then its final model, evaluated by default on
    the run's own data, sequence length and number of windows, which gives the run's last val_loss.
    Under torchrun, srun or mpirun each rank evaluates its share of the windows.
    """
    result = evaluate(opts)
    if is_rank0():
        print(
            f"val_loss {result['val_loss']:.6f}, perplexity {result['perplexity']:.4f} over {result['windows']} "
            f"windows of {result['seq_len']} tokens ({result['model']} on {result['data']})"
        )
    return 0


def evaluate(opts: EvalOptions) -> dict:
    """Evaluate `opts.model` on its data's validation windows; every rank returns the result."""
    model_dir, record = final_model(Path(opts.model))
    options = record.get("options", {})
    if not opts.data.data and options:  # the run's own data, where the run found it
        options = recorded_paths(options, record, model_dir.parent, f"give the DATA_DIR with {opts.data.flag('data')}")
    data_dir = opts.data.data or options.get("data")
    if data_dir is None:
        raise ConfigError(
            f"{opts.data.flag('data')} is required unless MODEL is a run directory (whose own data is the default)"
        )
    wanted = opts.cadence.eval_samples or options.get("eval_samples")
    d = launch.init()
    model = load_model(model_dir, device=d.device).eval()
    given = derive(opts.data, data=data_dir, seq_len=opts.data.seq_len or options.get("seq_len"))
    given = given.for_model(model.cfg.max_positions)  # neither given nor recorded: 256, or the model's positions
    seq_len = given.seq_len
    data = given.open()
    check_data_fits(model.cfg, model_dir, data, given, "MODEL")
    val = data.validation()
    n = num_windows(len(val), seq_len, wanted)
    with torch.no_grad():
        totals = window_totals(model, val, seq_len, opts.loop.micro_batch, n, d.rank, d.world_size, d.device)
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
