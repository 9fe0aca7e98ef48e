"""Interpreting IMAP command arguments (RFC 9051 §9): sequence sets, flags, dates, FETCH items, SEARCH keys.

Sans-I/O helpers over the tokens `imap_parser` produces; each raises `ParseError` (answered BAD) on bad
syntax. Called by the IMAP server's command modules. Nothing on disk.
"""

from __future__ import annotations

import calendar
import functools
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from kinmail.proto.imap_parser import Atom, ParseError, Str, Token

__all__ = [
    "FetchAtt",
    "SearchKey",
    "Section",
    "SeqSet",
    "as_astring",
    "as_atom",
    "as_number",
    "parse_date",
    "parse_datetime",
    "parse_fetch_atts",
    "parse_flags",
    "parse_search",
    "parse_seqset",
]

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_INDEX = {m.upper(): i + 1 for i, m in enumerate(MONTHS)}
SYSTEM_FLAGS = {"\\SEEN", "\\ANSWERED", "\\FLAGGED", "\\DELETED", "\\DRAFT"}
_SYSTEM_CASE = {
    f.upper(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent")
}
_KEYWORD_RE = re.compile(r"[^\x00-\x20(){%*\"\\\]\x7f]+")


def as_atom(token: Token, what: str = "argument") -> str:
    if not isinstance(token, Atom):
        raise ParseError(f"Expected {what}")
    return token.text


def as_astring(token: Token, what: str = "argument") -> str:
    if isinstance(token, Atom):
        return token.text
    if isinstance(token, Str):
        return token.text
    raise ParseError(f"Expected {what}")


def as_number(token: Token, what: str = "number") -> int:
    text = as_atom(token, what)
    if not text.isdigit() or len(text) > 20:
        raise ParseError(f"Expected {what}")
    return int(text)


# --- sequence sets (RFC 9051 §9 sequence-set; RFC 5182 "$") ------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeqSet:
    ranges: tuple[tuple[int | None, int | None], ...] = ()  # None means "*"
    saved: bool = False  # "$": the saved search result (RFC 5182)

    def resolve(self, largest: int) -> list[int]:
        """Values present in 1..largest, sorted; "*" is `largest` (or 0 for an empty mailbox)."""
        out: set[int] = set()
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            if a > b:
                a, b = b, a
            a = max(a, 1)
            b = min(b, largest)
            if a <= b:
                out.update(range(a, b + 1))
        return sorted(out)

    def contains(self, value: int, largest: int) -> bool:
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            if a > b:
                a, b = b, a
            if a <= value <= b:
                return True
        return False

    def uid_ranges(self, largest: int) -> list[tuple[int, int]]:
        """Ranges with "*" as `largest`, low end first (for UID sets over big mailboxes)."""
        out = []
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            out.append((min(a, b), max(a, b)))
        return out


_SEQ_RE = re.compile(r"(\d+|\*)(?::(\d+|\*))?")


_PARSED_SETS: dict[str, SeqSet] = {}  # clients send the same few sets over and over ("1:*", "4711")
_PARSED_LIMIT = 4096  # entries kept by each cache of parsed arguments; emptied when full


def parse_seqset(token: Token) -> SeqSet:
    text = as_atom(token, "sequence set")
    parsed = _PARSED_SETS.get(text)
    if parsed is None:
        parsed = _parse_seqset(text)
        if len(_PARSED_SETS) >= _PARSED_LIMIT:
            _PARSED_SETS.clear()
        _PARSED_SETS[text] = parsed
    return parsed


def _parse_seqset(text: str) -> SeqSet:
    if text == "$":
        return SeqSet(saved=True)
    ranges = []
    for item in text.split(","):
        m = _SEQ_RE.fullmatch(item)
        if not m:
            raise ParseError("Invalid sequence set")
        lo = None if m.group(1) == "*" else int(m.group(1))
        hi_text = m.group(2) if m.group(2) is not None else m.group(1)
        hi = None if hi_text == "*" else int(hi_text)
        if lo == 0 or hi == 0:
            raise ParseError("Invalid sequence number 0")
        if (lo or 0) > 0xFFFFFFFF or (hi or 0) > 0xFFFFFFFF:
            raise ParseError("Sequence number too large")
        ranges.append((lo, hi))
    return SeqSet(tuple(ranges))


def is_seqset(token: Token) -> bool:
    if not isinstance(token, Atom):
        return False
    if token.text == "$":
        return True
    return all(_SEQ_RE.fullmatch(i) for i in token.text.split(","))


# --- flags ---------------------------------------------------------------------------------------------------


def normalize_flag(text: str) -> str:
    if text.startswith("\\"):
        known = _SYSTEM_CASE.get(text.upper())
        if known is None or known == "\\Recent":
            raise ParseError(f"Invalid system flag {text}")
        return known
    if not _KEYWORD_RE.fullmatch(text):
        raise ParseError(f"Invalid keyword {text}")
    return text


def parse_flags(token: Token | list[Token]) -> list[str]:
    items = token if isinstance(token, list) else [token]
    out = []
    for item in items:
        if isinstance(item, list):
            raise ParseError("Nested list in flags")
        out.append(normalize_flag(as_atom(item, "flag")))
    return out


# --- dates ---------------------------------------------------------------------------------------------------

_DATE_RE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
_DATETIME_RE = re.compile(r"\s?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")


def parse_date(token: Token) -> date:
    text = as_astring(token, "date")
    m = _DATE_RE.fullmatch(text)
    if not m or m.group(2).upper() not in _MONTH_INDEX:
        raise ParseError("Invalid date")
    try:
        return date(int(m.group(3)), _MONTH_INDEX[m.group(2).upper()], int(m.group(1)))
    except ValueError as exc:
        raise ParseError("Invalid date") from exc


def parse_datetime(token: Token) -> float:
    text = as_astring(token, "date-time")
    m = _DATETIME_RE.fullmatch(text)
    if not m or m.group(2).upper() not in _MONTH_INDEX:
        raise ParseError("Invalid date-time")
    try:
        offset = timedelta(hours=int(m.group(8)), minutes=int(m.group(9)))
        tz = timezone(-offset if m.group(7) == "-" else offset)
        dt = datetime(
            int(m.group(3)),
            _MONTH_INDEX[m.group(2).upper()],
            int(m.group(1)),
            int(m.group(4)),
            int(m.group(5)),
            int(m.group(6)),
            tzinfo=tz,
        )
    except ValueError as exc:
        raise ParseError("Invalid date-time") from exc
    return dt.timestamp()


@functools.lru_cache(maxsize=65536)
def format_internaldate(ts: float) -> str:
    t = time.gmtime(ts)  # whole seconds, as a datetime would show them, at a third of its cost
    return (
        f"{t.tm_mday:02d}-{MONTHS[t.tm_mon - 1]}-{t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def day_start(d: date) -> float:
    return float(calendar.timegm(d.timetuple()))


# --- FETCH items (RFC 9051 §6.4.5, RFC 3516 BINARY, RFC 7162 MODSEQ) ---------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    part: tuple[int, ...] = ()
    text: str = ""  # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...] = ()

    def render(self) -> str:
        spec = ".".join(str(p) for p in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        return spec


@dataclass(frozen=True, slots=True)
class FetchAtt:
    name: str  # UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE BODY[] BINARY[] ...
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False

    def response_name(self) -> str:
        if self.section is None:
            return self.name
        base = self.name.replace(".PEEK", "")
        origin = f"<{self.partial[0]}>" if self.partial else ""
        return f"{base}[{self.section.render()}]{origin}"


_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE = {
    "UID",
    "FLAGS",
    "INTERNALDATE",
    "RFC822.SIZE",
    "ENVELOPE",
    "BODY",
    "BODYSTRUCTURE",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.TEXT",
    "MODSEQ",
    "SAVEDATE",
    "EMAILID",
    "THREADID",
}
_ATT_RE = re.compile(
    r"(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[(.*)\](?:<(\d+)(?:\.(\d+))?>)?", re.S | re.I
)


# a client asks for the same items each time
_PARSED_ATTS: dict[str | tuple[str, ...], tuple[FetchAtt, ...]] = {}


def parse_fetch_atts(token: Token) -> list[FetchAtt]:
    """The items of a FETCH (a new list the caller may change; the items themselves are shared)."""
    key: str | tuple[str, ...]
    if isinstance(token, Atom):
        key = token.text
    elif isinstance(token, list):
        texts = [t.text for t in token if isinstance(t, Atom)]
        if len(texts) != len(token):
            return _parse_fetch_atts(token)
        key = tuple(texts)
    else:
        return _parse_fetch_atts(token)
    parsed = _PARSED_ATTS.get(key)
    if parsed is None:
        parsed = tuple(_parse_fetch_atts(token))
        if len(_PARSED_ATTS) >= _PARSED_LIMIT:
            _PARSED_ATTS.clear()
        _PARSED_ATTS[key] = parsed
    return list(parsed)


def _parse_fetch_atts(token: Token) -> list[FetchAtt]:
    items = token if isinstance(token, list) else [token]
    if not items:
        raise ParseError("Empty fetch list")
    out: list[FetchAtt] = []
    for item in items:
        text = as_atom(item, "fetch item")
        up = text.upper()
        if not isinstance(token, list) and up in _MACROS:
            out.extend(FetchAtt(n) for n in _MACROS[up])
            continue
        if up in _SIMPLE:
            out.append(FetchAtt(up))
            continue
        m = _ATT_RE.fullmatch(text)
        if not m:
            raise ParseError(f"Unknown fetch item {text}")
        name = m.group(1).upper()
        section = _parse_section(m.group(2), binary=name.startswith("BINARY"))
        partial = None
        if m.group(3) is not None:
            if name == "BINARY.SIZE":
                raise ParseError("BINARY.SIZE takes no partial")
            if m.group(4) is None:
                raise ParseError("Partial needs a length")
            length = int(m.group(4))
            if length == 0:
                raise ParseError("Partial length must be positive")
            partial = (int(m.group(3)), length)
        out.append(FetchAtt(name, section, partial, peek=name.endswith(".PEEK") or name == "BINARY.SIZE"))
    return out


_SECTION_RE = re.compile(
    r"((?:[1-9]\d*)(?:\.[1-9]\d*)*)?\.?(HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME)?(?: \((.*)\))?",
    re.I | re.S,
)


def _parse_section(spec: str, binary: bool) -> Section:
    m = _SECTION_RE.fullmatch(spec)
    if not m:
        raise ParseError("Invalid section")
    nums, text, fields = m.group(1), (m.group(2) or "").upper(), m.group(3)
    if nums is None and spec[:1] == ".":
        raise ParseError("Invalid section")
    part = tuple(int(n) for n in nums.split(".")) if nums else ()
    if binary and text:
        raise ParseError("BINARY takes only part numbers")
    if text == "MIME" and not part:
        raise ParseError("MIME needs a part number")
    if text.startswith("HEADER.FIELDS"):
        if fields is None:
            raise ParseError("HEADER.FIELDS needs a list")
        names = tuple(f.strip('"').upper() for f in fields.split())
        if not names:
            raise ParseError("HEADER.FIELDS needs field names")
        return Section(part, text, names)
    if fields is not None:
        raise ParseError("Invalid section")
    if nums and not text and spec.endswith("."):
        raise ParseError("Invalid section")
    return Section(part, text)


# --- SEARCH (RFC 9051 §6.4.4, RFC 7162 MODSEQ, RFC 5182 $) --------------------------------------------------


@dataclass(slots=True)
class SearchKey:
    """One search key: `name` upper case; `args` interpreted values; `children` for AND/OR/NOT."""

    name: str
    args: tuple[object, ...] = ()
    children: list[SearchKey] = field(default_factory=list)


_NOARG = {
    "ALL",
    "ANSWERED",
    "DELETED",
    "DRAFT",
    "FLAGGED",
    "NEW",
    "OLD",
    "RECENT",
    "SEEN",
    "UNANSWERED",
    "UNDELETED",
    "UNDRAFT",
    "UNFLAGGED",
    "UNSEEN",
}
_STRING_KEYS = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}


def parse_search(tokens: list[Token], charset: str = "UTF-8") -> SearchKey:
    """All keys ANDed together."""
    pos = 0
    keys: list[SearchKey] = []
    while pos < len(tokens):
        key, pos = _search_key(tokens, pos, charset)
        keys.append(key)
    if not keys:
        raise ParseError("Missing search keys")
    return keys[0] if len(keys) == 1 else SearchKey("AND", children=keys)


def _decode(token: Token, charset: str) -> str:
    if isinstance(token, list):
        raise ParseError("Expected string")
    data = token.data if isinstance(token, Str) else token.text.encode()
    try:
        return data.decode(charset)
    except (LookupError, UnicodeDecodeError) as exc:
        raise ParseError("Invalid string for charset") from exc


def _search_key(tokens: list[Token], pos: int, charset: str) -> tuple[SearchKey, int]:
    tok = tokens[pos]
    pos += 1

    def need(n: int) -> list[Token]:
        if pos + n > len(tokens):
            raise ParseError("Missing search argument")
        return tokens[pos : pos + n]

    if isinstance(tok, list):
        if not tok:
            raise ParseError("Empty search list")
        return parse_search(tok, charset), pos
    if isinstance(tok, Str):
        raise ParseError("Unexpected string in search")
    name = tok.upper
    if name in _NOARG:
        return SearchKey(name), pos
    if name in _STRING_KEYS:
        (arg,) = need(1)
        return SearchKey(name, (_decode(arg, charset),)), pos + 1
    if name in _DATE_KEYS:
        (arg,) = need(1)
        return SearchKey(name, (parse_date(arg),)), pos + 1
    if name in ("KEYWORD", "UNKEYWORD"):
        (arg,) = need(1)
        return SearchKey(name, (as_atom(arg, "keyword"),)), pos + 1
    if name in ("LARGER", "SMALLER"):
        (arg,) = need(1)
        return SearchKey(name, (as_number(arg),)), pos + 1
    if name in ("OLDER", "YOUNGER"):
        (arg,) = need(1)
        return SearchKey(name, (as_number(arg),)), pos + 1
    if name == "HEADER":
        field_name, value = need(2)
        return SearchKey(name, (as_astring(field_name), _decode(value, charset))), pos + 2
    if name == "UID":
        (arg,) = need(1)
        return SearchKey(name, (parse_seqset(arg),)), pos + 1
    if name == "NOT":
        need(1)
        child, pos = _search_key(tokens, pos, charset)
        return SearchKey("NOT", children=[child]), pos
    if name == "OR":
        need(2)
        a, pos = _search_key(tokens, pos, charset)
        need(1)
        b, pos = _search_key(tokens, pos, charset)
        return SearchKey("OR", children=[a, b]), pos
    if name == "MODSEQ":
        args = need(1)
        if isinstance(args[0], Str):  # entry name and type (RFC 7162 §3.1.5): ignored
            need(3)
            pos += 2
        modseq = as_number(tokens[pos], "mod-sequence")
        return SearchKey("MODSEQ", (modseq,)), pos + 1
    if is_seqset(tok):
        return SearchKey("SEQ", (parse_seqset(tok),)), pos
    raise ParseError(f"Unknown search key {tok.text}")
