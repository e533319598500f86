"""A command's options seen flat: one name per option, whatever block it lives in, which is its flag
(`micro_batch` -> --micro-batch), its key in --config FILE and in the run record. From that view: a command
built from name -> value pairs and checked (`from_values`, `Command`), the pairs back (`to_flat`), and
what a run's identity holds (`identity_of`, `flat_identity`).

A command's options (a frozen dataclass subclassing `Command`) are a few fields of its own plus blocks,
each included with `declare.block(Cls, **defaults)`. A command validates itself when built: each option's
check, then each block's `check()` for rules that tie its options together, then the command's own, with
error messages that name the command's flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any

from ..errors import ConfigError
from .declare import Block, Check, excluded_defaults, flag_name


@dataclass(frozen=True)
class Flat:
    """One option as a command sees it."""

    name: str  # flag, --config key and record key
    path: tuple[str, ...]  # attribute path from the command: ("loop", "micro_batch") or ("out",)
    type: Any  # the annotation
    default: Any  # MISSING when required
    help: str
    check: Check | None
    choices: Any  # a tuple, or a registry (dict) whose keys are the choices
    shown_default: str | None
    metavar: str | None
    positional: bool
    hub: str | None  # the kind of Hub repository it may name, or None
    identity: bool | str  # declare.option's identity

    @property
    def flag(self) -> str:
        return self.name if self.positional else flag_name(self.name)


@functools.cache
def flat_options(cls: type) -> tuple[Flat, ...]:
    """Every option of command `cls`, in declaration order."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if "block" in f.metadata:
            m = f.metadata
            inner_hints = typing.get_type_hints(m["block"])
            for g in fields(m["block"]):
                if "option" not in g.metadata or (m["only"] is not None and g.name not in m["only"]):
                    continue
                default = m["defaults"].get(g.name, g.default)
                meta = dict(g.metadata["option"])
                if g.name in m["shown"]:
                    meta["shown_default"] = m["shown"][g.name]
                elif default is not None:  # a command's own value (inspect's --seq-len 128) is shown as it is
                    meta["shown_default"] = None
                out.append(Flat(m["names"].get(g.name, g.name), (f.name, g.name), inner_hints[g.name], default, **meta))
        elif "option" in f.metadata:
            out.append(Flat(f.name, (f.name,), hints[f.name], f.default, **f.metadata["option"]))
    seen = [o.name for o in out]
    assert len(set(seen)) == len(seen), f"{cls.__name__}: options share a name: {seen}"
    return tuple(out)


def flag_of(cls: type, name: str) -> str:
    """The flag of option `name` of command `cls`, as its --help lists it."""
    for o in flat_options(cls):
        if o.name == name:
            return o.flag
    raise AssertionError(f"{cls.__name__} has no option {name!r}")


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        obj = getattr(obj, name)
    return obj


def to_flat(options: Any) -> dict[str, Any]:
    """name -> value for every option: what a run records, and what from_values reads back."""
    return {o.name: _get(options, o.path) for o in flat_options(type(options))}


def values_of(block: Block) -> dict[str, Any]:
    """A block's options by their own names, in declaration order."""
    return {f.name: getattr(block, f.name) for f in fields(block) if "option" in f.metadata}


def identity_of(part: Any, **derived: Any) -> dict[str, Any]:
    """What a block (or a command's own options) puts into a run's identity: each option declared with
    identity=True under its name, as it is; an option declared with identity="KEY" enters as `derived`'s
    KEY, which its owner computes (left out when None: an entry only some runs have). Options declared
    with identity=False are left out: a resume may change them."""
    out: dict[str, Any] = {}
    wanted: set[str] = set()
    for f in fields(part):
        if "option" not in f.metadata:
            continue
        how = f.metadata["option"]["identity"]
        if how is True:
            out[f.name] = getattr(part, f.name)
        elif how:
            wanted.add(how)
    assert wanted == set(derived), (
        f"{type(part).__name__}: derived identity {sorted(derived)}, declared {sorted(wanted)}"
    )
    out.update({k: v for k, v in derived.items() if v is not None})
    return out


def flat_identity(options: Any) -> dict[str, Any]:
    """name -> value of every option of a command that is part of a run's identity, as given (flat)."""
    return {o.name: _get(options, o.path) for o in flat_options(type(options)) if o.identity is not False}


def _base(kind: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed) of an annotation."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        assert len(rest) == 1, kind
        return rest[0], True
    return kind, False


# No count an option gives (steps, tokens, bytes, samples) reaches this: 1e15 tokens is fifty times the largest
# corpora trained on. A larger one is a typo, and would overflow the arithmetic done with it (schedules, FLOPs).
MAX_INTEGER = 10**15

TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _typed(o: Flat, value: Any, where: str) -> Any:
    """`value` as option `o`'s type; values from --config FILE arrive as JSON types."""
    kind, optional = _base(o.type)
    if value is None and (optional or o.default is None):
        return None
    if typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        if isinstance(value, list) and all(isinstance(v, item) for v in value):
            return value
        raise ConfigError(f"{where}: {o.name}={value!r}, expected a list of {TYPE_NAMES[item].split(' ', 1)[1]}s")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)  # 1e9 in a JSON file
    if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: {o.name}={value!r}, expected {TYPE_NAMES[kind]}")


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
    built = {
        f.name: f.metadata["block"](
            **blocks.get(f.name, {}), **excluded_defaults(f.metadata["block"], f.metadata["only"])
        )
        for f in fields(cls)
        if "block" in f.metadata
    }
    return cls(**direct, **built)


class Command:
    """Base of a command's options: each block told the flags that set it, then validated as a whole."""

    def flag(self, name: str) -> str:
        """The flag of one of the command's own (not a block's) options."""
        return next(o.flag for o in flat_options(type(self)) if o.path == (name,))

    def __post_init__(self) -> None:
        opts = flat_options(type(self))
        for f in fields(self):
            if "block" in f.metadata:
                # A block's flags as this command names them; a block that already carries flags (passed on
                # from the command it was derived from, such as grow's fit phase) keeps its own.
                named = {o.path[1]: o.flag for o in opts if o.path[0] == f.name and len(o.path) == 2}
                part = getattr(self, f.name)
                object.__setattr__(self, f.name, dataclasses.replace(part, flags={**named, **part.flags}))
        for o in opts:
            value = _get(self, o.path)
            if value is None:
                continue
            shown = getattr(self, o.path[0]).flag(o.path[1]) if len(o.path) == 2 else o.flag
            # NaN passes every comparison's negation and inf most bounds: no option means either.
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{shown} {value!r}: expected a finite number")
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
                raise ConfigError(f"{shown} {value:.3g}: expected at most {MAX_INTEGER:.0e}, as any option counts")
            if o.choices is not None and value not in o.choices:
                raise ConfigError(f"{shown} {value!r}: expected one of {', '.join(o.choices)}")
            expected = o.check(value) if o.check is not None else None
            if expected is not None:
                raise ConfigError(f"{shown} {value!r}: expected {expected}")
        for f in fields(self):
            if "block" in f.metadata:
                getattr(self, f.name).check()
        self.check()

    def check(self) -> None:
        """Rules that tie the command's own options together (self.flag names them)."""


def resolve_paths(options: Any, resolve: Callable[[str | None, str, str], str | None]) -> Any:
    """`options` with each Hub-capable option's value passed through `resolve(value, flag, kind)`."""
    flat = to_flat(options)
    hub = [o for o in flat_options(type(options)) if o.hub]
    changed = {o.name: resolve(flat[o.name], o.flag, o.hub) for o in hub}
    if all(changed[k] == flat[k] for k in changed):
        return options
    return from_values(type(options), {**flat, **changed})
