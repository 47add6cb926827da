"""The project's own input errors: what the command line reports as one line (exit status 2) without a traceback.

Every error that means "the input was wrong" -- a configuration value out of range, a command that cannot be
encoded, a GEMM that cannot be mapped, a bad command-line value, a missing input file -- derives from
:class:`InputError`; anything else is a bug and keeps its traceback.
"""

__all__ = ["InputError", "UsageError", "ToolError"]


class InputError(ValueError):
    """A bad input (the message names what was wrong and the allowed values)."""


class UsageError(InputError):
    """A bad command-line value or combination of options."""


class ToolError(RuntimeError):
    """An external tool (Verilator, yosys, nextpnr, ...) that is missing or failed; the message names it (and,
    when missing, the package that provides it)."""
