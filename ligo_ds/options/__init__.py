"""Options declared once, and everything generated from the declarations.

    declare.py  `option()`, `Block` (options that travel together, and the flags that set them), `block()`
                to include one in a command, the checks
    flat.py     a command's options flat (one name each), built from name -> value pairs and checked
                (`Command`), recorded (`to_flat`), and what a run's identity holds (`identity_of`)
    argv.py     argparse flags and --config FILE from the declarations; integers as 100B; `to_args`

The blocks are declared by the code that owns what they set (training/schedule.py: Schedule, ...); each
command's options class composes them (commands/ says where each lives). This package imports nothing of
ligo_ds but its errors.
"""

from .argv import add_arguments, add_launcher_arguments, from_args, integer, load_json, to_args
from .declare import Block, above, at_least, between, block, derive, flag_name, option, unit_interval, within
from .flat import (
    Command,
    flag_of,
    flat_identity,
    flat_options,
    from_values,
    identity_of,
    resolve_paths,
    to_flat,
    values_of,
)

__all__ = [
    "Block",
    "Command",
    "above",
    "add_arguments",
    "add_launcher_arguments",
    "at_least",
    "within",
    "between",
    "block",
    "derive",
    "flag_name",
    "flag_of",
    "flat_identity",
    "flat_options",
    "from_args",
    "from_values",
    "identity_of",
    "integer",
    "load_json",
    "option",
    "resolve_paths",
    "to_args",
    "to_flat",
    "unit_interval",
    "values_of",
]
