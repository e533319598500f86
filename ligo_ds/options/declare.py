"""Options declared once. A field of an options dataclass carries its type (the annotation), its default,
its help and its check; argparse flags, `--config FILE`, validation and the flat dict a run records are
all generated here from those fields.

Blocks (blocks.py) are frozen dataclasses of options that travel together. A command's options
(commands.py) are a few fields of its own plus blocks, each included with `block(Cls, **defaults)`, where
`defaults` are the command's own defaults when they differ from the block's (the fit evaluates more
often than pretraining). Names are flat: every option of a command has one name, which is its flag
(`micro_batch` -> --micro-batch), its key in --config FILE and in the run record, whatever block it lives
in; `block(Cls, names={...})` renames a block's field for one command where its own name would say the
wrong thing there (grow's --fit-steps).

A command validates itself when built: each field's check, then each block's `check(flag)` for rules
that tie fields together, with error messages that name the command's own flags. (A little over 300
lines: the four generated things are one mechanism, kept together.)
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import json
import math
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# A check returns what was expected when the value is wrong ("at least 1"), None when it is fine.
Check = Callable[[Any], "str | None"]


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    check: Check | None = None,
    choices: Iterable[str] | None = None,
    shown_default: str | None = None,
    metavar: str | None = None,
    positional: bool = False,
    hub: str | None = None,
) -> Any:
    """One option. `choices` may be a registry, name -> function: its keys are the choices, read when used,
    so a kind registered later is offered too. `shown_default` describes a None default that means
    something (`lr / 10`). `hub`: the option also takes a Hub id, ORG/NAME[@REVISION], for a "model",
    a "config" or a "tokenizer" (what is fetched of it: see hub.py), resolved by `resolve_paths`."""
    meta = {
        "help": help,
        "check": check,
        "choices": choices,
        "shown_default": shown_default,
        "metavar": metavar,
        "positional": positional,
        "hub": hub,
    }
    return field(default=default, metadata={"option": meta})


def block(cls: type, *, names: dict[str, str] | None = None, **defaults: Any) -> Any:
    """Include the block `cls` in a command, with the command's own `defaults` and flat `names`."""
    unknown = sorted(set(defaults) - {f.name for f in fields(cls)})
    assert not unknown, f"{cls.__name__} has no options {unknown}"
    meta = {"block": cls, "defaults": defaults, "names": names or {}}
    if any(f.default is MISSING and f.name not in defaults for f in fields(cls)):
        return field(metadata=meta)
    return field(default_factory=functools.partial(cls, **defaults), metadata=meta)


# ---- checks ---------------------------------------------------------------------------------------


def at_least(bound: float) -> Check:
    return lambda v: None if v >= bound else f"at least {bound}"


def above(bound: float) -> Check:
    return lambda v: None if v > bound else f"more than {bound}"


def unit_interval(v: float) -> str | None:
    """[0, 1): a decay rate such as Adam's betas."""
    return None if 0 <= v < 1 else "at least 0 and below 1"


def between(low: float, high: float) -> Check:
    """Strictly between: a fraction that must leave something on both sides."""
    return lambda v: None if low < v < high else f"strictly between {low} and {high}"


# ---- the flat view --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flat:
    """One option as a command sees it."""

    name: str  # flag, --config key and record key
    path: tuple[str, ...]  # attribute path from the command: ("loop", "micro_batch") or ("out",)
    type: Any  # the annotation
    default: Any  # MISSING when required
    help: str
    check: Check | None
    choices: Iterable[str] | None  # a tuple, or a registry (dict) whose keys are the choices
    shown_default: str | None
    metavar: str | None
    positional: bool
    hub: str | None  # the kind of Hub repository it may name, or None

    @property
    def flag(self) -> str:
        return self.name if self.positional else "--" + self.name.replace("_", "-")


def _flat(name: str, path: tuple[str, ...], kind: Any, default: Any, meta: dict) -> Flat:
    return Flat(name, path, kind, default, **meta)


@functools.cache
def flat_options(cls: type) -> tuple[Flat, ...]:
    """Every option of command `cls`, in declaration order."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if "block" in f.metadata:
            inner, defaults, names = f.metadata["block"], f.metadata["defaults"], f.metadata["names"]
            inner_hints = typing.get_type_hints(inner)
            for g in fields(inner):
                out.append(
                    _flat(
                        names.get(g.name, g.name),
                        (f.name, g.name),
                        inner_hints[g.name],
                        defaults.get(g.name, g.default),
                        g.metadata["option"],
                    )
                )
        else:
            out.append(_flat(f.name, (f.name,), hints[f.name], f.default, f.metadata["option"]))
    seen = [o.name for o in out]
    assert len(set(seen)) == len(seen), f"{cls.__name__}: options share a name: {seen}"
    return tuple(out)


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        obj = getattr(obj, name)
    return obj


def to_flat(options: Any) -> dict[str, Any]:
    """name -> value for every option: what a run records, and what from_values reads back."""
    return {o.name: _get(options, o.path) for o in flat_options(type(options))}


def _base(kind: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed) of an annotation."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        assert len(rest) == 1, kind
        return rest[0], True
    return kind, False


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
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


def resolve_paths(options: Any, resolve: Callable[[str | None, str, str], str | None]) -> Any:
    """`options` with each Hub-capable option's value passed through `resolve(value, flag, kind)`."""
    flat = to_flat(options)
    hub = [o for o in flat_options(type(options)) if o.hub]
    changed = {o.name: resolve(flat[o.name], o.flag, o.hub) for o in hub}
    if all(changed[k] == flat[k] for k in changed):
        return options
    return from_values(type(options), {**flat, **changed})


def _typed(o: Flat, value: Any, where: str) -> Any:
    """`value` as option `o`'s type; values from --config FILE arrive as JSON types."""
    kind, optional = _base(o.type)
    if value is None and (optional or o.default is None):
        return None
    if typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        if isinstance(value, list) and all(isinstance(v, item) for v in value):
            return value
        raise ConfigError(f"{where}: {o.name}={value!r}, expected a list of {_TYPE_NAMES[item].split(' ', 1)[1]}s")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)  # 1e9 in a JSON file
    if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: {o.name}={value!r}, expected {_TYPE_NAMES[kind]}")


def from_values(cls: type, values: dict[str, Any], where: str = "options") -> Any:
    """Command `cls` from flat name -> value pairs (a --config file and flags, or code); unset options
    take the command's defaults. Unknown names are refused with the closest valid one."""
    opts = flat_options(cls)
    names = [o.name for o in opts]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(names)}")
    direct: dict[str, Any] = {}
    blocks: dict[str, dict[str, Any]] = {}
    for o in opts:
        if o.name in values:
            value = _typed(o, values[o.name], where)
        elif o.default is MISSING:
            raise ConfigError(f"{o.flag} is required: {o.help}")
        else:
            value = o.default
        if len(o.path) == 1:
            direct[o.path[0]] = value
        else:
            blocks.setdefault(o.path[0], {})[o.path[1]] = value
    built = {f.name: f.metadata["block"](**blocks[f.name]) for f in fields(cls) if "block" in f.metadata}
    return cls(**direct, **built)


class Command:
    """Base of a command's options: validated as a whole when built, with the command's flag names."""

    def __post_init__(self) -> None:
        opts = flat_options(type(self))
        for o in opts:
            value = _get(self, o.path)
            if value is None:
                continue
            # NaN passes every comparison's negation and inf most bounds: no option means either.
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{o.flag} {value!r}: expected a finite number")
            if o.choices is not None and value not in o.choices:
                raise ConfigError(f"{o.flag} {value!r}: expected one of {', '.join(o.choices)}")
            expected = o.check(value) if o.check is not None else None
            if expected is not None:
                raise ConfigError(f"{o.flag} {value!r}: expected {expected}")
        for f in fields(self):
            part = getattr(self, f.name)
            if dataclasses.is_dataclass(part) and hasattr(part, "check"):
                flags = {o.path[1]: o.flag for o in opts if o.path[0] == f.name and len(o.path) == 2}
                part.check(flags.__getitem__)
        if hasattr(self, "check"):
            flags = {o.path[0]: o.flag for o in opts if len(o.path) == 1}
            self.check(flags.__getitem__)


# ---- the command line -----------------------------------------------------------------------------


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


def add_arguments(parser: argparse.ArgumentParser, cls: type, config_file: bool) -> None:
    """Flags for every option of `cls`. Unset flags stay out of the namespace (argparse.SUPPRESS), so a
    value from --config FILE is overridden only by a flag the user gave."""
    if config_file:
        parser.add_argument(
            "--config",
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


def to_args(**values: Any) -> list[str]:
    """Flags for options by name, in the order given: to_args(micro_batch=8) -> ["--micro-batch", "8"]."""
    return [arg for name, value in values.items() for arg in ("--" + name.replace("_", "-"), str(value))]


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """The command's options from parsed arguments: --config FILE (when given), then every flag given."""
    config = getattr(args, "config", None)
    values = load_json(config, "--config") if config else {}
    values.update({o.name: getattr(args, o.name) for o in flat_options(cls) if hasattr(args, o.name)})
    return from_values(cls, values, config or "command line")


def load_json(path: str | Path, what: str) -> dict:
    """A JSON object from a file the user named, or a ConfigError that says what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} {str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what} {str(path)!r} must hold a JSON object, not {type(value).__name__}")
    return value
