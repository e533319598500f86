"""Each command's options: a few of its own plus the shared blocks (blocks.py), with its own defaults.

The CLI (cli.py) generates every subcommand's flags from these classes; `from_values` builds one from
flat name -> value pairs, checking it; `to_flat` gives those pairs back for the run record.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..growth.spec import ORDERS, GrowthSpec
from ..model.compute import CHECKPOINTING, LOSS_CHUNK
from .blocks import Cadence, Compute, Data, DeepSpeed, Growth, Health, Loop, OperatorFit, Optimizer, Schedule
from .declare import Command, at_least, between, block, option


@dataclass(frozen=True, kw_only=True)
class PrepareOptions(Command):
    source: str = option(
        "stdlib", "stdlib | PATH[,PATH...] (files or folders) | hub:NAME (streamed from the Hub)", metavar="SRC"
    )
    out: str = option(help="output directory; rerunning the same command resumes it", metavar="DATA_DIR")
    split: str = option("train", "the Hub dataset's split")
    # Not --config: every command's --config FILE reads its options from a file.
    subset: str | None = option(
        None, "the Hub dataset's subset (what `datasets` calls its config name)", metavar="NAME"
    )
    data_files: str | None = option(
        None, "the Hub dataset's files to read, comma-separated globs (e.g. 'sample/10BT/*.parquet')", metavar="GLOBS"
    )
    tokenizer: str | None = option(
        None,
        "a model's or tokenizer's directory (what AutoTokenizer reads) instead of training one",
        metavar="DIR",
        hub="tokenizer",
    )
    eos_token: str | None = option(
        None, "the token that ends each document (default: the tokenizer's own eos)", metavar="TOKEN"
    )
    vocab_size: int = option(
        8192, "BPE vocabulary when training one (256 bytes + end-of-text at least)", check=at_least(257)
    )
    tokenizer_sample_bytes: int = option(
        500_000_000, "text to train the BPE on, spread over the corpus (e.g. 500M, 2G)", check=at_least(1)
    )
    val_fraction: float = option(0.02, "share of documents (by a hash of their text) held out", check=between(0.0, 1.0))
    text_field: str = option("text", "column holding the text in json/parquet/hub data")
    num_proc: int | None = option(None, "tokenizing processes", shown_default="every core", check=at_least(1))
    shard_bytes: int = option(1_000_000_000, "size of each token file (e.g. 1G)", check=at_least(1))
    force: bool = option(
        False, "start over: discard unfinished work and replace an existing DATA_DIR once the new one is complete"
    )


@dataclass(frozen=True, kw_only=True)
class InspectOptions(Command):
    model: str = option(help="HF config.json or checkpoint directory", metavar="CONFIG_OR_DIR", hub="model")
    data: Data = block(Data, data=None, seq_len=128)


@dataclass(frozen=True, kw_only=True)
class PretrainOptions(Command):
    """A training run: also what the fit's loop runs with (FitOptions.training_loop)."""

    model: str = option(
        help="HF config.json (train from scratch) or HF checkpoint directory (continue pretraining it)",
        metavar="CONFIG_OR_DIR",
        hub="model",
    )
    out: str = option(
        help="RUN_DIR; rerunning the same command on it resumes from its latest checkpoint", metavar="RUN_DIR"
    )
    data: Data = block(Data)
    loop: Loop = block(Loop)
    schedule: Schedule = block(Schedule)
    branch_from: str | None = option(
        None,
        "start from another run's checkpoint (weights, optimizer state, data position) and train it to this "
        "run's length: RUN_DIR/checkpoints/TAG from the stable phase of a --schedule wsd run, the same run "
        "up to its length and schedule",
        metavar="CHECKPOINT",
    )
    optimizer: Optimizer = block(Optimizer)
    cadence: Cadence = block(Cadence)
    deepspeed: DeepSpeed = block(DeepSpeed)
    compute: Compute = block(Compute)
    health: Health = block(Health)

    def total_steps(self, world_size: int) -> int:
        return self.schedule.total_steps(self.loop.global_batch(world_size), self.data.seq_len)


@dataclass(frozen=True, kw_only=True)
class FitOptions(Command):
    growth: Growth = block(Growth)
    out: str = option(help="RUN_DIR; rerunning the same command resumes the fit", metavar="RUN_DIR")
    fit: OperatorFit = block(OperatorFit)
    data: Data = block(Data)
    loop: Loop = block(Loop)
    cadence: Cadence = block(Cadence, eval_every=25, save_every=50, log_every=5)
    deepspeed: DeepSpeed = block(DeepSpeed, ds_config="zero3")
    # full: a block's weights are produced again in the backward instead of kept, one block's alive at a time
    compute: Compute = block(Compute, activation_checkpointing="full")
    health: Health = block(Health)

    def spec(self) -> GrowthSpec:
        """The operator's specification; its random draws follow the run's seed."""
        return self.growth.spec(seed=self.loop.seed)

    def training_loop(self) -> PretrainOptions:
        """The fit's loop in the shape the trainer takes: the target's shape, the operator's schedule."""
        return PretrainOptions(
            model=self.growth.target,
            out=self.out,
            data=self.data,
            loop=self.loop,
            schedule=self.fit.schedule(),
            optimizer=self.fit.optimizer(),
            cadence=self.cadence,
            deepspeed=self.deepspeed,
            compute=self.compute,
            health=self.health,
        )


@dataclass(frozen=True, kw_only=True)
class GrowOptions(Command):
    growth: Growth = block(Growth)
    out: str = option(
        help="RUN_DIR: fit/, grown/, train/; rerunning the same command resumes in whichever phase it stopped",
        metavar="RUN_DIR",
    )
    fit: OperatorFit = block(OperatorFit, names={"steps": "fit_steps"})
    # A smaller fit batch makes the fit cheaper; the operator still produces every weight on every step, so
    # its own cost does not shrink.
    fit_micro_batch: int | None = option(
        None, "sequences per rank per fit step", shown_default="--micro-batch", check=at_least(1)
    )
    # The fit keeps its own default: its blocks' weights are produced from the operator, and checkpointing
    # them is what keeps one block's weights alive at a time (--activation-checkpointing is the training's).
    fit_activation_checkpointing: str = option("full", "--activation-checkpointing of the fit", choices=CHECKPOINTING)
    data: Data = block(Data)
    loop: Loop = block(Loop)
    schedule: Schedule = block(Schedule)
    optimizer: Optimizer = block(Optimizer)
    cadence: Cadence = block(Cadence)
    deepspeed: DeepSpeed = block(DeepSpeed, ds_config="zero3")
    compute: Compute = block(Compute)
    health: Health = block(Health)

    def fit_phase(self) -> FitOptions:
        """RUN_DIR/fit. Its cadence is capped at its length, so a short fit still logs, evaluates and saves."""
        steps = max(1, self.fit.steps)
        micro = self.loop.micro_batch if self.fit_micro_batch is None else self.fit_micro_batch
        cadence = dataclasses.replace(
            self.cadence,
            eval_every=min(self.cadence.eval_every, steps),
            save_every=min(self.cadence.save_every, steps),
            log_every=min(self.cadence.log_every, steps),
            keep_every=None,  # counted in the training phase's steps; the fit keeps its --keep-last newest
        )
        return FitOptions(
            growth=self.growth,
            out=str(Path(self.out) / "fit"),
            fit=self.fit,
            data=self.data,
            loop=dataclasses.replace(self.loop, micro_batch=micro),
            cadence=cadence,
            deepspeed=self.deepspeed,
            compute=dataclasses.replace(self.compute, activation_checkpointing=self.fit_activation_checkpointing),
            # --skip-data counts the training phase's samples
            health=dataclasses.replace(self.health, skip_data=None),
        )

    def train_phase(self) -> PretrainOptions:
        """RUN_DIR/train: pretraining of the grown model in RUN_DIR/grown."""
        return PretrainOptions(
            model=str(Path(self.out) / "grown"),
            out=str(Path(self.out) / "train"),
            data=self.data,
            loop=self.loop,
            schedule=self.schedule,
            optimizer=self.optimizer,
            cadence=self.cadence,
            deepspeed=self.deepspeed,
            compute=self.compute,
            health=self.health,
        )

    def fit_micro_batch_flag(self) -> str:
        """The flag the fit's micro-batch came from, for errors about a DeepSpeed config."""
        return "--micro-batch" if self.fit_micro_batch is None else "--fit-micro-batch"


DEVICES = ("cuda", "cpu")


@dataclass(frozen=True, kw_only=True)
class PlanOptions(Command):
    target: str = option(
        help="the model to train (or grow into): an HF config.json or a directory holding one",
        metavar="CONFIG",
        hub="config",
    )
    source: str | None = option(
        None,
        "the small model to grow from (its config.json or directory): adds the fit's row",
        metavar="CONFIG",
        hub="config",
    )
    order: str = option("paper", "the operator's order (it sets the operator's size)", choices=ORDERS)
    world_size: int = option(8, "data-parallel ranks (GPUs, or processes on the CPU)", check=at_least(1))
    micro_batch: int = option(8, "sequences per rank per forward", check=at_least(1))
    fit_micro_batch: int | None = option(
        None, "sequences per rank per fit step", shown_default="--micro-batch", check=at_least(1)
    )
    seq_len: int = option(256, "tokens per sequence", check=at_least(1))
    deepspeed: DeepSpeed = block(DeepSpeed, ds_config="zero3")
    activation_checkpointing: str = option(
        "none", "what each block keeps for the backward in pretraining (as `pretrain` takes it)", choices=CHECKPOINTING
    )
    fit_activation_checkpointing: str = option("full", "--activation-checkpointing of the fit", choices=CHECKPOINTING)
    loss_chunk: int = option(LOSS_CHUNK, "tokens per chunk of the LM head and loss", check=at_least(1))
    device: str = option("cuda", "where training runs: on cpu the device's memory is the host's", choices=DEVICES)
    gpu_memory: float | None = option(
        80.0, "memory per rank to fit in, GiB (0: do not check)", check=at_least(0), metavar="GIB"
    )
    mfu: float = option(0.4, "model FLOPs utilisation for the time per step", check=between(0.0, 1.0))


@dataclass(frozen=True, kw_only=True)
class ExportOptions(Command):
    run: str = option(help="a pretrain or fit RUN_DIR", metavar="RUN_DIR", positional=True)
    tag: str | None = option(None, "checkpoint tag", shown_default="the latest")
    out: str = option(help="the HF checkpoint directory to write", metavar="DIR")
    dtype: str = option(
        "fp32",
        "weights' dtype: fp32 keeps the checkpoint's weights unrounded, bf16 halves the files",
        choices=("fp32", "bf16"),
    )


@dataclass(frozen=True, kw_only=True)
class EvalOptions(Command):
    model: str = option(
        help="an HF model directory, or a RUN_DIR (its final model, and by default its data and windows)",
        metavar="MODEL",
        positional=True,
        hub="model",
    )
    data: str | None = option(None, "DATA_DIR written by `ligo-ds prepare`", shown_default="the run's", metavar="DIR")
    seq_len: int | None = option(None, "tokens per window", shown_default="the run's, else 256", check=at_least(1))
    eval_samples: int | None = option(
        None, "windows to evaluate, from the first", shown_default="the run's, else all", check=at_least(1)
    )
    micro_batch: int = option(8, "windows per forward", check=at_least(1))
    allow_tokenizer_mismatch: bool = option(False, "evaluate on data tokenized otherwise than the model's tokenizer")
    out: str | None = option(None, "also write the result as JSON to FILE", metavar="FILE")


@dataclass(frozen=True, kw_only=True)
class ReportOptions(Command):
    runs: list[str] = option(help="pretrain and grow run directories", metavar="RUN_DIR", positional=True)
    out: str = option(help="directory for report.md, report.csv and loss_vs_flops.png", metavar="DIR")
    scratch: str | None = option(
        None, "the baseline run's directory name", shown_default="the best scratch run", metavar="NAME"
    )


__all__ = [
    "ExportOptions",
    "FitOptions",
    "GrowOptions",
    "InspectOptions",
    "PlanOptions",
    "PrepareOptions",
    "PretrainOptions",
    "ReportOptions",
]
