"""String handling shared by the Sieve validator and interpreter: encoded characters (RFC 5228 §2.4.2.4),
variable references and modifiers (RFC 5229), comparators (RFC 4790, RFC 5231) and match types (RFC 5228
§2.7.1, RFC 5231 relational, regex).

Pure functions; no I/O, nothing kept on disk.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------------------
# encoded-character (RFC 5228 §2.4.2.4)

_ENCODED = re.compile(r"\$\{(hex|unicode):([^{}$]*)\}", re.IGNORECASE)
_HEX_ITEM = re.compile(r"^[ \t\r\n]*(?:[0-9A-Fa-f]{1,2}(?:[ \t\r\n]+|$))*[ \t\r\n]*$")
_UNI_ITEM = re.compile(r"^[ \t\r\n]*(?:[0-9A-Fa-f]+(?:[ \t\r\n]+|$))*[ \t\r\n]*$")


class EncodingError(ValueError):
    pass


def decode_encoded_characters(text: str) -> str:
    """Replace `${hex:..}` and `${unicode:..}`; malformed sequences stay as written. Raises EncodingError for
    a Unicode code point that is not allowed (surrogates, beyond 10FFFF), as RFC 5228 §2.4.2.4 asks."""
    if "${" not in text:
        return text

    def repl(m: re.Match[str]) -> str:
        kind, body = m.group(1).lower(), m.group(2)
        if not body.split():
            return m.group(0)
        if kind == "hex":
            if not _HEX_ITEM.match(body):
                return m.group(0)
            raw = bytes(int(x, 16) for x in body.split())
            return raw.decode("utf-8", errors="replace")
        if not _UNI_ITEM.match(body):
            return m.group(0)
        out = []
        for item in body.split():
            cp = int(item, 16)
            if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                raise EncodingError(f"invalid unicode character 0x{item} in encoded character substitution")
            out.append(chr(cp))
        return "".join(out)

    return _ENCODED.sub(repl, text)


# ---------------------------------------------------------------------------------------------------------
# variables (RFC 5229 §3)

VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REF = re.compile(r"\$\{([^{}]*)\}")
_REF_NAME = re.compile(r"^(?:[0-9]+|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)$")
MAX_VARIABLE_SIZE = 4096
MAX_MATCH_INDEX = 32


@dataclass(frozen=True, slots=True)
class Template:
    """A string with variable references: alternating literal text and references (None when constant)."""

    parts: tuple[str | tuple[str, ...], ...]

    def expand(self, lookup: Callable[[tuple[str, ...]], str]) -> str:
        out = []
        for p in self.parts:
            out.append(p if isinstance(p, str) else lookup(p))
        return "".join(out)


def parse_template(text: str) -> str | Template:
    """The constant string itself, or a Template when `text` holds variable references."""
    if "${" not in text:
        return text
    parts: list[str | tuple[str, ...]] = []
    pos = 0
    for m in _REF.finditer(text):
        name = m.group(1)
        if not _REF_NAME.match(name):
            continue
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        parts.append(tuple(p.lower() for p in name.split(".")) if not name.isdigit() else (name,))
        pos = m.end()
    if not any(isinstance(p, tuple) for p in parts):
        return text
    if pos < len(text):
        parts.append(text[pos:])
    return Template(tuple(parts))


MAX_SUBJECT = 255


def limit_subject(text: str, limit: int = MAX_SUBJECT) -> str:
    """A generated Subject cut to `limit` characters, with an ellipsis when cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "\u2026"


def truncate_utf8(text: str, size: int) -> str:
    """Cut `text` to at most `size` UTF-8 bytes without splitting a character."""
    raw = text.encode("utf-8")
    if len(raw) <= size:
        return text
    return raw[:size].decode("utf-8", errors="ignore")


_WILDCARDS = re.compile(r"([*?\\])")


def _units_within(units: list[str], limit: int | None) -> str:
    """Join escaped units, leaving out whole units past `limit` UTF-8 bytes (never half an escape)."""
    if limit is None:
        return "".join(units)
    out: list[str] = []
    size = 0
    for unit in units:
        n = len(unit.encode("utf-8"))
        if size + n > limit:
            break
        out.append(unit)
        size += n
    return "".join(out)


def apply_modifiers(value: str, modifiers: Sequence[str], limit: int | None = None) -> str:
    """RFC 5229 §4.1 modifiers, applied by precedence (40 case, 30 first-letter case, 20 quote, 10 length)."""
    order = {
        "lower": 40,
        "upper": 40,
        "lowerfirst": 30,
        "upperfirst": 30,
        "quotewildcard": 20,
        "quoteregex": 20,
        "encodeurl": 15,
        "length": 10,
    }
    for mod in sorted(modifiers, key=lambda m: -order.get(m, 0)):
        if mod == "lower":
            value = value.lower()
        elif mod == "upper":
            value = value.upper()
        elif mod == "lowerfirst":
            value = value[:1].lower() + value[1:]
        elif mod == "upperfirst":
            value = value[:1].upper() + value[1:]
        elif mod == "quotewildcard":
            value = _units_within(["\\" + c if c in "*?\\" else c for c in value], limit)
        elif mod == "quoteregex":
            value = _units_within(["\\" + c if c in "\\^$.[]|()?*+{}" else c for c in value], limit)
        elif mod == "encodeurl":
            value = _units_within([encode_url(c) for c in value], limit)
        elif mod == "length":
            value = str(len(value))
    return value


_URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def encode_url(value: str) -> str:
    """RFC 5435 §4.1 :encodeurl: percent-encode everything but unreserved characters (RFC 3986)."""
    return "".join(c if c in _URL_SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in value)


# ---------------------------------------------------------------------------------------------------------
# comparators (RFC 4790 §9, RFC 5231 §4)

COMPARATORS = ("i;octet", "i;ascii-casemap", "i;ascii-numeric", "i;unicode-casemap")


def unicode_casemap(s: str) -> str:
    """RFC 5051 i;unicode-casemap: titlecase-insensitive (Python's case folding) after decomposition."""
    return unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", s).casefold())


RELATIONS = ("gt", "ge", "lt", "le", "eq", "ne")


def _casemap(s: str) -> str:
    # i;ascii-casemap folds only ASCII letters
    return s.translate(_ASCII_LOWER) if not s.isascii() else s.lower()


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}

_NUM = re.compile(r"^[0-9]*")


def numeric_key(s: str) -> int | None:
    """i;ascii-numeric: the leading digits as a number; None (positive infinity) when there are none."""
    m = _NUM.match(s)
    assert m is not None
    digits = m.group(0)
    return int(digits) if digits else None


def compare_order(comparator: str, a: str, b: str) -> int:
    """-1, 0 or 1 ordering `a` against `b` with `comparator`."""
    if comparator == "i;ascii-numeric":
        x, y = numeric_key(a), numeric_key(b)
        if x is None and y is None:
            return 0
        if x is None:
            return 1
        if y is None:
            return -1
        return (x > y) - (x < y)
    if comparator == "i;ascii-casemap":
        a, b = _casemap(a), _casemap(b)
        return (a > b) - (a < b)
    if comparator == "i;unicode-casemap":
        a, b = unicode_casemap(a), unicode_casemap(b)
        ab, bb = a.encode("utf-8"), b.encode("utf-8")
        return (ab > bb) - (ab < bb)
    ab, bb = a.encode("utf-8"), b.encode("utf-8")
    return (ab > bb) - (ab < bb)


def relation_holds(relation: str, order: int) -> bool:
    return {
        "gt": order > 0,
        "ge": order >= 0,
        "lt": order < 0,
        "le": order <= 0,
        "eq": order == 0,
        "ne": order != 0,
    }[relation]


def equals(comparator: str, a: str, b: str) -> bool:
    if comparator == "i;octet":
        return a == b
    if comparator == "i;ascii-casemap":
        return _casemap(a) == _casemap(b)
    if comparator == "i;unicode-casemap":
        return unicode_casemap(a) == unicode_casemap(b)
    return compare_order(comparator, a, b) == 0


def contains(comparator: str, haystack: str, needle: str) -> bool:
    if comparator == "i;octet":
        return needle in haystack
    if comparator == "i;ascii-casemap":
        return _casemap(needle) in _casemap(haystack)
    if comparator == "i;unicode-casemap":
        return unicode_casemap(needle) in unicode_casemap(haystack)
    raise ValueError(f"comparator {comparator} does not support :contains")


_WILD_CACHE: dict[str, tuple[tuple[str, str], ...]] = {}


def _wild_tokens(pattern: str) -> tuple[tuple[str, str], ...]:
    """`*`, `?` and literal characters (a backslash quotes the next character)."""
    cached = _WILD_CACHE.get(pattern)
    if cached is not None:
        return cached
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            tokens.append(("lit", pattern[i + 1]))
            i += 2
            continue
        tokens.append(("star", "") if c == "*" else ("any", "") if c == "?" else ("lit", c))
        i += 1
    if len(_WILD_CACHE) > 4096:
        _WILD_CACHE.clear()
    result = _WILD_CACHE[pattern] = tuple(tokens)
    return result


_SINGLE_STAR_CACHE: dict[tuple[tuple[str, str], ...], re.Pattern[str]] = {}


def _single_star_regex(tokens: tuple[tuple[str, str], ...]) -> re.Pattern[str]:
    rx = _SINGLE_STAR_CACHE.get(tokens)
    if rx is None:
        parts = ["(.*?)" if k == "star" else "(.)" if k == "any" else re.escape(c) for k, c in tokens]
        rx = re.compile("".join(parts) + r"\Z", re.DOTALL)
        if len(_SINGLE_STAR_CACHE) > 4096:
            _SINGLE_STAR_CACHE.clear()
        _SINGLE_STAR_CACHE[tokens] = rx
    return rx


def wildcard_match(comparator: str, value: str, pattern: str) -> list[str] | None:
    """`:matches` (RFC 5228 §2.7.1): None when `value` does not match, else the match values (the whole
    string, then what each `*` and `?` matched, each `*` as short as possible from the left, RFC 5229 §3.2).

    Linear backtracking to the last `*` only, so any pattern runs in O(len(value) × len(pattern))."""
    if comparator == "i;unicode-casemap":
        value, pattern = unicode_casemap(value), unicode_casemap(pattern)
    original = value
    if comparator == "i;ascii-casemap":
        value, pattern = _casemap(value), _casemap(pattern)
    tokens = _wild_tokens(pattern)
    if sum(1 for t in tokens if t[0] == "star") <= 1:
        # with at most one `*` a regular expression cannot backtrack badly; it is faster in C
        rx = _single_star_regex(tokens)
        found = rx.match(value)
        if found is None:
            return None
        return [original, *(original[found.start(g) : found.end(g)] for g in range(1, (rx.groups or 0) + 1))]
    n, m = len(value), len(tokens)
    spans: list[tuple[int, int]] = [(0, 0)] * m
    vi = ti = 0
    star_ti, star_vi = -1, 0
    while vi < n:
        if ti < m and tokens[ti][0] == "star":
            star_ti, star_vi = ti, vi
            spans[ti] = (vi, vi)
            ti += 1
        elif ti < m and (tokens[ti][0] == "any" or tokens[ti][1] == value[vi]):
            spans[ti] = (vi, vi + 1)
            ti += 1
            vi += 1
        elif star_ti >= 0:
            star_vi += 1
            spans[star_ti] = (spans[star_ti][0], star_vi)
            vi, ti = star_vi, star_ti + 1
        else:
            return None
    while ti < m and tokens[ti][0] == "star":
        spans[ti] = (n, n)
        ti += 1
    if ti != m:
        return None
    return [original, *(original[a:b] for (a, b), t in zip(spans, tokens, strict=True) if t[0] != "lit")]


# POSIX extended regular expressions (what Sieve's regex extension uses) translated to Python's syntax.
_POSIX_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": r" \t\r\n\v\f",
    "blank": r" \t",
    "punct": r"!-/:-@\[-`{-~",
    "xdigit": "0-9A-Fa-f",
    "cntrl": r"\x00-\x1f\x7f",
    "print": r" -~",
    "graph": r"!-~",
}


class RegexError(ValueError):
    pass


def posix_to_python(pattern: str) -> str:
    """Translate a POSIX ERE to Python `re` syntax (character classes; backslash in brackets is literal)."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "[":
            j = i + 1
            part = ["["]
            if j < n and pattern[j] == "^":
                part.append("^")
                j += 1
            if j < n and pattern[j] == "]":
                part.append(r"\]")
                j += 1
            while j < n and pattern[j] != "]":
                if pattern.startswith("[:", j):
                    end = pattern.find(":]", j + 2)
                    if end < 0:
                        raise RegexError("unterminated character class")
                    name = pattern[j + 2 : end]
                    if name not in _POSIX_CLASSES:
                        raise RegexError(f"unknown character class [:{name}:]")
                    part.append(_POSIX_CLASSES[name])
                    j = end + 2
                    continue
                ch = pattern[j]
                part.append("\\" + ch if ch in "\\[" else ch)
                j += 1
            if j >= n:
                raise RegexError("unmatched [")
            part.append("]")
            out.append("".join(part))
            i = j + 1
            continue
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            out.append(re.escape(nxt) if not nxt.isalnum() else "\\" + nxt)
            i += 2
            continue
        if c == "{" and (i == 0 or pattern[i - 1] in "(|"):
            out.append(r"\{")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


_RX_CACHE: dict[tuple[str, str], re.Pattern[str]] = {}


def nested_repetition(pattern: str) -> bool:
    """Whether a repeated group (`(...)*`, `(...)+`, `(...){n,}`) itself holds a repetition: the shape that
    makes a backtracking matcher take exponential time, which a script must not be able to cause."""
    stack: list[bool] = []
    unbounded_inside = False
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern.startswith("[:", j) and pattern.find(":]", j) > 0 else 1
            i = j + 1
            continue
        if c == "(":
            stack.append(unbounded_inside)
            unbounded_inside = False
        elif c == ")" and stack:
            inner = unbounded_inside
            unbounded_inside = stack.pop() or inner
            nxt = pattern[i + 1 : i + 2]
            if inner and nxt in ("*", "+", "{"):
                return True
        elif c in "*+" or (c == "{" and re.match(r"\{\d*,\}", pattern[i:])):
            unbounded_inside = True
        i += 1
    return False


def compile_regex(pattern: str, comparator: str) -> re.Pattern[str]:
    key = (pattern, comparator)
    rx = _RX_CACHE.get(key)
    if rx is None:
        if nested_repetition(pattern):
            raise RegexError("nested repetition such as (a+)* is not allowed (it can take exponential time)")
        flags = re.DOTALL
        if comparator == "i;ascii-casemap":
            flags |= re.IGNORECASE
        try:
            rx = re.compile(posix_to_python(pattern), flags)
        except re.error as exc:
            raise RegexError(str(exc)) from None
        if len(_RX_CACHE) > 4096:
            _RX_CACHE.clear()
        _RX_CACHE[key] = rx
    return rx


def regex_match(comparator: str, value: str, pattern: str) -> list[str] | None:
    m = compile_regex(pattern, comparator).search(value)
    if m is None:
        return None
    return [m.group(0), *[g if g is not None else "" for g in m.groups()]]


@dataclass(frozen=True, slots=True)
class Matcher:
    """A match type with its comparator: `:is`, `:contains`, `:matches`, `:regex`, `:value REL`, `:count REL`."""

    kind: str = "is"
    comparator: str = "i;ascii-casemap"
    relation: str = ""

    def match_one(self, value: str, key: str) -> list[str] | bool | None:
        """True/False, or match values (for `:matches`/`:regex`; None when no match)."""
        if self.kind == "is":
            return equals(self.comparator, value, key)
        if self.kind == "contains":
            return contains(self.comparator, value, key)
        if self.kind == "matches":
            return wildcard_match(self.comparator, value, key)
        if self.kind == "regex":
            return regex_match(self.comparator, value, key)
        if self.kind == "value":
            return relation_holds(self.relation, compare_order(self.comparator, value, key))
        raise ValueError(self.kind)
