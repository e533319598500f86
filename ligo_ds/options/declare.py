"""Declaring options: `option()` for one, `Block` for options that travel together, `block()` to include a
block in a command. Everything else (flags, --config FILE, checks, the run record, the run identity) is
generated from these declarations (flat.py, argv.py).

A block is declared by the code that owns what it sets (the Schedule block in training/schedule.py, the
Health block in training/health.py, ...). A block instance carries the flag that set each of its options
in the command it came from (`block.flag("lr")`), so a message about a value names what the user typed:
grow's operator steps are --fit-steps, and a block derived for another phase keeps its flags.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

# A check returns what was expected when the value is wrong ("at least 1"), None when it is fine.
Check = Callable[[Any], "str | None"]


def flag_name(name: str) -> str:
    """The flag of option `name`: micro_batch -> --micro-batch. The one place a flag is spelled."""
    return "--" + name.replace("_", "-")


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
    identity: bool | str = True,
) -> Any:
    """One option. `choices` may be a registry, name -> function: its keys are the choices, read when used,
    so a kind registered later is offered too. `shown_default` describes a None default that means
    something (`lr / 10`). `hub`: the option also takes a Hub id, ORG/NAME[@REVISION], for a "model",
    a "config" or a "tokenizer" (what is fetched of it: model/hub.py), resolved by `resolve_paths`.

    `identity`: whether a run's identity holds the option, so that a resume with another value is refused.
    False for what a resume may change (where a run writes, how often it logs, what it does when training
    goes wrong, how the forward runs); a string names the identity entry the option enters through, one
    its owner derives (micro-batch and accumulation enter as the global batch: flat.identity_of)."""
    meta = {
        "help": help,
        "check": check,
        "choices": choices,
        "shown_default": shown_default,
        "metavar": metavar,
        "positional": positional,
        "hub": hub,
        "identity": identity,
    }
    return field(default=default, metadata={"option": meta})


@dataclass(frozen=True, kw_only=True)
class Block:
    """Options that travel together (a frozen dataclass of `option` fields), and the flags that set them.

    `flags`: option name -> the flag that set it, filled in by the command the block is part of (flat.py),
    or carried over from the block it was derived from (`derive`). Not an option itself.
    """

    flags: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def flag(self, name: str) -> str:
        """The flag that set option `name` of this block, as the user's command spells it."""
        assert name in option_names(type(self)), f"{type(self).__name__} has no option {name!r}"
        return self.flags.get(name) or flag_name(name)

    def check(self) -> None:
        """Rules that tie the block's options together; a ConfigError names the flags (self.flag)."""


@functools.cache
def option_names(cls: type) -> tuple[str, ...]:
    """The options of a block or command class, in declaration order (blocks' `flags` is none)."""
    return tuple(f.name for f in fields(cls) if "option" in f.metadata or "block" in f.metadata)


def derive(block: Block, *, flags: Mapping[str, str] | None = None, **changes: Any) -> Block:
    """`block` with some values changed, keeping the flags that set the others; `flags` names the flags of
    the changed ones where they came from elsewhere (grow's fit phase takes --fit-micro-batch)."""
    cls = type(block)
    assert set(changes) <= set(option_names(cls)), (
        f"{cls.__name__} has no options {set(changes) - set(option_names(cls))}"
    )
    values = {name: getattr(block, name) for name in option_names(cls)}
    return cls(**{**values, **changes}, flags={**block.flags, **(flags or {})})


def block(
    cls: type,
    *,
    names: dict[str, str] | None = None,
    only: tuple[str, ...] | None = None,
    shown: dict[str, str] | None = None,
    **defaults: Any,
) -> Any:
    """Include the block `cls` in a command, with the command's own `defaults`, flat `names` (grow's
    --fit-steps), `only` some of its options (the others keep the block's defaults and are no flags of
    the command) and `shown` descriptions of None defaults that mean something there."""
    own = [f.name for f in fields(cls) if "option" in f.metadata]
    unknown = sorted((set(defaults) | set(names or {}) | set(only or ()) | set(shown or {})) - set(own))
    assert not unknown, f"{cls.__name__} has no options {unknown}"
    meta = {"block": cls, "defaults": defaults, "names": names or {}, "only": only, "shown": shown or {}}
    options = [f for f in fields(cls) if "option" in f.metadata and (only is None or f.name in only)]
    if any(f.default is MISSING and f.name not in defaults for f in options):
        return field(metadata=meta)  # a block with a required option is required itself
    return field(default_factory=functools.partial(_with_defaults, cls, defaults, only), metadata=meta)


def _with_defaults(cls: type, defaults: dict[str, Any], only: tuple[str, ...] | None) -> Any:
    return cls(**defaults, **excluded_defaults(cls, only))


def excluded_defaults(cls: type, only: tuple[str, ...] | None) -> dict[str, Any]:
    """Values for a block's options a command leaves out (`only`): their defaults, None where they have none."""
    if only is None:
        return {}
    return {
        f.name: (None if f.default is MISSING else f.default)
        for f in fields(cls)
        if "option" in f.metadata and f.name not in only and f.default_factory is MISSING
    }


# ---- checks ---------------------------------------------------------------------------------------


def at_least(bound: float) -> Check:
    return lambda v: None if v >= bound else f"at least {bound}"


def within(low: float, high: float) -> Check:
    """Inclusive bounds, for counts with a floor and a sane ceiling."""
    return lambda v: None if low <= v <= high else f"from {low:g} to {high:g}"


def above(bound: float) -> Check:
    return lambda v: None if v > bound else f"more than {bound}"


def unit_interval(v: float) -> str | None:
    """[0, 1): a decay rate such as Adam's betas."""
    return None if 0 <= v < 1 else "at least 0 and below 1"


def between(low: float, high: float) -> Check:
    """Strictly between: a fraction that must leave something on both sides."""
    return lambda v: None if low < v < high else f"strictly between {low} and {high}"
