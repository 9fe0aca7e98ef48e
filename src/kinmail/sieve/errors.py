"""Errors of the Sieve compiler and interpreter.

`SieveError` is a compile-time problem at a place in the script (`line:column: message`); a script that fails
to compile may carry several (`errors`). `SieveRuntimeError` stops a running script (RFC 5228 §2.10.6): the
caller falls back to the implicit keep.
"""

from __future__ import annotations

from kinmail.core.errors import KinmailError


class SieveError(KinmailError):
    """A script that does not compile. `line`, `column` and `message` name the first problem; `errors` lists
    every problem found, each as `(line, column, message)`."""

    def __init__(
        self, line: int, column: int, message: str, errors: list[tuple[int, int, str]] | None = None
    ) -> None:
        self.line = line
        self.column = column
        self.message = message
        self.errors = errors if errors is not None else [(line, column, message)]
        self.warnings: list[tuple[int, int, str]] = []
        super().__init__(f"{line}:{column}: {message}")

    def __str__(self) -> str:
        return f"{self.line}:{self.column}: {self.message}"


class SieveRuntimeError(KinmailError):
    """A script stopped with an error while running (RFC 5228 §2.10.6); `line` is where, when known."""

    def __init__(self, message: str, line: int = 0) -> None:
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)
