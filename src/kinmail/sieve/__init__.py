"""Sieve (RFC 5228 and extensions): compile a script, run it against a message, get actions back.

`compile_script(text)` returns a `Script` or raises `SieveError` (`line:column: message`); the interpreter
(`kinmail.sieve.interp`) runs a `Script` and returns actions without doing any I/O. Used by delivery
(`kinmail.delivery.filtering`), ManageSieve and `kinmail sieve check`. Keeps nothing on disk itself; user
scripts live in `kinmail.sieve.storage`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kinmail.sieve.errors import SieveError, SieveRuntimeError
from kinmail.sieve.spec import EXTENSIONS
from kinmail.sieve.syntax import Node, parse

__all__ = ["EXTENSIONS", "Script", "SieveError", "SieveRuntimeError", "capabilities", "compile_script"]

TESTSUITE = "vnd.dovecot.testsuite"


@dataclass(slots=True)
class Script:
    """A compiled script: the validated command tree and the extensions it requires."""

    nodes: list[Node]
    required: frozenset[str]
    name: str = ""
    warnings: list[tuple[int, int, str]] = field(default_factory=list)


def capabilities() -> list[str]:
    """The SIEVE capability list (RFC 5804 §1.7): every extension users may `require`."""
    always = ("comparator-i;octet", "comparator-i;ascii-casemap")
    return sorted(e for e in EXTENSIONS if e not in always)


IncludeLoader = Callable[[str, bool], "str | None"]


def compile_script(
    text: str,
    *,
    extensions: Iterable[str] | None = None,
    name: str = "",
    include_loader: IncludeLoader | None = None,
    max_includes: int = 255,
    max_include_depth: int = 10,
    options: dict[str, object] | None = None,
) -> Script:
    """Parse and validate `text`. `extensions` limits the capabilities a script may require (default: all
    of `EXTENSIONS`). With `include_loader(name, personal) -> text | None`, included scripts (RFC 6609) are
    checked too: missing, circular or broken ones are errors. `options` carries local policy known at
    compile time: "max_notifications" (0 forbids notify), "lists" (the extlists names that exist). Raises SieveError carrying every problem found
    (the first as line/column/message)."""
    from kinmail.sieve.validate import IncludeContext, Validator

    allowed = set(EXTENSIONS if extensions is None else extensions)
    errors: list[tuple[int, int, str]] = []
    nodes = parse(text, errors)
    context = IncludeContext(include_loader, max_includes, max_include_depth, [])
    validator = Validator(allowed, errors, context, options)
    if not errors:
        validator.run(nodes)
    if errors:
        line, col, message = min(errors, key=lambda e: (e[0], e[1]))
        exc = SieveError(line, col, message, errors)
        exc.warnings = validator.warnings
        raise exc
    return Script(nodes, frozenset(validator.required), name, validator.warnings)
