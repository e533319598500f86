"""`ligo-ds` (also `python -m ligo_ds`): a table of subcommands, each a plain function.

Each command's docstring is its --help. User errors (ConfigError) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .errors import ConfigError

NOT_YET = 3  # exit status of a subcommand a later milestone fills in


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


def _not_yet(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(f"ligo-ds {name}: not implemented yet (a later milestone of the roadmap fills it in)", file=sys.stderr)
        return NOT_YET
    run.__doc__ = f"{name}: not implemented yet."
    return run


def _arg(*flags: str, **kw) -> tuple[tuple[str, ...], dict]:
    return flags, kw


# name -> (function, arguments). The order is the order of --help.
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], list]] = {
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
    "pretrain": (_not_yet("pretrain"), []),
    "fit": (_not_yet("fit"), []),
    "grow": (_not_yet("grow"), []),
    "export": (_not_yet("export"), []),
    "report": (_not_yet("report"), []),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ligo-ds", description="Grow pretrained causal LMs with a learned linear operator (LiGO) under "
                                    "DeepSpeed: prepare data, pretrain, fit the operator, grow, export, report.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (fn, arguments) in COMMANDS.items():
        doc = (fn.__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.splitlines()[0], description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        for flags, kw in arguments:
            p.add_argument(*flags, **kw)
        p.set_defaults(fn=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"ligo-ds {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
