"""Parsers for the text of Postfix-style tables (postmap(1) input, regexp_table(5), cidr_table(5), inline specs).

Pure functions from text to tables; every problem is collected and raised at once as a ConfigError whose
problems are located `file:line`. Used by `kinmail.config.maps` (and through it the users of maps) and by the
aliases parser for the shared "logical line" rules. Keeps nothing on disk.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from kinmail.core.errors import ConfigError, Problem


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each logical line (postmap(1), virtual(5) TABLE FORMAT).

    Blank lines and lines whose first non-whitespace character is `#` are skipped; a line starting with
    whitespace continues the logical line before it."""
    start = 0
    parts: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0].isspace() and parts:
            parts.append(stripped)
            continue
        if parts:
            yield start, " ".join(parts)
        start, parts = number, [raw.strip()]
    if parts:
        yield start, " ".join(parts)


def parse_indexed(text: str, name: str) -> dict[str, str]:
    """postmap(1) input: `key whitespace value`; keys folded to lower case; a repeated key is a problem."""
    table: dict[str, str] = {}
    first_line: dict[str, int] = {}
    problems: list[Problem] = []
    for number, line in logical_lines(text):
        parts = line.split(None, 1)
        key, value = parts[0].lower(), (parts[1].strip() if len(parts) == 2 else "")
        if not value:
            problems.append(Problem(f"{name}:{number}", "expected format: key whitespace value"))
            continue
        if key in table:
            problems.append(
                Problem(f"{name}:{number}", f"duplicate key {key!r} (first on line {first_line[key]})")
            )
            continue
        table[key] = value
        first_line[key] = number
    if problems:
        raise ConfigError(problems)
    return table


def split_inline_items(body: str, where: str) -> list[str]:
    """The items of `{ a, b c, { text with spaces } }`: separated by commas or whitespace; an item in braces
    keeps its commas and spaces (whitespace after `{` and before `}` is dropped). Raises ConfigError."""
    body = body.strip()
    if not body.startswith("{") or not body.endswith("}"):
        raise ConfigError([Problem(where, "expected {...} around the inline table")])
    inner = body[1:-1]
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for char in inner:
        if depth == 0 and (char == "," or char.isspace()):
            if current:
                items.append("".join(current))
                current = []
            continue
        if char == "{":
            depth += 1
            if depth == 1:
                if current:
                    items.append("".join(current))
                    current = []
                continue
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise ConfigError([Problem(where, "unbalanced '}' in the inline table")])
            if depth == 0:
                items.append("".join(current).strip())
                current = []
                continue
        current.append(char)
    if depth != 0:
        raise ConfigError([Problem(where, "unbalanced '{' in the inline table")])
    if current:
        items.append("".join(current))
    return [item for item in items if item]


def parse_inline(body: str, where: str) -> dict[str, str]:
    """`{ key=value, { key = text with spaces } }` (Postfix DATABASE_README, inline:)."""
    table: dict[str, str] = {}
    problems: list[Problem] = []
    for item in split_inline_items(body, where):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            problems.append(Problem(where, f"inline item {item!r} is not key=value"))
            continue
        table.setdefault(key, value.strip())
    if problems:
        raise ConfigError(problems)
    return table


# --- regexp_table(5) --------------------------------------------------------------------------------------

_POSIX_CLASSES = {
    "alnum": "a-zA-Z0-9",
    "alpha": "a-zA-Z",
    "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z",
    "xdigit": "0-9A-Fa-f",
}
_POSIX_CLASS = re.compile(r"\[:([a-z]+):\]")
_GROUP_REF = re.compile(r"\$(?:(\d+)|\{(\d+)\}|\((\d+)\)|(\$)|(.?))")


def _posix_to_python(pattern: str) -> str:
    """Translate what POSIX ERE has and Python's re spells differently: `[[:alpha:]]`, `\\<`, `\\>`."""

    def char_class(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in _POSIX_CLASSES:
            raise ValueError(f"unknown character class [:{name}:]")
        return _POSIX_CLASSES[name]

    pattern = _POSIX_CLASS.sub(char_class, pattern)
    return pattern.replace("\\<", "\\b").replace("\\>", "\\b")


@dataclass
class RegexpRule:
    """One line: a pattern, whether it is negated, and either a result or (for `if`) nested rules."""

    regex: re.Pattern[str]
    negated: bool
    result: str | None = None
    children: list[RegexpRule] = field(default_factory=list)
    line: int = 0


def _substitute(result: str, match: re.Match[str] | None) -> str:
    def repl(found: re.Match[str]) -> str:
        number = found.group(1) or found.group(2) or found.group(3)
        if number is not None:
            if match is None:
                return ""
            return match.group(int(number)) or ""
        return "$" if found.group(4) else found.group(0)

    return _GROUP_REF.sub(repl, result) if "$" in result else result


@dataclass
class RegexpTable:
    """Linear search; the first matching rule (inside matching `if` blocks) gives the result."""

    rules: list[RegexpRule]

    def lookup(self, key: str) -> str | None:
        return self._search(self.rules, key)

    def _search(self, rules: list[RegexpRule], key: str) -> str | None:
        for rule in rules:
            match = rule.regex.search(key)
            if (match is None) != rule.negated:
                continue
            if rule.result is None:
                found = self._search(rule.children, key)
                if found is not None:
                    return found
                continue
            return _substitute(rule.result, None if rule.negated else match)
        return None


def _parse_pattern(text: str, pcre: bool) -> tuple[re.Pattern[str], bool, str]:
    """Parse `[!]/pattern/flags` at the start of `text`; return (regex, negated, rest). Raises ValueError."""
    negated = text.startswith("!")
    if negated:
        text = text[1:].lstrip()
    if not text:
        raise ValueError("missing pattern")
    delimiter = text[0]
    if delimiter.isalnum() or delimiter.isspace() or delimiter == "\\":
        raise ValueError(f"pattern must start with a delimiter such as '/', not {delimiter!r}")
    pos = 1
    while pos < len(text) and text[pos] != delimiter:
        pos += 2 if text[pos] == "\\" else 1
    if pos >= len(text):
        raise ValueError(f"no closing {delimiter!r} after the pattern")
    body = text[1:pos]
    if delimiter != "/" and f"\\{delimiter}" in body:
        body = body.replace(f"\\{delimiter}", re.escape(delimiter))
    pos += 1
    flags_end = pos
    while flags_end < len(text) and not text[flags_end].isspace():
        flags_end += 1
    ignore_case = True
    re_flags = 0
    for flag in text[pos:flags_end]:
        if flag == "i":
            ignore_case = not ignore_case
        elif flag == "m":
            re_flags ^= re.MULTILINE
        elif flag == "x" and not pcre:
            raise ValueError("flag 'x' (basic regular expressions) is not supported; leave it out")
        elif flag == "x":
            re_flags ^= re.VERBOSE
        elif flag == "s" and pcre:
            re_flags ^= re.DOTALL
        else:
            raise ValueError(f"unknown flag {flag!r} after the pattern")
    if ignore_case:
        re_flags |= re.IGNORECASE
    source = body if pcre else _posix_to_python(body)
    try:
        regex = re.compile(source, re_flags)
    except re.error as exc:
        raise ValueError(f"bad regular expression: {exc}") from None
    return regex, negated, text[flags_end:].strip()


def _check_result(result: str, regex: re.Pattern[str], negated: bool) -> None:
    for found in _GROUP_REF.finditer(result):
        number = found.group(1) or found.group(2) or found.group(3)
        if number is not None:
            if negated:
                raise ValueError("$n substitution is not available with a negated pattern")
            if int(number) > regex.groups:
                raise ValueError(f"${number}: the pattern has only {regex.groups} group(s)")
        elif not found.group(4):
            raise ValueError("'$' must be followed by a group number or another '$'")


class _Nestable(Protocol):
    children: list[Any]


_R = TypeVar("_R", bound=_Nestable)


def _parse_nested(text: str, name: str, parse_rule: Callable[[str, int], tuple[_R, bool]]) -> list[_R]:
    """The lines of a linear table (regexp, pcre, cidr) as rules, `if PATTERN` ... `endif` blocks nested
    inside their `if` rule. `parse_rule(line, number)` gives a rule and whether it opens a block, or raises
    ValueError; every bad line is collected and raised as one ConfigError."""
    top: list[_R] = []
    stack: list[tuple[list[_R], int]] = [(top, 0)]
    problems: list[Problem] = []
    for number, line in logical_lines(text):
        try:
            if line.split(None, 1)[0].lower() == "endif":
                if len(stack) == 1:
                    raise ValueError("endif without if")
                stack.pop()
                continue
            rule, opens = parse_rule(line, number)
        except ValueError as exc:
            problems.append(Problem(f"{name}:{number}", str(exc)))
            continue
        stack[-1][0].append(rule)
        if opens:
            stack.append((rule.children, number))
    for _rules, opened in stack[1:]:
        problems.append(Problem(f"{name}:{opened}", "if without endif"))
    if problems:
        raise ConfigError(problems)
    return top


def parse_regexp(text: str, name: str, pcre: bool = False) -> RegexpTable:
    """regexp_table(5) (or pcre_table(5) with Python's regular expressions); raises ConfigError."""

    def rule(line: str, number: int) -> tuple[RegexpRule, bool]:
        if line.split(None, 1)[0].lower() == "if":
            regex, negated, rest = _parse_pattern(line[2:].lstrip(), pcre)
            if rest:
                raise ValueError(f"unexpected text after the if pattern: {rest!r}")
            return RegexpRule(regex, negated, None, [], number), True
        regex, negated, result = _parse_pattern(line, pcre)
        if not result:
            raise ValueError("no result after the pattern")
        _check_result(result, regex, negated)
        return RegexpRule(regex, negated, result, [], number), False

    return RegexpTable(_parse_nested(text, name, rule))


# --- cidr_table(5) ----------------------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A lookup key as an address: brackets, an `ipv6:` prefix and a `%zone` are allowed; IPv4-mapped
    IPv6 addresses count as IPv4. None when it is not an address."""
    text = text.strip()
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    text = text.strip("[]").split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_network(text: str) -> Network:
    """`network/prefix` or a single address (cidr_table(5) ADDRESS PATTERN SYNTAX); raises ValueError."""
    text = text.strip()
    address, slash, prefix = text.partition("/")
    address = address.strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if (
        "." in address
        and ":" not in address
        and any(len(octet) > 1 and octet.startswith("0") for octet in address.split("."))
    ):
        raise ValueError(f"{text!r}: leading zeros in an IPv4 address (Postfix reads them as octal)")
    try:
        network = ipaddress.ip_network(f"{address}/{prefix}" if slash else address, strict=True)
    except ValueError as exc:
        if slash and "host bits set" in str(exc):
            fixed = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
            raise ValueError(
                f"non-null host address bits in {text!r}, perhaps you should use {str(fixed)!r} instead"
            ) from None
        raise ValueError(f"{text!r} is not an address or network/prefix") from None
    return network


@dataclass
class CidrRule:
    network: Network
    negated: bool
    result: str | None = None
    children: list[CidrRule] = field(default_factory=list)
    line: int = 0

    def __post_init__(self) -> None:
        # Compared as integers: `address in network` of the ipaddress module is ten times slower.
        self.version = self.network.version
        self.base = int(self.network.network_address)
        self.mask = int(self.network.netmask)


@dataclass
class CidrTable:
    """Linear search over networks; first match wins (cidr_table(5) TABLE SEARCH ORDER)."""

    rules: list[CidrRule]

    def lookup(self, key: str) -> str | None:
        addr = parse_ip(key)
        if addr is None:
            return None
        return self._search(self.rules, addr.version, int(addr))

    def _search(self, rules: list[CidrRule], version: int, value: int) -> str | None:
        for rule in rules:
            inside = version == rule.version and value & rule.mask == rule.base
            if inside == rule.negated:
                continue
            if rule.result is None:
                found = self._search(rule.children, version, value)
                if found is not None:
                    return found
                continue
            return rule.result
        return None


def parse_cidr(text: str, name: str) -> CidrTable:
    """cidr_table(5); raises ConfigError listing every line that does not parse."""

    def rule(line: str, number: int) -> tuple[CidrRule, bool]:
        word, *others = line.split(None, 1)
        rest = others[0].strip() if others else ""
        if word.lower() == "if":
            pattern, _, extra = rest.partition(" ")
            if extra.strip():
                raise ValueError(f"unexpected text after the if pattern: {extra.strip()!r}")
            return CidrRule(
                parse_network(pattern.lstrip("!")), pattern.startswith("!"), None, [], number
            ), True
        negated = word.startswith("!")
        network = parse_network(word[1:] if negated else word)
        if not rest:
            raise ValueError("no result after the network")
        return CidrRule(network, negated, rest, [], number), False

    return CidrTable(_parse_nested(text, name, rule))
