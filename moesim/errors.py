"""Errors the CLI maps to exit codes: bad input exits 2, a failure while running exits 1."""

from __future__ import annotations


class MoesimError(Exception):
    """Base of moesim's own errors; the message is one line meant for the user."""

    exit_code = 1


class InputError(MoesimError, ValueError):
    """The scenario, a flag or an input file is wrong (exit code 2)."""

    exit_code = 2


class RunError(MoesimError, RuntimeError):
    """Something failed while simulating, sweeping or calibrating (exit code 1)."""

    exit_code = 1
