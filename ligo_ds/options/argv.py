"""Options on the command line and in files: argparse flags generated from the declarations, --config FILE,
integers written as people write large ones, and flags for a command another program runs."""

from __future__ import annotations

import argparse
import json
import typing
from dataclasses import MISSING
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .declare import flag_name
from .flat import Flat, _base, flat_options, from_values

# Decimal multipliers for integers written as people write large ones (B is billion, as in "100B tokens").
_MULTIPLIERS = {"K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9, "T": 10**12}


def integer(text: str) -> int:
    """An integer flag's value: 4096, 1e11, 512M, 100B or 2.5T (K, M, G or B, T: powers of 1000)."""
    text = text.strip().replace("_", "")
    scale = _MULTIPLIERS.get(text[-1:].upper(), 1)
    number = text[:-1] if scale != 1 else text
    try:
        return int(number) * scale
    except ValueError:
        pass
    # Decimal, not float: 1.1K is 1100 exactly (in floats 1.1 * 1000 is 1100.0000000000002, not an integer).
    try:
        value = Decimal(number) * scale
    except InvalidOperation:
        raise ValueError(text) from None
    if not value.is_finite() or value != value.to_integral_value():
        raise ValueError(text)
    return int(value)


def shown(o: Flat) -> str | None:
    """The default as --help prints it, or None when there is none to print."""
    if o.shown_default is not None:
        return o.shown_default
    if o.default in (MISSING, None) or isinstance(o.default, bool):
        return None
    return f"{o.default:g}" if isinstance(o.default, float) else str(o.default)


def help_text(o: Flat) -> str:
    text = f"{o.help}, or a Hub id ORG/NAME[@REVISION]" if o.hub else o.help
    if o.default is MISSING:
        return f"{text} (required)"
    default = shown(o)
    return text if default is None else f"{text} (default {default})"


# The deepspeed launcher inserts --local_rank=N before the subcommand (or after it, for a script); the rank
# is read from the environment, so both places accept and ignore it. Spelled literally, not by flag_name:
# the launcher writes the underscore form (older releases) or the dash form (newer ones).
LAUNCHER_RANK = ("--local_rank", "--local-rank")


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(*LAUNCHER_RANK, type=int, help=argparse.SUPPRESS)


def add_arguments(parser: argparse.ArgumentParser, cls: type, config_file: bool) -> None:
    """Flags for every option of `cls`. Unset flags stay out of the namespace (argparse.SUPPRESS), so a
    value from --config FILE is overridden only by a flag the user gave."""
    if config_file:
        parser.add_argument(
            flag_name("config"),
            metavar="FILE",
            help="JSON object of these options by name (micro_batch: 8); flags given on the command line override it",
        )
    for o in flat_options(cls):
        kind, _ = _base(o.type)
        if o.positional:
            many = typing.get_origin(kind) is list
            parser.add_argument(
                o.name,
                nargs="+" if many else None,
                metavar=o.metavar,
                help=help_text(o),
                type=typing.get_args(kind)[0] if many else kind,
            )
        elif kind is bool:
            parser.add_argument(
                o.flag, dest=o.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text(o)
            )
        else:
            parser.add_argument(
                o.flag,
                dest=o.name,
                type=integer if kind is int else kind,
                choices=o.choices,
                default=argparse.SUPPRESS,
                metavar=o.metavar if o.choices is None else None,
                help=help_text(o),
            )


def to_args(*positional: Any, **values: Any) -> list[str]:
    """A command line for options by name, in the order given: to_args(micro_batch=8) -> ["--micro-batch",
    "8"]; a bool is its bare flag or its negation (force=True -> ["--force"]); positional values come first."""
    out = [str(p) for p in positional]
    for name, value in values.items():
        if isinstance(value, bool):
            out.append(flag_name(name if value else f"no_{name}"))
        else:
            out += [flag_name(name), str(value)]
    return out


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """The command's options from parsed arguments: --config FILE (when given), then every flag given."""
    config = getattr(args, "config", None)
    values = load_json(config, flag_name("config")) if config else {}
    values.update({o.name: getattr(args, o.name) for o in flat_options(cls) if hasattr(args, o.name)})
    return from_values(cls, values, config or "command line")


def load_json(path: str | Path, what: str) -> dict:
    """A JSON object from a file the user named, or a ConfigError that says what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        found = "is not a regular file" if path.exists() else "does not exist"  # /dev/zero, a folder, a fifo
        raise ConfigError(f"{what} {str(path)!r} {found}")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} {str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what} {str(path)!r} must hold a JSON object, not {type(value).__name__}")
    return value
