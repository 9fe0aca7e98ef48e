"""Lookup tables as Postfix defines them: indexed (`texthash:`, plain file, `inline:{}`, `static:`) and linear
(`regexp:`, `pcre:`, `cidr:`), with the table search orders of Postfix's manual pages.

- indexed files follow postmap(1)'s input format: `key whitespace value`, `#` comments, a line starting with
  whitespace continues the previous one; keys are folded to lower case. `hash:`, `lmdb:`, `btree:`, `cdb:` and
  `dbm:` read the same source file (the text a Postfix admin ran `postmap` on), so migrated specs keep working.
- regexp_table(5): `/re/flags result`, `!/re/flags result`, `if /re/` … `endif` (nesting), flags `i` (on by
  default), `m`, `x`; `$1`, `${1}`, `$(1)` and `$$` in results; the whole key is matched, first match wins.
- cidr_table(5): `network/prefix result`, `address result`, `!pattern`, `if`/`endif`, IPv4 and IPv6, first
  match wins.
- `inline:{ key=value, { key = text with spaces } }` and `static:{text}` as in Postfix's DATABASE_README.

`lookup_address` and the `access_*` helpers produce Postfix's sequences of partial keys (virtual(5) and
access(5)); pattern tables only ever see the whole key. A map read from a file is re-read when the file changes
(checked at most once a second, at lookup); a changed file that does not parse keeps the old table and logs why.

Called by `Directory.map` (every part that takes a map spec from the config), `kinmail check` and
`kinmail map query`. Reads map files; writes nothing.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable
from pathlib import Path

from kinmail.config.mapparse import (
    CidrTable,
    RegexpTable,
    parse_cidr,
    parse_indexed,
    parse_inline,
    parse_regexp,
    split_inline_items,
)
from kinmail.core.errors import ConfigError, Problem
from kinmail.core.log import get_logger

log = get_logger(__name__)

INDEXED_TYPES = frozenset({"texthash", "hash", "lmdb", "btree", "cdb", "dbm"})
PATTERN_TYPES = frozenset({"regexp", "pcre", "cidr"})
MAP_TYPES = INDEXED_TYPES | PATTERN_TYPES | {"inline", "static"}
RECHECK_SECONDS = 1.0


class Map:
    """A lookup table. `lookup(key)` returns the value or None; a cidr map's key is an IP address."""

    spec: str = ""
    is_pattern: bool = False  # regexp/cidr: only whole keys are looked up, never partial ones

    def lookup(self, key: str) -> str | None:
        raise NotImplementedError


class DictMap(Map):
    """An indexed table: keys folded to lower case."""

    def __init__(self, spec: str, table: dict[str, str]) -> None:
        self.spec = spec
        self.table = table

    def lookup(self, key: str) -> str | None:
        return self.table.get(key.lower())

    def __len__(self) -> int:
        return len(self.table)


class StaticMap(Map):
    """`static:value`: every lookup gives the same value."""

    def __init__(self, spec: str, value: str) -> None:
        self.spec = spec
        self.value = value

    def lookup(self, key: str) -> str | None:
        return self.value


class RegexpMap(Map):
    is_pattern = True

    def __init__(self, spec: str, table: RegexpTable) -> None:
        self.spec = spec
        self.table = table

    def lookup(self, key: str) -> str | None:
        return self.table.lookup(key)


class CidrMap(Map):
    is_pattern = True

    def __init__(self, spec: str, table: CidrTable) -> None:
        self.spec = spec
        self.table = table

    def lookup(self, key: str) -> str | None:
        return self.table.lookup(key)


def _build(kind: str, spec: str, text: str, name: str) -> Map:
    """Parse the text of a table of type `kind`; raises ConfigError located as `name:line`."""
    if kind in INDEXED_TYPES:
        return DictMap(spec, parse_indexed(text, name))
    if kind in {"regexp", "pcre"}:
        return RegexpMap(spec, parse_regexp(text, name, pcre=kind == "pcre"))
    if kind == "cidr":
        return CidrMap(spec, parse_cidr(text, name))
    raise ConfigError([Problem(spec, f"unknown map type {kind!r}")])


class FileMap(Map):
    """A table read from a file, re-read when the file changes (stat at most once a second, at lookup)."""

    def __init__(self, spec: str, kind: str, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.kind = kind
        self.path = path
        self.is_pattern = kind in PATTERN_TYPES
        self._clock = clock
        self._signature = self._stat()
        self._inner = self._read()
        self._checked = clock()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> Map:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError([Problem(str(self.path), f"cannot read map: {reason}")]) from None
        return _build(self.kind, self.spec, text, self.path.name)

    def refresh(self, force: bool = False) -> None:
        """Re-read the file if it changed; on a problem keep the old table and log why."""
        now = self._clock()
        if not force and now - self._checked < RECHECK_SECONDS:
            return
        self._checked = now
        signature = self._stat()
        if signature == self._signature and not force:
            return
        self._signature = signature
        try:
            self._inner = self._read()
        except ConfigError as exc:
            for problem in exc.problems:
                log.warning(
                    "map.reload_failed", map=self.spec, location=problem.location, reason=problem.message
                )
            return
        log.info("map.reloaded", map=self.spec)

    def lookup(self, key: str) -> str | None:
        self.refresh()
        return self._inner.lookup(key)


def split_spec(spec: str) -> tuple[str, str]:
    """(`type`, rest) of a map spec; a spec without a known `type:` is a plain (texthash) file."""
    kind, sep, rest = spec.partition(":")
    if sep and kind.lower() in MAP_TYPES:
        return kind.lower(), rest
    return "texthash", spec


def _inline_rules(spec: str, rest: str) -> str:
    """`regexp:{ {rule}, {rule} }` and `cidr:{...}`: one rule per line of an in-memory file."""
    return "".join(item + "\n" for item in split_inline_items(rest, spec))


def open_map(spec: str, base_dir: Path, clock: Callable[[], float] = time.monotonic) -> Map:
    """Open a map by its spec; relative file names resolve against `base_dir` (the config folder).

    Raises ConfigError (`file:line: reason`, or `spec: reason`) when it cannot be read or parsed."""
    spec = spec.strip()
    if not spec:
        raise ConfigError([Problem("(map)", "empty map spec")])
    kind, rest = split_spec(spec)
    if kind == "static":
        value = rest.strip()
        if value.startswith("{"):
            if not value.endswith("}"):
                raise ConfigError([Problem(spec, "static:{...} is missing its closing brace")])
            value = value[1:-1].strip()
        return StaticMap(spec, value)
    if kind == "inline":
        return DictMap(spec, parse_inline(rest, spec))
    if rest.lstrip().startswith("{"):
        if kind in INDEXED_TYPES:
            raise ConfigError(
                [Problem(spec, f"{kind}: takes a file name; use inline:{{...}} for inline text")]
            )
        return _build(kind, spec, _inline_rules(spec, rest), spec)
    if not rest:
        raise ConfigError([Problem(spec, "no file name after the map type")])
    path = Path(rest).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    prefix, colon, _name = spec.partition(":")
    if rest == spec and colon and prefix.isidentifier() and not path.exists():
        known = ", ".join(sorted(MAP_TYPES))
        raise ConfigError([Problem(spec, f"unknown map type {prefix!r} (known: {known})")])
    return FileMap(spec, kind, path, clock)


# --- search orders ----------------------------------------------------------------------------------------


def split_address(address: str, delimiter: str) -> tuple[str, str | None, str, str]:
    """(user, extension or None, domain, the delimiter found) of `user+ext@domain`; domain is "" for a bare
    local part. Postfix accepts several delimiter characters; the first one in the local part splits it."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    cut = min((local.find(c) for c in delimiter if local.find(c) > 0), default=-1)
    if cut > 0:
        return local[:cut], local[cut + 1 :], domain, local[cut]
    return local, None, domain, ""


def address_keys(address: str, delimiter: str = "+") -> list[str]:
    """virtual(5) order: `user+ext@domain`, `user@domain`, `user+ext`, `user`, `@domain`."""
    user, ext, domain, sep = split_address(address, delimiter)
    full = f"{user}{sep}{ext}" if ext is not None else user
    keys: list[str] = []
    if domain:
        keys.append(f"{full}@{domain}")
        if ext is not None:
            keys.append(f"{user}@{domain}")
    keys.append(full)
    if ext is not None:
        keys.append(user)
    if domain:
        keys.append(f"@{domain}")
    return list(dict.fromkeys(keys))


def lookup_address(table: Map, address: str, delimiter: str = "+") -> str | None:
    """Look `address` up in Postfix order (virtual(5)); a pattern table sees only the whole address."""
    if table.is_pattern:
        return table.lookup(address)
    for key in address_keys(address, delimiter):
        value = table.lookup(key)
        if value is not None:
            return value
    return None


def domain_keys(domain: str) -> list[str]:
    """access(5) with Postfix's default parent_domain_matches_subdomains: the domain, then its parents."""
    domain = domain.strip(".").lower()
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))] if domain else []


def access_address_keys(address: str, delimiter: str = "+") -> list[str]:
    """access(5) order for a mail address: `user+foo@domain`, `user@domain`, domain (and parents),
    `user+foo@`, `user@`. The null sender is looked up as `<>`."""
    if address in ("", "<>"):
        return ["<>"]
    user, ext, domain, sep = split_address(address, delimiter)
    full = f"{user}{sep}{ext}" if ext is not None else user
    keys = [f"{full}@{domain}"]
    if ext is not None:
        keys.append(f"{user}@{domain}")
    keys.extend(domain_keys(domain))
    keys.append(f"{full}@")
    if ext is not None:
        keys.append(f"{user}@")
    return list(dict.fromkeys(keys))


def access_ip_keys(ip: str) -> list[str]:
    """access(5) order for a client address: `1.2.3.4`, `1.2.3`, `1.2`, `1`; IPv6 by dropping `:pairs`."""
    text = ip.strip("[]").split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return [ip]
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        parts = str(addr).split(".")
        return [".".join(parts[:n]) for n in range(4, 0, -1)]
    keys = [addr.compressed]
    current = addr.compressed
    while ":" in current:  # as Postfix's split_at_right: "2001:db8::1", "2001:db8:", "2001:db8", "2001"
        current = current[: current.rfind(":")]
        if current:
            keys.append(current)
    return list(dict.fromkeys(keys))


def _first(table: Map, keys: list[str]) -> str | None:
    for key in keys:
        value = table.lookup(key)
        if value is not None:
            return value
    return None


def access_lookup_address(table: Map, address: str, delimiter: str = "+") -> str | None:
    """An access map on MAIL FROM or RCPT TO (access(5) EMAIL ADDRESS PATTERNS)."""
    if table.is_pattern:
        return table.lookup(address or "<>")
    return _first(table, access_address_keys(address, delimiter))


def access_lookup_domain(table: Map, domain: str) -> str | None:
    """An access map on a host name or HELO name (access(5) HOST NAME PATTERNS)."""
    if table.is_pattern:
        return table.lookup(domain)
    return _first(table, domain_keys(domain))


def access_lookup_ip(table: Map, ip: str) -> str | None:
    """An access map on a client IP address (cidr maps match networks; indexed maps drop octets)."""
    if table.is_pattern:
        return table.lookup(ip)
    return _first(table, access_ip_keys(ip))
