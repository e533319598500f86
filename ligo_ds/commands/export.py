"""`ligo-ds export`: any saved checkpoint of a run -> an HF checkpoint directory, tokenizer included.

Reads the ZeRO shards from disk and assembles full fp32 weights in CPU memory (no GPU, no process
group), then streams them to safetensors shards. A pretrain run's checkpoint holds the model's weights;
a fit run's holds the operator's, so the grown model is produced from them and the source model, block
by block (growth/fit.py). The tokenizer (with its eos, and a generation_config.json) comes from the run's
DATA_DIR.

The default dtype is fp32: the weights a checkpoint holds, unrounded; bf16 halves the files for
evaluation and serving.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..data.reading import open_data
from ..distributed import checkpoint
from ..errors import ConfigError
from ..growth.fit import grown_tensors
from ..model import tokenizer
from ..model.config import ModelConfig
from ..model.hf_save import DTYPES, check_replaceable, write_checkpoint
from ..options import Command, option
from ..training.rundir import RunDir, recorded_paths

EXPORT_DTYPES = {"fp32": DTYPES["float32"], "bf16": DTYPES["bfloat16"]}


@dataclass(frozen=True, kw_only=True)
class ExportOptions(Command):
    run: str = option(help="a pretrain or fit RUN_DIR", metavar="RUN_DIR", positional=True, identity=False)
    tag: str | None = option(None, "checkpoint tag", shown_default="the latest", identity=False)
    out: str = option(help="the HF checkpoint directory to write", metavar="DIR", identity=False)
    dtype: str = option(
        "fp32",
        "weights' dtype: fp32 keeps the checkpoint's weights unrounded, bf16 halves the files",
        choices=tuple(EXPORT_DTYPES),
        identity=False,
    )


Options = ExportOptions
CONFIG_FILE = False


def run(opts: ExportOptions) -> int:
    """Write any saved checkpoint of a run (default: the latest) as an HF checkpoint directory."""
    print(f"wrote {export(opts.run, opts.out, opts.tag, opts.dtype)}")
    return 0


def export(run: str | Path, out: str | Path, tag: str | None = None, dtype: str = "fp32") -> Path:
    check_replaceable(out)  # before the weights are assembled, which takes the time
    run_dir = RunDir(run)
    if not run_dir.config.is_file():
        hint = [p for p in ("train", "fit") if (Path(run) / p / "config.json").is_file()]
        where = f" (a grow run: export {str(Path(run) / hint[0])!r})" if hint else ""
        raise ConfigError(f"{str(run)!r} is not a ligo_ds run directory (no config.json){where}")
    record = json.loads(run_dir.config.read_text())
    # Paths the run recorded relative to where it ran, resolved there: not against this export's directory.
    advice = "export from a copy of the run whose config.json names its DATA_DIR by an absolute path"
    for key in ("options", "fit"):
        if key in record:
            record[key] = recorded_paths(record[key], record, run, advice)
    is_fit = "fit" in record
    if is_fit and "options" not in record:  # fit --steps 0: written straight to RUN_DIR/hf, no checkpoint
        raise ConfigError(
            f"{str(run)!r} is a fit with --steps 0, which keeps no checkpoint: its grown model is {str(run_dir.hf)!r}"
        )
    model_cfg = ModelConfig.from_hf(record["model_config"])
    tag = tag or checkpoint.latest_tag(run_dir.checkpoints)
    if tag is None:
        raise ConfigError(f"run {str(run)!r} has no complete checkpoint yet (no checkpoints/latest)")
    checkpoint.read_manifest(run_dir.checkpoints, tag)  # refuses an incomplete checkpoint, naming what is missing
    try:  # one DATA_DIR, or the first of a mixture
        data = open_data(record["options"]["data"], "the run's data")
    except ConfigError as e:
        raise ConfigError(
            f"the run's data {record['options']['data']!r} cannot be read ({e}): the export's tokenizer comes "
            "from it (restore it, or export from where it is mounted)"
        ) from None
    state = checkpoint.fp32_state_from_checkpoint(run_dir.checkpoints, tag)
    tensors = grown_tensors(record["fit"], state) if is_fit else state.items()
    return write_checkpoint(
        model_cfg,
        tensors,
        out,
        dtype=EXPORT_DTYPES[dtype],
        extra=tokenizer.export_files(data.dir, data.eos_id),
    )
