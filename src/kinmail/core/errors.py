"""The exception tree.

`KinmailError` is the root of every error the project raises on purpose; the CLI prints its message (no
traceback) and exits 1. `ConfigError` carries every `Problem` found at once, each with its location
(`file:line` or `file:key`) so that `kinmail check` and a failed reload can list them all.
"""

from __future__ import annotations

from dataclasses import dataclass


class KinmailError(Exception):
    """An error a user can act on; its message is shown as it is."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration: where (`users:3`, `kinmail.toml:smtpd.mynetworks`) and why."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class ConfigError(KinmailError):
    """The configuration cannot be used; `problems` lists every reason found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UsageError(KinmailError):
    """Bad input to a command (a malformed address, an unknown domain, a duplicate user)."""
