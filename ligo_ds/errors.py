"""User-facing errors.

`ConfigError` is raised for anything the user can fix (a bad path, a wrong shape, a typo'd key).
The CLI prints its message without a traceback and exits with status 2; internal invariants use
`assert` and keep their traceback.
"""


class ConfigError(ValueError):
    """Bad user input: the message names the offending value and what was expected."""
