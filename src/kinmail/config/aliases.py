"""The `aliases` file: a Postfix virtual(5) table.

    postmaster@example.org   alice@example.org
    team@example.org         alice@example.org, bob@example.org, friend@elsewhere.example
    alice@example.org        alice@example.org, alice@elsewhere.example    # keep a copy and forward
    @example.net             alice@example.org                             # catch-all
    abuse                    alice@example.org                             # abuse@ every domain of ours

Several targets are separated by commas or whitespace; a line starting with whitespace continues the one
before; `#` starts a comment line. A target `@otherdomain` means the same user in otherdomain (virtual(5)
RESULT ADDRESS REWRITING). Keys are compared case-insensitively (kept lower case).

Called by `Directory.load` (which checks where targets lead) and `kinmail alias ...`. Reads the file it is
given; writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from kinmail.config.mapparse import logical_lines
from kinmail.config.users import address_problem, canonical_address, domain_problem, normalize_domain
from kinmail.core.errors import Problem


@dataclass(frozen=True)
class Alias:
    source: str  # "user@domain", "@domain" (catch-all) or "user" (that user at each of our domains)
    targets: tuple[str, ...]
    line: int


class AliasTable:
    """Alias entries by lower-case source; iterating yields `Alias`es in file order."""

    def __init__(self, aliases: list[Alias] | None = None) -> None:
        self._by_source: dict[str, Alias] = {alias.source: alias for alias in aliases or []}

    def get(self, source: str) -> tuple[str, ...] | None:
        alias = self._by_source.get(alias_key(source))
        return alias.targets if alias else None

    def entry(self, source: str) -> Alias | None:
        return self._by_source.get(alias_key(source))

    def __contains__(self, source: object) -> bool:
        return isinstance(source, str) and alias_key(source) in self._by_source

    def __len__(self) -> int:
        return len(self._by_source)

    def __iter__(self) -> Iterator[Alias]:
        return iter(self._by_source.values())


def alias_key(text: str) -> str:
    """An alias source or target as compared: `user@domain`, `@domain` or `user`, normalised."""
    if text.startswith("@"):
        return "@" + normalize_domain(text[1:])
    return canonical_address(text)


def split_targets(text: str) -> list[str]:
    return [t for t in text.replace(",", " ").split() if t]


def source_problem(source: str, domains: frozenset[str]) -> str | None:
    """Why `source` cannot be an alias key, or None."""
    if source.startswith("@"):
        domain = source[1:]
        problem = domain_problem(domain)
        if problem:
            return problem
    elif "@" in source:
        problem = address_problem(source)
        if problem:
            return problem
        domain = source.rpartition("@")[2]
    else:
        problem = address_problem(f"{source}@example.org")
        return problem.replace("@example.org", "") if problem else None
    if domain not in domains:
        return f"domain {domain!r} of {source} is not in domains"
    return None


def target_problem(target: str) -> str | None:
    if target.startswith("@"):
        return domain_problem(target[1:])
    if "@" not in target:
        return f"target {target!r} must be a full address (user@domain)"
    return address_problem(target)


def parse_aliases(text: str, name: str, domains: frozenset[str]) -> tuple[list[Alias], list[Problem]]:
    """Every entry and every syntax problem (`aliases:7: reason`); where targets lead is checked later."""
    aliases: list[Alias] = []
    seen: dict[str, int] = {}
    problems: list[Problem] = []
    for number, line in logical_lines(text):
        where = f"{name}:{number}"
        parts = line.split(None, 1)
        source = alias_key(parts[0])
        targets = [alias_key(t) for t in split_targets(parts[1])] if len(parts) == 2 else []
        if not targets:
            problems.append(Problem(where, f"{source}: no target address"))
            continue
        problem = source_problem(source, domains)
        if problem:
            problems.append(Problem(where, problem))
            continue
        bad = [p for p in (target_problem(t) for t in targets) if p]
        if bad:
            problems.extend(Problem(where, p) for p in bad)
            continue
        if source in seen:
            problems.append(Problem(where, f"duplicate alias {source} (first on line {seen[source]})"))
            continue
        seen[source] = number
        aliases.append(Alias(source, tuple(dict.fromkeys(targets)), number))
    return aliases, problems
