"""User-facing errors.

`VrprobeError` carries one line meant for the person at the terminal: what is wrong and, where it helps, what to do.
The CLI prints it in red and exits 1; `UsageError` (a bad flag value or spec) exits 2.
"""


class VrprobeError(Exception):
    """A runtime error with a one-line, user-facing message (CLI exit code 1)."""


class UsageError(VrprobeError):
    """A bad argument: unknown spec, malformed option value (CLI exit code 2)."""
