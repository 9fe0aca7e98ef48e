"""Address lists (RFC 5322 §3.4): a lenient parser that reads what real mail contains, groups included.

Used by the ENVELOPE rendering, SEARCH FROM/TO/CC/BCC, SORT FROM/TO/CC and SORT=DISPLAY (all through
`Message`). Pure; nothing is kept on disk.

The result follows RFC 3501 §7.4.2 (ENVELOPE): each `Address` has a display name, a source route, a mailbox
(local part) and a host; a group is opened by an address whose host is None and mailbox the group name, and
closed by one whose mailbox and host are both None. Like Dovecot, a comment after a bare `user@domain`
becomes the display name when there is none, and comments elsewhere are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from kinmail.message.headers import decode_bytes, decode_words

__all__ = ["Address", "parse_addresses"]

_SPECIALS = frozenset(b"<>@,;:")
_WSP = frozenset(b" \t\r\n")


@dataclass(frozen=True, slots=True)
class Address:
    name: bytes | None
    route: bytes | None
    mailbox: bytes | None
    host: bytes | None

    @property
    def is_group_start(self) -> bool:
        return self.host is None and self.mailbox is not None

    @property
    def is_group_end(self) -> bool:
        return self.host is None and self.mailbox is None

    @property
    def addr_spec(self) -> str:
        """`mailbox@host` as text (only the mailbox when the host is missing)."""
        mailbox = decode_bytes(self.mailbox or b"")
        return f"{mailbox}@{decode_bytes(self.host)}" if self.host else mailbox

    @property
    def display_name(self) -> str:
        """The display name with RFC 2047 words decoded, or ''."""
        return decode_words(decode_bytes(self.name)) if self.name else ""


# A token is (kind, value): kind is one of "atom", "quoted", "comment", "literal" or a special character.
_Token = tuple[str, bytes]


def _tokens(s: bytes) -> list[_Token]:
    out: list[_Token] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in _WSP:
            i += 1
        elif c in _SPECIALS:
            out.append((chr(c), b""))
            i += 1
        elif c == 0x22:  # quoted-string
            buf = bytearray()
            i += 1
            while i < n and s[i] != 0x22:
                if s[i] == 0x5C and i + 1 < n:
                    i += 1
                if s[i] not in b"\r\n":
                    buf.append(s[i])
                i += 1
            out.append(("quoted", bytes(buf)))
            i += 1
        elif c == 0x28:  # comment, may nest
            buf = bytearray()
            depth = 1
            i += 1
            while i < n:
                ch = s[i]
                if ch == 0x5C and i + 1 < n:
                    buf.append(s[i + 1])
                    i += 2
                    continue
                if ch == 0x28:
                    depth += 1
                elif ch == 0x29:
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                if ch not in b"\r\n":
                    buf.append(ch)
                i += 1
            out.append(("comment", bytes(buf)))
        elif c == 0x5B:  # domain literal
            end = s.find(b"]", i)
            end = n - 1 if end < 0 else end
            out.append(("literal", s[i : end + 1]))
            i = end + 1
        elif c == 0x29 or c == 0x5D:  # stray closers
            i += 1
        else:
            start = i
            while i < n and s[i] not in _WSP and s[i] not in _SPECIALS and s[i] not in b'"()[]':
                i += 1
            out.append(("atom", s[start:i]))
    return out


class _Parser:
    def __init__(self, value: bytes) -> None:
        self.toks = _tokens(value)
        self.i = 0
        self.out: list[Address] = []

    def peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def parse(self) -> list[Address]:
        while self.i < len(self.toks):
            if self.peek() in (",", ";", ">"):
                self.i += 1
                continue
            self.mailbox_or_group(in_group=False)
        return self.out

    def phrase(self) -> tuple[list[bytes], bytes | None]:
        """Words up to the next special; returns them and the last comment seen."""
        words: list[bytes] = []
        comment: bytes | None = None
        while self.i < len(self.toks):
            kind, val = self.toks[self.i]
            if kind in ("atom", "quoted", "literal"):
                words.append(val)
            elif kind == "comment":
                comment = val
            else:
                break
            self.i += 1
        return words, comment

    def mailbox_or_group(self, in_group: bool) -> None:
        words, comment = self.phrase()
        kind = self.peek()
        if kind == ":" and not in_group:
            self.i += 1
            self.out.append(Address(None, None, b" ".join(words), None))
            while self.i < len(self.toks):
                k = self.peek()
                if k == ";":
                    self.i += 1
                    break
                if k in (",", ">", ":"):
                    self.i += 1
                    continue
                self.mailbox_or_group(in_group=True)
            self.out.append(Address(None, None, None, None))
        elif kind == "<":
            self.i += 1
            name = b" ".join(words) or None
            self.angle(name)
        elif kind == "@":
            self.i += 1
            local = b"".join(words)
            host, comment2 = self.domain(stop=(",", ";", "<", ">"))
            name = comment2 if comment2 is not None else comment
            self.out.append(Address(name or None, None, local, host))
        elif words:
            self.out.append(Address(comment or None, None, b"".join(words), b""))
        elif kind == ":":
            self.i += 1

    def domain(self, stop: tuple[str, ...]) -> tuple[bytes, bytes | None]:
        parts: list[bytes] = []
        comment: bytes | None = None
        while self.i < len(self.toks):
            kind, val = self.toks[self.i]
            if kind in stop:
                break
            if kind == "comment":
                comment = val
            elif kind in ("atom", "literal", "quoted"):
                parts.append(val)
            self.i += 1
        return b"".join(parts), comment

    def angle(self, name: bytes | None) -> None:
        route: bytes | None = None
        if self.peek() == "@":  # obs-route: @a,@b:
            pieces: list[bytes] = []
            while self.i < len(self.toks) and self.peek() not in (":", ">"):
                kind, val = self.toks[self.i]
                if kind == "@":
                    pieces.append(b"@")
                elif kind == ",":
                    pieces.append(b",")
                elif kind != "comment":
                    pieces.append(val)
                self.i += 1
            if self.peek() == ":":
                self.i += 1
            route = b"".join(pieces) or None
        local: list[bytes] = []
        while self.i < len(self.toks) and self.peek() not in ("@", ">", ",", ";"):
            kind, val = self.toks[self.i]
            if kind != "comment" and kind not in _SPECIAL_NAMES:
                local.append(val)
            self.i += 1
        host = b""
        if self.peek() == "@":
            self.i += 1
            host, _ = self.domain(stop=(">", ",", ";", "<"))
        if self.peek() == ">":
            self.i += 1
        self.out.append(Address(name, route, b"".join(local), host))


_SPECIAL_NAMES = frozenset(chr(c) for c in _SPECIALS)


def parse_addresses(value: bytes | None) -> list[Address]:
    """Parse an address-list field value (unfolded bytes). Never raises; junk gives fewer addresses."""
    if not value:
        return []
    return _Parser(value).parse()


def search_text(addresses: list[Address]) -> str:
    """The text SEARCH FROM/TO/CC/BCC match against: `Name <user@host>` per address, groups as
    `group: ...;`, encoded words decoded."""
    parts: list[str] = []
    for a in addresses:
        if a.is_group_start:
            parts.append(decode_bytes(a.mailbox or b"") + ":")
        elif a.is_group_end:
            parts.append(";")
        elif a.name:
            parts.append(f"{a.display_name} <{a.addr_spec}>")
        else:
            parts.append(a.addr_spec)
    return ", ".join(parts)
