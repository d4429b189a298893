"""Domain exceptions.

The core raises these for anything the user can fix (a bad file, a bad option). The CLI turns
them into one line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class OpisError(Exception):
    """A problem with the user's input or options; the CLI maps it to exit code 2."""

    exit_code = 2


class InputError(OpisError):
    """The input data cannot be read or is not valid for evaluation."""


class ConfigError(OpisError):
    """An option value, or a combination of options, is invalid."""
