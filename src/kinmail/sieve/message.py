"""The message as Sieve sees it: header fields in order (editable, RFC 5293), decoded header values (RFC 2047),
addresses (RFC 5228 §2.7.4), body text by content type (RFC 5173) and MIME parts (RFC 5703).

Built by the interpreter from the raw bytes; uses Python's `email` package for MIME. Keeps nothing on disk.
"""

from __future__ import annotations

import email
import email.header
import email.message
import email.policy
import email.utils
import re
from dataclasses import dataclass

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_ENCODED_WORD = "=?"


def unfold(value: str) -> str:
    return _FOLD.sub("", value)


def decode_header_value(value: str) -> str:
    """Unfolded, RFC 2047 decoded, trimmed."""
    value = unfold(value).strip(" \t\r\n")
    if _ENCODED_WORD not in value:
        return value
    try:
        parts = email.header.decode_header(value)
        out = []
        for chunk, charset in parts:
            if isinstance(chunk, bytes):
                try:
                    out.append(chunk.decode(charset or "ascii", errors="replace"))
                except LookupError:
                    out.append(chunk.decode("utf-8", errors="replace"))
            else:
                out.append(chunk)
        return "".join(out)
    except (ValueError, email.errors.HeaderParseError):
        return value


@dataclass(slots=True)
class Address:
    """One address of a header or the envelope; `raw` is kept for addresses that do not parse."""

    local: str
    domain: str
    raw: str

    @property
    def all(self) -> str:
        if not self.domain:
            return self.local
        return f"{self.local}@{self.domain}"


def parse_addresses(value: str) -> list[Address]:
    """The addresses of a header value (groups flattened). Something that is not an address is returned
    whole as the local part, so that :all still sees it (RFC 5228 §2.7.4 leaves this to implementations)."""
    value = decode_header_value(value) if _ENCODED_WORD in value else unfold(value).strip()
    if not value:
        return []
    out: list[Address] = []
    for _name, addr in email.utils.getaddresses([value]):
        if not addr:
            continue
        local, at, domain = addr.rpartition("@")
        if not at:
            out.append(Address(addr, "", addr))
        else:
            out.append(Address(local, domain, addr))
    if not out and value.strip(" ;:,") and ":" not in value:
        out.append(Address(value.strip(), "", value.strip()))
    return out


_DOMAIN = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$|^\[[^\]\\]*\]$")
_LOCAL = re.compile(r'^(?:[A-Za-z0-9!#$%&\'*+/=?^_`{|}~.-]+|"(?:[^"\\\r\n]|\\.)*")$')
_ROUTE = re.compile(r"^@[^,:@]+(?:,@[^,:@]+)*:")


def parse_path(text: str) -> Address | None:
    """An SMTP path (RFC 5321 §4.1.2) as an Address, source route dropped; None when it does not parse.
    A bare local part (`<MAILER-DAEMON>`) is accepted, as Sieve implementations do."""
    text = text.strip()
    if text.startswith("<") or text.endswith(">"):
        if not (text.startswith("<") and text.endswith(">")):
            return None
        text = text[1:-1]
    if "<" in text or ">" in text:
        return None
    if text.startswith("@"):
        m = _ROUTE.match(text)
        if m is None:
            return None
        for hop in m.group(0)[:-1].split(","):
            if not _DOMAIN.match(hop[1:]):
                return None
        text = text[m.end() :]
    local, at, domain = text.rpartition("@")
    if not at:
        return Address(text, "", text) if text and _LOCAL.match(text) else None
    if not local or not _LOCAL.match(local) or not _DOMAIN.match(domain):
        return None
    return Address(local, domain, text)


def split_address(addr: str) -> Address:
    addr = addr.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    local, at, domain = addr.rpartition("@")
    if not at:
        return Address(addr, "", addr)
    return Address(local, domain, addr)


class SieveMessage:
    """A message under filtering. Header edits (addheader/deleteheader) change `headers`; `to_bytes()` gives
    the message to store."""

    def __init__(self, data: bytes) -> None:
        if b"\r\n" not in data and b"\n" in data:
            data = data.replace(b"\n", b"\r\n")
        self.original = data
        end = data.find(b"\r\n\r\n")
        self.has_body = True
        if data.startswith(b"\r\n"):
            head, body = b"", data[2:]
        elif end < 0:
            head, body = data, b""
            self.has_body = False
        else:
            head, body = data[: end + 2], data[end + 4 :]
        self.body = body
        text = head.decode("utf-8", errors="replace")
        self.headers: list[tuple[str, str]] = self._collect(text)
        self.edited = False
        self._mime: email.message.Message | None = None
        self._decoded: dict[str, list[str]] = {}
        self._addresses: dict[str, list[Address]] = {}

    @staticmethod
    def _collect(text: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for line in text.split("\r\n"):
            if not line:
                continue
            if line[0] in " \t" and out:
                name, value = out[-1]
                out[-1] = (name, value + "\r\n" + line)
                continue
            name, colon, value = line.partition(":")
            if colon:
                out.append((name.strip(), value[1:] if value.startswith(" ") else value))
        return out

    @property
    def size(self) -> int:
        if not self.edited:
            return len(self.original)
        return len(self.to_bytes())

    def raw_values(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def header(self, name: str) -> list[str]:
        """Decoded values of every `name` field, in order."""
        lname = name.lower()
        cached = self._decoded.get(lname)
        if cached is None:
            cached = [decode_header_value(v) for n, v in self.headers if n.lower() == lname]
            self._decoded[lname] = cached
        return cached

    def addresses(self, name: str) -> list[Address]:
        """The addresses of every `name` field (cached until the header changes)."""
        lname = name.lower()
        cached = self._addresses.get(lname)
        if cached is None:
            cached = [a for n, v in self.headers if n.lower() == lname for a in parse_addresses(v)]
            self._addresses[lname] = cached
        return cached

    def has_header(self, name: str) -> bool:
        lname = name.lower()
        return any(n.lower() == lname for n, _ in self.headers)

    # editheader (RFC 5293) ---------------------------------------------------------------------------------

    def add_header(self, name: str, value: str, last: bool) -> None:
        if last:
            self.headers.append((name, value))
        else:
            self.headers.insert(0, (name, value))
        self._changed()

    def replace_headers(self, headers: list[tuple[str, str]]) -> None:
        self.headers = headers
        self._changed()

    def _changed(self) -> None:
        self.edited = True
        self._decoded.clear()
        self._addresses.clear()
        self._mime = None

    def to_bytes(self) -> bytes:
        if not self.edited:
            return self.original
        head = "".join(f"{n}: {v}\r\n" for n, v in self.headers).encode("utf-8")
        if not self.has_body:
            return head
        return head + b"\r\n" + self.body

    # MIME -------------------------------------------------------------------------------------------------

    @property
    def mime(self) -> email.message.Message:
        if self._mime is None:
            try:
                self._mime = email.message_from_bytes(self.to_bytes(), policy=email.policy.compat32)
            except RecursionError:
                # MIME nested deeper than the email package can parse (it recurses once per level): the
                # message is then one part whose body is its whole text, so body and mime tests still run.
                head = "".join(f"{n}: {v}\r\n" for n, v in self.headers).encode("utf-8")
                whole = email.message_from_bytes(head + b"\r\n", policy=email.policy.compat32)
                whole.set_payload(self.body.decode("latin-1") if self.has_body else "")
                self._mime = whole
        return self._mime


def part_text(part: email.message.Message) -> str:
    """The decoded content of a leaf part (transfer encoding and charset undone)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def content_type(part: email.message.Message) -> str:
    return part.get_content_type().lower()
