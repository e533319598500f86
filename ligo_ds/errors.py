"""User-facing errors.

`ConfigError` is raised for anything the user can fix (a bad path, a wrong shape, a typo'd key).
The CLI prints its message without a traceback and exits with status 2; internal invariants use
`assert` and keep their traceback.
"""


class ConfigError(ValueError):
    """Bad user input: the message names the offending value and what was expected."""


class TrainingDiverged(RuntimeError):
    """Training cannot go on without a person: too many non-finite steps in a row, or a loss spike that
    rollbacks did not cure. The CLI prints the message (which names the last good checkpoint) and exits
    with status 3; nothing was saved from the bad state."""
