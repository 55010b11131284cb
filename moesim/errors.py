"""Errors the CLI maps to exit codes: bad input exits 2, a failure while running exits 1."""

from __future__ import annotations

from typing import Any


class MoesimError(Exception):
    """Base of moesim's own errors; the message is one line meant for the user."""

    exit_code = 1


class InputError(MoesimError, ValueError):
    """The scenario, a flag or an input file is wrong (exit code 2)."""

    exit_code = 2


class RunError(MoesimError, RuntimeError):
    """Something failed while simulating, sweeping or calibrating (exit code 1)."""

    exit_code = 1


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` clipped to ``limit`` characters for a one-line message; values whose repr
    fails (an int of more than 4300 digits, a self-referencing list) are named by their type."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        text = f"<{type(value).__name__} of {value.bit_length()} bits>" if isinstance(value, int) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
