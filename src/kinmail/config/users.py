"""The `users` file: one account a line, Dovecot passwd-file style.

Two line forms are read:

    alice@example.org:{ARGON2ID}$argon2id$...:quota=2G             kinmail's own: address, hash, extra fields
    alice@example.org:{SHA512-CRYPT}$6$...:1000:1000::/home/a::userdb_quota_rule=*:storage=1G   Dovecot's

Blank lines and `#` comments are skipped. Addresses are compared case-insensitively (kept lower case). Extra
fields are space-separated `key=value`; `quota=SIZE` (or Dovecot's `userdb_quota_rule=*:storage=SIZE`) sets the
quota, sizes as `500M`, `2G` (powers of 1024). An empty password field disables logins but keeps the mailbox.

Called by `Directory.load` and by `kinmail user ...` (which edits the file line by line, keeping comments).
Reads the file it is given; writes nothing (the CLI writes through `kinmail.core.atomic`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from kinmail.auth.passwords import check_stored
from kinmail.core.errors import Problem

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_MULTIPLIERS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_LOCAL = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)


def parse_size(text: str) -> int:
    """`2G`, `500M`, `1.5G`, `1024`, `10MB` -> bytes (powers of 1024). Raises ValueError."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size such as 500M or 2G")
    return int(float(match.group(1)) * _MULTIPLIERS[match.group(2).lower()])


def format_size(size: int) -> str:
    """Bytes as the shortest exact `2G`/`500M`/`12K` form (for writing the users file)."""
    for unit in ("T", "G", "M", "K"):
        multiplier = _MULTIPLIERS[unit.lower()]
        if size >= multiplier and size % multiplier == 0:
            return f"{size // multiplier}{unit}"
    return str(size)


def normalize_domain(domain: str) -> str:
    """Lower case, no trailing dot, and an internationalised name as its A-label (`bücher.example` →
    `xn--bcher-kva.example`), so that both spellings find the same domain."""
    text = domain.strip().rstrip(".").lower()
    if text.isascii():
        return text
    try:
        return text.encode("idna").decode("ascii")
    except UnicodeError:
        return text


def canonical_address(address: str) -> str:
    """`Local@Domain` as kinmail compares addresses: lower case, domain normalised (see normalize_domain)."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return address.strip().lower()
    return f"{local.lower()}@{normalize_domain(domain)}"


def address_problem(address: str) -> str | None:
    """Why `address` is not a usable `local@domain` mailbox address, or None."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return f"{address!r} is not an address of the form user@domain"
    if len(local) > 64 or not _LOCAL.match(local.lower()) or local.startswith(".") or ".." in local:
        return f"{address!r}: the part before @ has characters or dots that are not allowed"
    if not _DOMAIN.match(domain.lower()):
        return f"{address!r}: {domain!r} is not a domain name"
    return None


def domain_problem(domain: str) -> str | None:
    """Why `domain` is not a usable domain name, or None."""
    if not _DOMAIN.match(domain.lower()):
        return f"{domain!r} is not a domain name"
    return None


@dataclass(frozen=True)
class User:
    """One account. `password` is the stored hash ("" when logins are disabled); `quota` in bytes or None."""

    address: str
    password: str
    quota: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


class UserDB:
    """The accounts of the `users` file by lower-case address; iterating yields `User`s in file order."""

    def __init__(self, users: list[User] | None = None) -> None:
        self._users: dict[str, User] = {user.address: user for user in users or []}

    def get(self, address: str) -> User | None:
        return self._users.get(canonical_address(address))

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and canonical_address(address) in self._users

    def __len__(self) -> int:
        return len(self._users)

    def __iter__(self) -> Iterator[User]:
        return iter(self._users.values())

    def addresses(self) -> list[str]:
        return list(self._users)


def parse_extra(text: str) -> dict[str, str]:
    """Space-separated `key=value` fields (a bare `key` gets "")."""
    extra: dict[str, str] = {}
    for item in text.split():
        key, _, value = item.partition("=")
        extra[key] = value
    return extra


def parse_user_line(line: str) -> User:
    """One non-comment line; raises ValueError with a plain reason."""
    fields = line.split(":")
    if len(fields) < 2:
        raise ValueError("expected address:password[:extra fields]")
    address = canonical_address(fields[0])
    problem = address_problem(address)
    if problem:
        raise ValueError(problem)
    password = fields[1].strip()
    if len(fields) == 2:
        extra_text = ""
    elif "=" in fields[2] or len(fields) == 3:
        extra_text = ":".join(fields[2:])
    else:  # Dovecot: user:password:uid:gid:gecos:home:shell:extra_fields
        extra_text = ":".join(fields[7:])
    extra = parse_extra(extra_text)
    if password:
        problem = check_stored(password)
        if problem:
            raise ValueError(problem)
    quota: int | None = None
    size_text = extra.get("quota")
    rule = extra.get("userdb_quota_rule", "")
    if size_text is None and rule.startswith("*:storage="):
        size_text = rule.partition("=")[2]
    if size_text not in (None, "", "0", "none", "unlimited"):
        assert size_text is not None
        quota = parse_size(size_text)
    return User(address, password, quota, extra)


def parse_users(text: str, name: str, domains: frozenset[str]) -> tuple[list[User], list[Problem]]:
    """Every user of the file and every problem (`users:3: reason`), so that all are reported at once."""
    users: list[User] = []
    seen: dict[str, int] = {}
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{name}:{number}"
        try:
            user = parse_user_line(line)
        except ValueError as exc:
            problems.append(Problem(where, str(exc)))
            continue
        if user.domain not in domains:
            problems.append(Problem(where, f"domain {user.domain!r} of {user.address} is not in domains"))
            continue
        if user.address in seen:
            problems.append(
                Problem(where, f"duplicate user {user.address} (first on line {seen[user.address]})")
            )
            continue
        seen[user.address] = number
        users.append(user)
    return users, problems
