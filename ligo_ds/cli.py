"""`ligo-ds` (also `python -m ligo_ds`): the table of subcommands (commands/, one module each) and the parser
generated from their options (options/), so help, defaults and checks have one source.

Each command's `run` docstring is its --help description. Modules that train import deepspeed only when
they train: `--help`, `report` and `prepare` never import it. User errors (ConfigError) print one line and
exit 2; a run that diverged (TrainingDiverged) exits 3.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from .commands import eval as eval_
from .commands import export, fit, generate, grow, inspect, plan, prepare, pretrain, report
from .errors import ConfigError, TrainingDiverged
from .model import hub
from .options import add_arguments, add_launcher_arguments, from_args, resolve_paths

# name -> (function, its options, whether it takes --config FILE). The order is the order of --help.
COMMANDS: dict[str, tuple[Callable[[Any], int], type, bool]] = {
    name: (module.run, module.Options, module.CONFIG_FILE)
    for name, module in (
        ("prepare", prepare),
        ("inspect", inspect),
        ("pretrain", pretrain),
        ("fit", fit),
        ("grow", grow),
        ("export", export),
        ("eval", eval_),
        ("generate", generate),
        ("report", report),
        ("plan", plan),
    )
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ligo-ds",
        description="Grow pretrained causal LMs with a learned linear operator (LiGO) under "
        "DeepSpeed: prepare data, pretrain, fit the operator, grow, export, report.",
    )
    add_launcher_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (fn, options, config_file) in COMMANDS.items():
        doc = (fn.__doc__ or "").strip()
        p = sub.add_parser(
            name, help=doc.splitlines()[0], description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_arguments(p, options, config_file)
        add_launcher_arguments(p)
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
