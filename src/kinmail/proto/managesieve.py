"""ManageSieve protocol (RFC 5804), sans-I/O: the command parser (quoted strings, literals) and responses.

`kinmail.managesieve.session` feeds the bytes it reads to `CommandParser` and renders the `Response` values
defined here; the same parser serves the tests. No I/O, nothing on disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

CRLF = b"\r\n"
MAX_LINE = 8192  # longest line outside literals
MAX_QUOTED = 1024  # RFC 5804 §4: quoted strings are at most 1024 octets


class Status(StrEnum):
    OK = "OK"
    NO = "NO"
    BYE = "BYE"


class Code(StrEnum):
    """Response codes (RFC 5804 §1.3)."""

    AUTH_TOO_WEAK = "AUTH-TOO-WEAK"
    ENCRYPT_NEEDED = "ENCRYPT-NEEDED"
    QUOTA = "QUOTA"
    QUOTA_MAXSCRIPTS = "QUOTA/MAXSCRIPTS"
    QUOTA_MAXSIZE = "QUOTA/MAXSIZE"
    SASL = "SASL"
    TRANSITION_NEEDED = "TRANSITION-NEEDED"
    TRYLATER = "TRYLATER"
    ACTIVE = "ACTIVE"
    NONEXISTENT = "NONEXISTENT"
    ALREADYEXISTS = "ALREADYEXISTS"
    WARNINGS = "WARNINGS"


def quote(text: str) -> bytes:
    """A string as the server sends it: quoted when it can be (RFC 5804 §4), else a literal `{n}`."""
    data = text.encode("utf-8")
    if len(data) <= MAX_QUOTED and not any(c in data for c in b'\r\n\0"\\'):
        return b'"' + data + b'"'
    return b"{%d}\r\n" % len(data) + data


@dataclass(frozen=True, slots=True)
class Response:
    """`OK`, `NO` or `BYE`, with an optional response code and human-readable text."""

    status: Status
    text: str = ""
    code: str | None = None  # a Code, or "TAG {..}" built by `tag_code`

    def render(self) -> bytes:
        out = self.status.encode("ascii")
        if self.code:
            out += b" (" + self.code.encode("utf-8") + b")"
        if self.text:
            out += b" " + quote(self.text)
        return out + CRLF


def tag_code(tag: str) -> str:
    """The TAG response code that NOOP echoes (RFC 5804 §2.13)."""
    return "TAG " + quote(tag).decode("utf-8")


# Named responses.
OK_DONE = Response(Status.OK)
OK_LOGOUT = Response(Status.OK, "Logout completed")
OK_TLS = Response(Status.OK, "Begin TLS negotiation now")
OK_LOGGED_IN = Response(Status.OK, "Logged in")
OK_UNAUTHENTICATED = Response(Status.OK, "Unauthenticate completed")
OK_HAVESPACE = Response(Status.OK, "Putscript would succeed")
OK_PUT = Response(Status.OK, "Putscript completed")
OK_CHECK = Response(Status.OK, "Script is valid")
OK_ACTIVE = Response(Status.OK, "Setactive completed")
OK_DELETED = Response(Status.OK, "Deletescript completed")
OK_RENAMED = Response(Status.OK, "Renamescript completed")
OK_NOOP = Response(Status.OK, "NOOP completed")
NO_UNKNOWN = Response(Status.NO, "Unknown command")
NO_SYNTAX = Response(Status.NO, "Syntax error in arguments")
NO_NOT_AUTHENTICATED = Response(Status.NO, "Authenticate first")
NO_ALREADY_AUTHENTICATED = Response(Status.NO, "Already authenticated")
NO_TLS_ACTIVE = Response(Status.NO, "TLS is already active")
NO_TLS_UNAVAILABLE = Response(Status.NO, "TLS is not available")
NO_MECHANISM = Response(Status.NO, "Unsupported authentication mechanism")
NO_ENCRYPT_NEEDED = Response(
    Status.NO, "Plaintext authentication needs TLS (use STARTTLS)", Code.ENCRYPT_NEEDED
)
NO_AUTH_FAILED = Response(Status.NO, "Authentication failed")
NO_AUTH_CANCELLED = Response(Status.NO, "Authentication cancelled")
NO_BAD_SASL = Response(Status.NO, "Invalid SASL response")
NO_THROTTLED = Response(Status.NO, "Too many failed logins, try again later", Code.TRYLATER)
NO_NONEXISTENT = Response(Status.NO, "There is no script by that name", Code.NONEXISTENT)
NO_ACTIVE = Response(Status.NO, "The active script cannot be deleted", Code.ACTIVE)
NO_EXISTS = Response(Status.NO, "A script by that name already exists", Code.ALREADYEXISTS)
NO_MAXSIZE = Response(Status.NO, "Script is larger than the server allows", Code.QUOTA_MAXSIZE)
NO_MAXSCRIPTS = Response(Status.NO, "Too many scripts", Code.QUOTA_MAXSCRIPTS)
NO_BAD_NAME = Response(Status.NO, "Invalid script name")
NO_NOT_UTF8 = Response(Status.NO, "Script is not valid UTF-8")
NO_TRYLATER = Response(Status.NO, "Internal error, try again later", Code.TRYLATER)
BYE_TOO_MANY_ERRORS = Response(Status.BYE, "Too many errors")
BYE_TIMEOUT = Response(Status.BYE, "Disconnected for inactivity")
BYE_LINE_TOO_LONG = Response(Status.BYE, "Line too long")


@dataclass(frozen=True, slots=True)
class Atom:
    """A bare word: a command name or a number."""

    value: str


@dataclass(frozen=True, slots=True)
class TooLarge:
    """A literal longer than the parser keeps; its bytes were read and dropped."""

    size: int


Arg = str | Atom | TooLarge


@dataclass(frozen=True, slots=True)
class Command:
    """A complete command: the name upper-cased and its arguments (strings decoded from UTF-8)."""

    name: str
    args: tuple[Arg, ...] = ()


class ParseError(Exception):
    """A malformed command line; the line has been consumed and the session may go on."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


_LITERAL = re.compile(rb"\{(\d{1,10})(\+?)\}\Z")
_ATOM_CHARS = re.compile(rb"[A-Za-z0-9_.\-+/=]+")


class CommandParser:
    """Incremental parser: `feed(bytes)`, then call `next()` until it returns None (more data needed).

    `next()` returns a Command or raises ParseError. Literals `{n+}` (RFC 5804 §4) and `{n}` (accepted the
    same way, without a continuation) may appear wherever a string may; a literal over `max_literal`
    octets is read and dropped and shows up as `TooLarge`.
    """

    def __init__(self, max_literal: int, max_line: int = MAX_LINE) -> None:
        self.max_literal = max_literal
        self.max_line = max_line
        self._buf = bytearray()
        self._args: list[Arg] = []
        self._literal_left = 0
        self._literal: bytearray | None = None
        self._literal_size = 0
        self._in_literal = False
        self._discard_line = False  # after an overlong line: drop bytes up to the next LF

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def in_literal(self) -> bool:
        return self._in_literal

    def next(self) -> Command | None:
        while True:
            if self._in_literal:
                if not self._read_literal():
                    return None
                continue
            newline = self._buf.find(b"\n")
            if self._discard_line:
                if newline < 0:
                    self._buf.clear()
                    return None
                del self._buf[: newline + 1]
                self._discard_line = False
                continue
            if newline < 0:
                if len(self._buf) > self.max_line:
                    self._buf.clear()
                    self._args = []
                    self._discard_line = True
                    raise ParseError("line too long", fatal=True)
                return None
            if newline > self.max_line:
                del self._buf[: newline + 1]
                self._args = []
                raise ParseError("line too long", fatal=True)
            line = bytes(self._buf[:newline]).rstrip(b"\r")
            del self._buf[: newline + 1]
            try:
                literal = self._tokenize(line)
            except ParseError:
                self._args = []
                raise
            if literal is None:
                return self._finish()
            size, _sync = literal
            self._in_literal = True
            self._literal_size = size
            self._literal_left = size
            self._literal = bytearray() if size <= self.max_literal else None

    def _read_literal(self) -> bool:
        take = min(self._literal_left, len(self._buf))
        if self._literal is not None:
            self._literal += self._buf[:take]
        del self._buf[:take]
        self._literal_left -= take
        if self._literal_left:
            return False
        self._in_literal = False
        if self._literal is None:
            self._args.append(TooLarge(self._literal_size))
        else:
            try:
                self._args.append(bytes(self._literal).decode("utf-8"))
            except UnicodeDecodeError:
                self._args.append(TooLarge(-1))  # not UTF-8: the command handler refuses it
            self._literal = None
        return True

    def _finish(self) -> Command:
        args, self._args = self._args, []
        if not args:
            raise ParseError("empty line")
        if not isinstance(args[0], Atom):  # a bare string: a SASL response (RFC 5804 §2.1)
            return Command("", tuple(args))
        return Command(args[0].value.upper(), tuple(args[1:]))

    def _tokenize(self, line: bytes) -> tuple[int, bool] | None:
        """Append the tokens of `line` to the pending arguments; return (size, sync) when it ends in a literal."""
        pos, n = 0, len(line)
        while pos < n:
            ch = line[pos]
            if ch in b" \t":
                pos += 1
                continue
            if ch == 0x22:  # quoted string
                pos = self._quoted(line, pos + 1)
                continue
            if ch == 0x7B:  # "{": a literal, which must end the line
                match = _LITERAL.match(line, pos)
                if match is None:
                    raise ParseError("malformed literal")
                return int(match.group(1)), not match.group(2)
            match = _ATOM_CHARS.match(line, pos)
            if match is None:
                raise ParseError("unexpected character")
            self._args.append(Atom(match.group().decode("ascii")))
            pos = match.end()
            if pos < n and line[pos] not in b" \t":
                raise ParseError("unexpected character after atom")
        return None

    def _quoted(self, line: bytes, pos: int) -> int:
        out = bytearray()
        n = len(line)
        while pos < n:
            ch = line[pos]
            if ch == 0x5C:  # backslash: only \" and \\ (RFC 5804 §4 QUOTED-SPECIALS)
                if pos + 1 >= n or line[pos + 1] not in b'"\\':
                    raise ParseError("bad escape in quoted string")
                out.append(line[pos + 1])
                pos += 2
                continue
            if ch == 0x22:
                if len(out) > MAX_QUOTED:
                    raise ParseError("quoted string too long")
                try:
                    self._args.append(out.decode("utf-8"))
                except UnicodeDecodeError:
                    raise ParseError("quoted string is not UTF-8") from None
                return pos + 1
            if ch == 0:
                raise ParseError("NUL in quoted string")
            out.append(ch)
            pos += 1
        raise ParseError("unterminated quoted string")


def capability_lines(
    *,
    implementation: str,
    sasl: Iterable[str],
    sieve_extensions: Iterable[str],
    starttls: bool,
    max_redirects: int,
    notify_methods: Iterable[str] = (),
    owner: str | None = None,
) -> bytes:
    """The capability response body (RFC 5804 §1.7), without the final OK."""
    lines = [
        b'"IMPLEMENTATION" ' + quote(implementation),
        b'"SASL" ' + quote(" ".join(sasl)),
        b'"SIEVE" ' + quote(" ".join(sieve_extensions)),
    ]
    if starttls:
        lines.append(b'"STARTTLS"')
    lines.append(b'"MAXREDIRECTS" ' + quote(str(max_redirects)))
    methods = " ".join(notify_methods)
    if methods:
        lines.append(b'"NOTIFY" ' + quote(methods))
    if owner:
        lines.append(b'"OWNER" ' + quote(owner))
    lines.append(b'"VERSION" "1.0"')
    return b"".join(line + CRLF for line in lines)


def script_listing(scripts: Iterable[tuple[str, bool]]) -> bytes:
    """LISTSCRIPTS lines (RFC 5804 §2.7): each name, ` ACTIVE` after the active one."""
    return b"".join(quote(name) + (b" ACTIVE" if active else b"") + CRLF for name, active in scripts)


def literal(data: str) -> bytes:
    """A server literal `{n}CRLF...` followed by CRLF, as GETSCRIPT sends the script (RFC 5804 §2.9)."""
    raw = data.encode("utf-8")
    return b"{%d}\r\n" % len(raw) + raw + CRLF
