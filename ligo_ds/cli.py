"""`ligo-ds` (also `python -m ligo_ds`): a table of subcommands, each a plain function of its options.

Each command's docstring is its --help description; its flags are generated from its options class
(options/), so help, defaults and checks have one source. Modules that train are imported only by
the commands that train: `--help`, `report` and `prepare` never import deepspeed. User errors
(ConfigError) print one line and exit 2; a run that diverged (TrainingDiverged) exits 3.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigError, TrainingDiverged
from .model import hub
from .options import (
    EvalOptions,
    ExportOptions,
    FitOptions,
    GrowOptions,
    InspectOptions,
    PlanOptions,
    PrepareOptions,
    PretrainOptions,
    ReportOptions,
    add_arguments,
    from_args,
    resolve_paths,
)


def _is_rank0() -> bool:
    """Only one rank prints the closing line of a multi-rank job."""
    return os.environ.get("RANK", "0") == "0"


def cmd_prepare(opts: PrepareOptions) -> int:
    """Tokenize a corpus into sharded, memory-mapped train/val token files (DATA_DIR), on every core.

    SRC is `stdlib` (the Python standard library source, offline), comma-separated local files or
    folders (.txt, .jsonl/.json, also .gz, with a text field, .parquet), or hub:NAME, streamed through
    `datasets` and your HF cache (--split, --subset, --data-files). Without --tokenizer a byte-level BPE
    of --vocab-size tokens is trained on --tokenizer-sample-bytes of the corpus. A killed prepare
    resumes when the same command is run again.
    """
    from .data.prepare import prepare

    start = time.perf_counter()
    meta = prepare(opts)
    print(
        f"wrote {opts.out}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
        f"({meta['documents']['train']:,} + {meta['documents']['val']:,} documents, "
        f"{sum(len(meta['splits'][s]['shards']) for s in meta['splits'])} shards), vocabulary {meta['vocab_size']}, "
        f"{time.perf_counter() - start:.1f} s"
    )
    return 0


def cmd_inspect(opts: InspectOptions) -> int:
    """Print a model's shape and parameter counts and run one forward pass.

    The pass reads DATA_DIR's validation tokens when --data is given, random ids otherwise.
    """
    import numpy as np
    import torch

    from .data.reading import open_data
    from .model.hf_io import load_model

    model = load_model(opts.model).eval()
    cfg = model.cfg
    print(
        f"{cfg.model_type} ({cfg.family} family): {cfg.num_layers} layers, hidden {cfg.hidden_size}, "
        f"{cfg.num_heads} heads / {cfg.num_kv_heads} kv heads of {cfg.head_dim}, mlp {cfg.intermediate_size}, "
        f"vocab {cfg.vocab_size}, positions {cfg.positions} (max {cfg.max_positions})"
    )
    print(f"parameters: {model.num_params():,} total, {cfg.num_params(embeddings=False):,} without embeddings")
    T = min(opts.data.seq_len, cfg.max_positions)
    if opts.data.data:
        data = open_data(opts.data.data)
        data.check_model(cfg.vocab_size)
        val = data.validation()
        if len(val) < T + 1:
            raise ConfigError(f"{opts.data.data} has {len(val)} validation tokens, fewer than --seq-len {T} + 1")
        chunk = torch.from_numpy(np.asarray(val[: T + 1], dtype=np.int64))[None]
    else:
        chunk = torch.randint(0, cfg.vocab_size, (1, T + 1))
    ids, targets = chunk[:, :-1], chunk[:, 1:]
    with torch.no_grad():
        logits = model(ids)
        loss = model(ids, targets)
    print(
        f"forward: ids {tuple(ids.shape)} -> logits {tuple(logits.shape)}, loss {loss.item():.4f} "
        f"(uniform guess: {torch.log(torch.tensor(float(cfg.vocab_size))).item():.4f})"
    )
    return 0


def cmd_pretrain(opts: PretrainOptions) -> int:
    """Pretrain a model with DeepSpeed (ZeRO 1-3), from scratch or continuing an HF checkpoint.

    Works under every launcher: plain python (one process), torchrun, the deepspeed launcher, mpirun
    and srun. Writes RUN_DIR/{config.json, ds_config.json, checkpoints/, metrics.jsonl, tb/, hf/}.
    Rerunning the same command resumes from the latest complete checkpoint.
    """
    from .training.pretrain import run

    hf = run(opts)
    if hf is not None and _is_rank0():
        print(f"done: final weights in {hf}")
    return 0


def cmd_fit(opts: FitOptions) -> int:
    """Fit the LiGO operator (small HF model -> target config) on the large model's LM loss.

    Only the operator trains; under ZeRO-3 it and the frozen source weights are partitioned across
    ranks. Writes RUN_DIR/hf (the grown model), metrics and checkpoints; reruns resume.
    """
    from .growth.fit import run

    result = run(opts)
    if not result.stopped and _is_rank0():
        print(f"done: grown model in {result.hf} (fit FLOPs {result.flops:.3e})")
    return 0


def cmd_grow(opts: GrowOptions) -> int:
    """Grow a small HF model into a target shape and pretrain the grown model, in one job.

    Fits the LiGO operator (RUN_DIR/fit), writes the grown model (RUN_DIR/grown), hands it to DeepSpeed
    pretraining partitioned by ZeRO (each rank writes its own partition) and trains it (RUN_DIR/train).
    Options shared by both phases (batch, sequence length, cadence, DeepSpeed config) apply to both.

    How long to train the grown model (the --max-steps or --max-tokens of its schedule) is the choice that
    matters most: it starts near the small model's loss, so it needs far fewer tokens than a scratch run.
    Recommended: a full schedule of about a third of the scratch run's tokens, keeping the scratch run's
    --lr and --warmup-steps (cosine to the floor over the shorter run: LEMON's "keep the peak, decay
    faster"). In the CPU study (bench/README.md), over three seeds of GPT-2 and Llama pairs, models grown
    this way by LiGO reached the scratch run's final loss with 0.16-0.30 of its tokens, fit included: a
    third is the safe end. Shorter warmups did no better at a quarter of the length, wsd (--schedule
    wsd) a little better at half of it. Measure it on your own pair with bench/savings.py --budgets.
    """
    from .growth.grow import run

    hf = run(opts)
    if hf is not None and _is_rank0():
        print(f"done: trained grown model in {hf}")
    return 0


def cmd_export(opts: ExportOptions) -> int:
    """Write any saved checkpoint of a run (default: the latest) as an HF checkpoint directory."""
    from .commands.export import export

    print(f"wrote {export(opts.run, opts.out, opts.tag, opts.dtype)}")
    return 0


def cmd_eval(opts: EvalOptions) -> int:
    """Validation loss and perplexity of a model on DATA_DIR's validation windows, as training evaluates.

    MODEL is an HF directory, a Hub id, or a run directory: then its final model, evaluated by default on
    the run's own data, sequence length and number of windows, which gives the run's last val_loss.
    Under torchrun, srun or mpirun each rank evaluates its share of the windows.
    """
    from .training.evaluation import run

    result = run(opts)
    if _is_rank0():
        print(
            f"val_loss {result['val_loss']:.6f}, perplexity {result['perplexity']:.4f} over {result['windows']} "
            f"windows of {result['seq_len']} tokens ({result['model']} on {result['data']})"
        )
    return 0


def cmd_report(opts: ReportOptions) -> int:
    """Compare runs against the scratch baseline: FLOPs and time to reach its final validation loss.

    Writes DIR/report.md, DIR/report.csv and DIR/loss_vs_flops.png, and prints the table.
    """
    from .analysis.report import report

    report(opts.runs, opts.out, opts.scratch)
    print((Path(opts.out) / "report.md").read_text())
    return 0


def cmd_plan(opts: PlanOptions) -> int:
    """Per-rank memory of a fit and of pretraining, the operator's size, FLOPs and time per step, as a table.

    Reads config.json files only (TARGET, and SOURCE for the fit's row) and the DeepSpeed JSON; builds
    nothing but the operator on the meta device. Memory is a sum of named terms (ligo_ds/plan.py says
    each one's formula); bench/plan.py checks them against measured peaks. Exits 2, naming what would
    fit, when a phase needs more than --gpu-memory per rank.
    """
    from .analysis.plan import GiB, Setup, check_fits, load_zero, plan, render
    from .model.config import ModelConfig
    from .training.flops import PEAK_TFLOPS

    tgt = ModelConfig.from_file(opts.target)
    src = None if opts.source is None else ModelConfig.from_file(opts.source)
    d = opts.deepspeed
    dtype = d.dtype if d.dtype != "auto" else ("bf16" if opts.device == "cuda" else "fp32")
    # Without --peak-tflops a GPU is taken to be an H100/H200 (flops.PEAK_TFLOPS); a CPU has no time column.
    peak = d.peak_tflops * 1e12 if d.peak_tflops else (PEAK_TFLOPS["H100"] * 1e12 if opts.device == "cuda" else None)
    setup = Setup(
        world_size=opts.world_size,
        zero=load_zero(d.ds_config),
        dtype=dtype,
        device=opts.device,
        micro_batch=opts.micro_batch,
        fit_micro_batch=opts.fit_micro_batch or opts.micro_batch,
        seq_len=opts.seq_len,
        checkpointing=opts.activation_checkpointing,
        fit_checkpointing=opts.fit_activation_checkpointing,
        loss_chunk=opts.loss_chunk,
        mfu=opts.mfu,
        peak_flops=peak,
    )
    phases = plan(tgt, src, setup, opts.order)
    sizes = {"target parameters": tgt.num_params()}
    if src is not None:
        from .analysis.plan import operator_sizes

        coeffs, frozen, _, _ = operator_sizes(src, tgt, opts.order)
        sizes = {"source parameters": frozen, "operator coefficients": coeffs, **sizes}
    print(render(phases, setup, sizes))
    limit = int(opts.gpu_memory * GiB) if opts.gpu_memory and opts.device == "cuda" else None
    check_fits(phases, limit, lambda alt: plan(tgt, src, alt, opts.order), setup)
    return 0


# name -> (function, its options, whether it takes --config FILE). The order is the order of --help.
COMMANDS: dict[str, tuple[Callable[[Any], int], type, bool]] = {
    "prepare": (cmd_prepare, PrepareOptions, True),
    "inspect": (cmd_inspect, InspectOptions, False),
    "pretrain": (cmd_pretrain, PretrainOptions, True),
    "fit": (cmd_fit, FitOptions, True),
    "grow": (cmd_grow, GrowOptions, True),
    "export": (cmd_export, ExportOptions, False),
    "eval": (cmd_eval, EvalOptions, False),
    "report": (cmd_report, ReportOptions, False),
    "plan": (cmd_plan, PlanOptions, True),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ligo-ds",
        description="Grow pretrained causal LMs with a learned linear operator (LiGO) under "
        "DeepSpeed: prepare data, pretrain, fit the operator, grow, export, report.",
    )
    # The deepspeed launcher inserts --local_rank=N before the subcommand (or after it, for a script);
    # the rank is read from the environment, so both places accept and ignore it.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (fn, options, config_file) in COMMANDS.items():
        doc = (fn.__doc__ or "").strip()
        p = sub.add_parser(
            name, help=doc.splitlines()[0], description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_arguments(p, options, config_file)
        p.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    return parser


def whole_lines(stream) -> None:
    """Make each printed line reach the stream in one write. Under PYTHONUNBUFFERED (common in job
    scripts) a text stream writes straight through, so `print` sends the message and its newline as two
    writes, and mpirun or srun, merging the ranks' streams, can put another rank's line between them."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:  # a stream pytest or a caller swapped in may not be a TextIOWrapper
        reconfigure(line_buffering=True, write_through=False)


def main(argv: list[str] | None = None) -> int:
    whole_lines(sys.stdout)
    whole_lines(sys.stderr)
    args = build_parser().parse_args(argv)
    fn, options, _ = COMMANDS[args.command]
    try:
        return fn(resolve_paths(from_args(options, args), hub.resolve))
    except ConfigError as e:
        print(f"ligo-ds {args.command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:  # its own status, so a job script can tell it from a crash or bad input
        print(f"ligo-ds {args.command}: training diverged: {e}", file=sys.stderr)
        return 3
    except OSError as e:  # a read-only directory, a full disk, a missing permission: name the file
        where = f" ({e.filename})" if e.filename else ""
        print(
            f"ligo-ds {args.command}: error: {e.strerror or e}{where}; nothing already on disk was changed",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
