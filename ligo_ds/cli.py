"""`ligo-ds` (also `python -m ligo_ds`): a table of subcommands, each a plain function.

Each command's docstring is its --help. User errors (ConfigError) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from .errors import ConfigError

def _is_rank0() -> bool:
    """Only one rank prints the closing line of a multi-rank job."""
    return os.environ.get("RANK", "0") == "0"


def cmd_prepare(args: argparse.Namespace) -> int:
    """Tokenize a corpus into packed, memory-mapped train/val token files (DATA_DIR).

    SRC is `stdlib` (the Python standard library source, offline), comma-separated local files or
    folders (.txt, .jsonl/.json with a text field, .parquet), or hub:NAME[:CONFIG] via `datasets`.
    Without --tokenizer a byte-level BPE of --vocab-size tokens is trained on the corpus.
    """
    import time

    from .data import PrepareOptions, prepare

    opts = PrepareOptions(source=args.source, out=args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                          val_fraction=args.val_fraction, text_field=args.text_field, num_proc=args.num_proc,
                          force=args.force)
    start = time.perf_counter()
    meta = prepare(opts)
    print(f"wrote {args.out}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
          f"({meta['documents']['train']} + {meta['documents']['val']} documents), vocabulary {meta['vocab_size']}, "
          f"{time.perf_counter() - start:.1f} s")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print a model's shape and parameter counts and run one forward pass.

    The pass reads DATA_DIR's validation tokens when --data is given, random ids otherwise.
    """
    import torch

    from .data import TokenData
    from .hf_io import load_model

    model = load_model(args.model).eval()
    cfg = model.cfg
    print(f"{cfg.model_type} ({cfg.family} family): {cfg.num_layers} layers, hidden {cfg.hidden_size}, "
          f"{cfg.num_heads} heads / {cfg.num_kv_heads} kv heads of {cfg.head_dim}, mlp {cfg.intermediate_size}, "
          f"vocab {cfg.vocab_size}, positions {cfg.positions} (max {cfg.max_positions})")
    print(f"parameters: {model.num_params():,} total, {cfg.num_params(embeddings=False):,} without embeddings")
    T = min(args.seq_len, cfg.max_positions)
    if args.data:
        data = TokenData(args.data)
        data.check_model(cfg.vocab_size)
        val = data.tokens("val")
        if len(val) < T + 1:
            raise ConfigError(f"{args.data} has {len(val)} validation tokens, fewer than --seq-len {T} + 1")
        chunk = torch.from_numpy(val[: T + 1].astype("int64"))[None]
        ids, targets = chunk[:, :-1], chunk[:, 1:]
    else:
        ids = torch.randint(0, cfg.vocab_size, (1, T + 1))
        ids, targets = ids[:, :-1], ids[:, 1:]
    with torch.no_grad():
        logits = model(ids)
        loss = model(ids, targets)
    print(f"forward: ids {tuple(ids.shape)} -> logits {tuple(logits.shape)}, loss {loss.item():.4f} "
          f"(uniform guess: {torch.log(torch.tensor(float(cfg.vocab_size))).item():.4f})")
    return 0


PRETRAIN_HELP = {
    "model": "HF config.json (train from scratch) or HF checkpoint directory (continue pretraining it)",
    "data": "DATA_DIR written by `ligo-ds prepare`",
    "out": "RUN_DIR; rerunning the same command on it resumes from its latest checkpoint",
    "ds_config": "DeepSpeed JSON, or a preset: zero1, zero2 (default), zero3, zero3_offload",
    "max_steps": "optimizer steps (or give --max-tokens)",
    "max_tokens": "training tokens, rounded up to whole steps",
    "micro_batch": "sequences per rank per forward (default 8)",
    "grad_accum": "micro-batches per optimizer step (default 1); global batch = micro x accum x ranks",
    "seq_len": "tokens per sequence (default 256)",
    "lr": "peak learning rate (default 6e-4)",
    "min_lr": "cosine floor (default lr / 10)",
    "warmup_steps": "linear warmup steps (default 100)",
    "weight_decay": "AdamW decay on matrices (default 0.1)",
    "beta1": "AdamW beta1 (default 0.9)",
    "beta2": "AdamW beta2 (default 0.95)",
    "grad_clip": "max global gradient norm, 0 disables (default 1.0)",
    "eval_every": "steps between validation passes (default 100)",
    "eval_samples": "validation windows per pass (default 64)",
    "save_every": "steps between checkpoints (default 500; one is always written at the end)",
    "log_every": "steps between metrics rows (default 10)",
    "seed": "data order and init seed (default 1337)",
    "dtype": "auto (bf16 on GPU, fp32 on CPU), bf16 or fp32",
    "peak_tflops": "device peak for MFU when it is not in the built-in table",
}


def _options(cls, args: argparse.Namespace, help_table: dict):
    """A config dataclass from --config FILE (if given) overridden by every flag the user set."""
    from .train_config import from_dict, load_json

    values = load_json(args.config, "--config") if args.config else {}
    values.update({k: getattr(args, k) for k in help_table if getattr(args, k) is not None})
    return from_dict(cls, values, args.config or "command line")


def _dataclass_args(cls, help_table: dict) -> list:
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    out = [_arg("--config", metavar="FILE", help="JSON file of these options; flags override it")]
    for f in dataclasses.fields(cls):
        kind = {int: int, float: float, str: str}[typing.get_args(hints[f.name])[0]
                                                  if typing.get_args(hints[f.name]) else hints[f.name]]
        out.append(_arg("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None,
                        metavar=f.name.upper(), help=help_table[f.name]))
    return out


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pretrain a model with DeepSpeed (ZeRO 1-3), from scratch or continuing an HF checkpoint.

    Works under every launcher: plain python (one process), torchrun, the deepspeed launcher, mpirun
    and srun. Writes RUN_DIR/{config.json, ds_config.json, checkpoints/, metrics.jsonl, tb/, hf/}.
    Rerunning the same command resumes from the latest complete checkpoint.
    """
    from .pretrain import run
    from .train_config import PretrainConfig

    cfg = _options(PretrainConfig, args, PRETRAIN_HELP)
    hf = run(cfg)
    if hf is not None and _is_rank0():
        print(f"done: final weights in {hf}")
    return 0


FIT_HELP = {
    "source": "the small model: an HF checkpoint directory",
    "target": "the large model's shape: an HF config.json of the same family, at least as large everywhere",
    "data": "DATA_DIR written by `ligo-ds prepare`",
    "out": "RUN_DIR; rerunning the same command resumes the fit",
    "steps": "operator gradient steps (default 100); 0 writes the initialisation alone (the heuristics)",
    "width_init": "select (default) | random | net2net (function preserving)",
    "depth_init": "stack (default) | interpolate | random | zero (new layers add nothing at first)",
    "init_noise": "noise on new width units and depth rows (default 0.01; 0 = exact copies, which never diverge "
                  "in training)",
    "tying": "paper (in side = out side) | inverse (in side = left inverse); default inverse for net2net",
    "order": "paper (widen, then mix over depth; default) | official (mix, then widen per target layer)",
    "operator_lr": "operator peak learning rate (default 1e-3)",
    "operator_min_lr": "cosine floor (default operator-lr / 10)",
    "operator_warmup": "warmup steps (default 10)",
    "operator_weight_decay": "AdamW decay on the operator (default 0: decay pulls new channels to zero)",
    "ds_config": "DeepSpeed JSON or preset (default zero3)",
    **{k: PRETRAIN_HELP[k] for k in ("micro_batch", "grad_accum", "seq_len", "grad_clip", "eval_every",
                                     "eval_samples", "save_every", "log_every", "seed", "dtype", "peak_tflops")},
}


def cmd_fit(args: argparse.Namespace) -> int:
    """Fit the LiGO operator (small HF model -> target config) on the large model's LM loss.

    Only the operator trains; under ZeRO-3 it and the frozen source weights are partitioned across
    ranks. Writes RUN_DIR/hf (the grown model), metrics and checkpoints; reruns resume.
    """
    from .fit import FitConfig, run

    result = run(_options(FitConfig, args, FIT_HELP))
    if not result.stopped and _is_rank0():
        print(f"done: grown model in {result.hf} (fit FLOPs {result.flops:.3e})")
    return 0


GROW_HELP = {
    **{k: v for k, v in FIT_HELP.items() if k != "steps"},
    "fit_steps": "operator gradient steps (default 100; 0 = the initialisation alone, the heuristics)",
    "fit_micro_batch": "sequences per rank per fit step (default: --micro-batch); a smaller one makes the fit "
                       "cheaper, but the operator's own cost per step stays",
    **{k: PRETRAIN_HELP[k] for k in ("max_steps", "max_tokens", "lr", "min_lr", "warmup_steps", "weight_decay",
                                     "beta1", "beta2")},
    "ds_config": "DeepSpeed JSON or preset for both phases (default zero3)",
    "out": "RUN_DIR: fit/, grown/, train/; rerunning the same command resumes in whichever phase it stopped",
}


def cmd_grow(args: argparse.Namespace) -> int:
    """Grow a small HF model into a target shape and pretrain the grown model, in one job.

    Fits the LiGO operator (RUN_DIR/fit), writes the grown model (RUN_DIR/grown), hands it to DeepSpeed
    pretraining partitioned by ZeRO (each rank writes its own partition) and trains it (RUN_DIR/train).
    """
    from .grow import GrowConfig, run

    hf = run(_options(GrowConfig, args, GROW_HELP))
    if hf is not None and _is_rank0():
        print(f"done: trained grown model in {hf}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Compare runs against the scratch baseline: FLOPs and time to reach its final validation loss.

    Writes DIR/report.md, DIR/report.csv and DIR/loss_vs_flops.png, and prints the table.
    """
    from .report import report

    report(args.runs, args.out, args.scratch)
    print((Path(args.out) / "report.md").read_text())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write any saved checkpoint of a run (default: the latest) as an HF checkpoint directory."""
    from .export import export

    out = export(args.run, args.out, args.tag)
    print(f"wrote {out}")
    return 0


def _arg(*flags: str, **kw) -> tuple[tuple[str, ...], dict]:
    return flags, kw


# name -> (function, arguments). The order is the order of --help.
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], list | str]] = {
    "prepare": (cmd_prepare, [
        _arg("--source", default="stdlib", metavar="SRC", help="stdlib | PATH[,PATH...] | hub:NAME[:CONFIG]"),
        _arg("--out", required=True, metavar="DATA_DIR", help="output directory"),
        _arg("--tokenizer", metavar="DIR", help="use DIR/tokenizer.json instead of training one"),
        _arg("--vocab-size", type=int, default=8192, help="BPE vocabulary when training (default 8192)"),
        _arg("--val-fraction", type=float, default=0.02, help="share of tokens held out (default 0.02)"),
        _arg("--text-field", default="text", help="column holding the text in json/parquet/hub data"),
        _arg("--num-proc", type=int, default=2, help="tokenizing processes (default 2)"),
        _arg("--force", action="store_true", help="replace an existing non-empty DATA_DIR"),
    ]),
    "inspect": (cmd_inspect, [
        _arg("--model", required=True, metavar="CONFIG_OR_DIR", help="HF config.json or checkpoint directory"),
        _arg("--data", metavar="DATA_DIR", help="prepared data for the forward pass"),
        _arg("--seq-len", type=int, default=128),
    ]),
    "pretrain": (cmd_pretrain, "PretrainConfig"),  # arguments generated from the dataclass
    "fit": (cmd_fit, "FitConfig"),
    "grow": (cmd_grow, "GrowConfig"),
    "export": (cmd_export, [
        _arg("run", metavar="RUN_DIR"),
        _arg("--tag", help="checkpoint tag (default: the latest)"),
        _arg("--out", required=True, metavar="DIR"),
    ]),
    "report": (cmd_report, [
        _arg("runs", nargs="+", metavar="RUN_DIR", help="pretrain and grow run directories"),
        _arg("--out", required=True, metavar="DIR"),
        _arg("--scratch", metavar="NAME", help="the baseline run's directory name (default: the best scratch run)"),
    ]),
}


def _pretrain_config():
    from .train_config import PretrainConfig
    return PretrainConfig, PRETRAIN_HELP


def _fit_config():
    from .fit import FitConfig
    return FitConfig, FIT_HELP


def _grow_config():
    from .grow import GrowConfig
    return GrowConfig, GROW_HELP


_CONFIGS = {"PretrainConfig": _pretrain_config, "FitConfig": _fit_config, "GrowConfig": _grow_config}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ligo-ds", description="Grow pretrained causal LMs with a learned linear operator (LiGO) under "
                                    "DeepSpeed: prepare data, pretrain, fit the operator, grow, export, report.")
    # The deepspeed launcher inserts --local_rank=N before the subcommand (or after it, for a script);
    # the rank is read from the environment, so both places accept and ignore it.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (fn, arguments) in COMMANDS.items():
        doc = (fn.__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.splitlines()[0], description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if isinstance(arguments, str):
            arguments = _dataclass_args(*_CONFIGS[arguments]())
        for flags, kw in arguments:
            p.add_argument(*flags, **kw)
        p.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
        p.set_defaults(fn=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"ligo-ds {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only directory, a full disk, a missing permission: name the file
        where = f" ({e.filename})" if e.filename else ""
        print(f"ligo-ds {args.command}: error: {e.strerror or e}{where}; nothing already on disk was changed",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
