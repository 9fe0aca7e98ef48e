"""Sans-I/O IMAP command parser (RFC 9051 §9, RFC 3501 §9, LITERAL+ RFC 7888, BINARY literal8 RFC 3516).

The IMAP server feeds bytes from the socket into `CommandParser.feed` and pulls events with `next_event`:
a whole `Command` (tag, name, argument tokens, literals already inlined), `NeedLiteral` (the server answers
`+` for a synchronising literal, or refuses a literal that is too big), `BadInput` (the server answers BAD and
goes on) or `RawLine` (in `raw` mode, for IDLE's DONE and AUTHENTICATE responses). Limits on the length of a
command line and the size of a literal are enforced here. Nothing is kept on disk.

Arguments are tokenised generically: `Atom` (text; `BODY[HEADER.FIELDS (A B)]<0.10>` is one atom, the bracket
part kept whole), `Str` (quoted or literal, as bytes) and `list` (a parenthesised list). Command modules
interpret them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "Atom",
    "BadInput",
    "Command",
    "CommandParser",
    "NeedLiteral",
    "ParseError",
    "RawLine",
    "Str",
    "Token",
    "tokenize",
]


class ParseError(ValueError):
    """Syntax error in a command; the text goes into the BAD reply."""


class Atom:
    """An atom as sent (case kept). Compare commands and keywords through `.upper`. Immutable by convention:
    a plain class, as a frozen dataclass takes twice as long to make and a command line has several."""

    __slots__ = ("text",)
    __match_args__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return type(other) is Atom and other.text == self.text

    def __hash__(self) -> int:
        return hash((Atom, self.text))

    def __repr__(self) -> str:
        return f"Atom(text={self.text!r})"

    @property
    def upper(self) -> str:
        return self.text.upper()


@dataclass(frozen=True, slots=True)
class Str:
    """A quoted string or a literal; `literal8` marks `~{n}` (RFC 3516 §4.2)."""

    data: bytes
    literal: bool = False
    literal8: bool = False

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


Token = Atom | Str | list["Token"]


@dataclass(slots=True)
class Command:
    tag: str
    name: str  # upper case; "UID FETCH" style for UID commands
    args: list[Token] = field(default_factory=list)
    size: int = 0  # bytes on the wire, for logs


@dataclass(frozen=True, slots=True)
class NeedLiteral:
    """The client announced a literal. `sync`: it waits for `+`. `too_big`: refuse it (tag given)."""

    tag: str
    size: int
    sync: bool
    too_big: bool = False


@dataclass(frozen=True, slots=True)
class BadInput:
    tag: str  # "*" when no tag could be read
    text: str
    fatal: bool = False  # the stream cannot be resynchronised: close after replying


@dataclass(frozen=True, slots=True)
class RawLine:
    data: bytes


Event = Command | NeedLiteral | BadInput | RawLine

_LITERAL_RE = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}$")
_TAG_RE = re.compile(r"[^\x00-\x20(){%*\"\\+\x7f]+")
_ATOM_RUN = re.compile(rb'[^ (){"\x00-\x1f\x7f\[]+')  # atom bytes up to a stop or a `[`
_PLAIN_QUOTED = re.compile(rb'([^"\\\r\n\x00]*)"')  # the rest of a quoted string without escapes


class CommandParser:
    """Collects bytes into complete commands, handing out literal continuation requests on the way."""

    def __init__(self, max_line: int = 65536, max_literal: int = 64 * 1024 * 1024) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.raw = False  # True: hand out each line as RawLine (IDLE, AUTHENTICATE)
        self._buf = bytearray()
        self._parts: list[bytes | Str] = []  # line pieces and literals of the command being collected
        self._literal: tuple[int, bool] | None = None  # (size, literal8) being read
        self._skip_line = False  # discarding the rest of an over-long line
        self._total = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_event(self) -> Event | None:
        while True:
            if self._literal is not None:
                size, lit8 = self._literal
                if len(self._buf) < size:
                    return None
                data = bytes(self._buf[:size])
                del self._buf[:size]
                self._literal = None
                self._parts.append(Str(data, literal=True, literal8=lit8))
                continue
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > self.max_line:
                    tag = self._current_tag()
                    self._buf.clear()
                    if not self._skip_line:
                        self._skip_line = True
                        self._parts = []
                        return BadInput(tag, "Line too long")
                return None
            line = bytes(self._buf[: end + 1])
            del self._buf[: end + 1]
            if self._skip_line:
                self._skip_line = False
                continue
            if len(line) > self.max_line + 2:
                tag = self._current_tag(line)
                self._parts = []
                return BadInput(tag, "Line too long")
            line = line.rstrip(b"\r\n") if line.endswith(b"\r\n") else line[:-1]
            if self.raw and not self._parts:
                return RawLine(line)
            m = _LITERAL_RE.search(line) if line.endswith(b"}") else None  # most lines have no literal
            if m:
                size = int(m.group(2))
                sync = not m.group(3)
                self._parts.append(line[: m.start()])
                self._total += len(line)
                tag = self._current_tag()
                if size > self.max_literal:
                    self._parts = []
                    self._total = 0
                    if sync:
                        return NeedLiteral(tag, size, sync, too_big=True)
                    # A non-synchronising literal is on its way and cannot be refused (RFC 7888 §4).
                    return BadInput(tag, "Literal too big", fatal=True)
                self._literal = (size, bool(m.group(1)))
                self._total += size
                return NeedLiteral(tag, size, sync)
            self._parts.append(line)
            parts, self._parts = self._parts, []
            total = self._total + len(line)
            self._total = 0
            try:
                return self._command(parts, total)
            except ParseError as exc:
                tag = _tag_of(parts[0]) if parts and isinstance(parts[0], bytes) else "*"
                return BadInput(tag, str(exc))

    def _current_tag(self, line: bytes | None = None) -> str:
        first = self._parts[0] if self._parts else (line if line is not None else bytes(self._buf[:200]))
        return _tag_of(first) if isinstance(first, bytes) else "*"

    @staticmethod
    def _command(parts: list[bytes | Str], size: int) -> Command:
        first = parts[0]
        assert isinstance(first, bytes)
        if not first.strip():
            raise ParseError("Empty command line")
        tokens = tokenize(parts)
        if len(tokens) < 2 or not isinstance(tokens[0], Atom) or not isinstance(tokens[1], Atom):
            raise ParseError("Missing tag or command")
        tag = tokens[0].text
        if not _TAG_RE.fullmatch(tag):
            raise ParseError("Invalid tag")
        name = tokens[1].upper
        args = tokens[2:]
        if name == "UID":
            if not args or not isinstance(args[0], Atom):
                raise ParseError("UID needs a command")
            name = "UID " + args[0].upper
            args = args[1:]
        return Command(tag, name, args, size)


def _tag_of(line: bytes) -> str:
    tag = line.split(b" ", 1)[0].decode("ascii", "replace").strip()
    return tag if tag and _TAG_RE.fullmatch(tag) else "*"


def tokenize(parts: list[bytes | Str]) -> list[Token]:
    """Turn line pieces and literals into tokens; raise ParseError on unbalanced lists or bad quoting."""
    stack: list[list[Token]] = [[]]
    for part in parts:
        if isinstance(part, Str):
            stack[-1].append(part)
            continue
        _tokenize_line(part, stack)
    if len(stack) != 1:
        raise ParseError("Unbalanced parentheses")
    return stack[0]


def _tokenize_line(line: bytes, stack: list[list[Token]]) -> None:
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == 0x20:
            i += 1
        elif c == 0x28:  # (
            new: list[Token] = []
            stack[-1].append(new)
            stack.append(new)
            i += 1
        elif c == 0x29:  # )
            if len(stack) == 1:
                raise ParseError("Unexpected )")
            stack.pop()
            i += 1
        elif c == 0x22:  # "
            m = _PLAIN_QUOTED.match(line, i + 1)
            if m:  # the usual case: no escapes, closed on this line
                stack[-1].append(Str(m.group(1)))
                i = m.end()
                continue
            out = bytearray()
            i += 1
            while True:
                if i >= n:
                    raise ParseError("Unterminated quoted string")
                ch = line[i]
                if ch == 0x5C:  # backslash
                    if i + 1 >= n or line[i + 1] not in (0x22, 0x5C):
                        raise ParseError("Invalid escape in quoted string")
                    out.append(line[i + 1])
                    i += 2
                elif ch == 0x22:
                    i += 1
                    break
                elif ch in (0x0D, 0x0A, 0x00):
                    raise ParseError("Invalid character in quoted string")
                else:
                    out.append(ch)
                    i += 1
            stack[-1].append(Str(bytes(out)))
        elif c < 0x20 or c == 0x7F:
            raise ParseError("Invalid character")
        elif c == 0x7B:  # { outside a literal marker
            raise ParseError("Unexpected {")
        else:
            start = i
            while True:
                m = _ATOM_RUN.match(line, i)
                if m:
                    i = m.end()
                # a `[`: the bracketed section is kept whole when it closes on this line
                if i < n and line[i] == 0x5B:
                    close = _match_bracket(line, i)
                    i = i + 1 if close < 0 else close + 1
                    continue
                break
            if i == start:
                raise ParseError("Invalid character")
            stack[-1].append(Atom(line[start:i].decode("utf-8", "replace")))


def _match_bracket(line: bytes, start: int) -> int:
    close = line.find(b"]", start)
    if close < 0:
        return -1
    inner = line[start + 1 : close]
    if b"[" not in inner and b"\r" not in inner and b"\n" not in inner:
        return close  # the usual case: nothing nested
    depth = 0
    for j in range(start, len(line)):
        ch = line[j]
        if ch == 0x5B:
            depth += 1
        elif ch == 0x5D:
            depth -= 1
            if depth == 0:
                return j
        elif ch in (0x0D, 0x0A):
            return -1
    return -1
