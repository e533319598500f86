"""The `ligo-ds` subcommands, one thin module each (cli.py puts them in a table): the options class the
command takes and `run(opts)`, the function the command line calls, whose docstring is its --help.

A command whose work other code also runs takes its options from the library that does the work:
prepare (data/prepare.py), pretrain (training/pretrain.py), fit (growth/fit.py) and grow (growth/grow.py),
which runs the fit and pretraining. The others declare theirs here. No command imports another.
`demo.py` is what `make demo` runs: the main job, each stage a `ligo-ds` command.
"""

import os


def is_rank0() -> bool:
    """Only one rank prints the closing line of a multi-rank job."""
    return os.environ.get("RANK", "0") == "0"
