"""The MIME tree of a raw message (RFC 2045, RFC 2046), with byte offsets so that sections are exact slices.

`Message(raw)` is what the IMAP server, delivery and the web pages hold for one message; everything is
computed lazily from the raw bytes (CRLF line ends; bare LF is tolerated) and cached on the object. Parts are
numbered per RFC 9051 §6.4.5 (`resolve`). Nothing is kept on disk and nothing here raises on bad input:
a broken message still gives a tree (at worst one text/plain part).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cached_property

from kinmail.message.headers import HeaderBlock, parse_content_value

__all__ = ["MAX_DEPTH", "Message", "Part"]

MAX_DEPTH = 50  # deeper nesting is shown as a leaf (RFC 2046 sets no limit; Dovecot uses a similar one)

_HEADER_END = re.compile(rb"\n\r?\n")


def _header_end(raw: bytes, start: int, end: int) -> int:
    """Offset of the body: just after the blank line that ends the header at `start` (or `end`)."""
    if raw.startswith(b"\r\n", start) and start + 2 <= end:
        return start + 2
    if raw.startswith(b"\n", start) and start + 1 <= end:
        return start + 1
    m = _HEADER_END.search(raw, start, end)
    return m.end() if m else end


def _delimiters(raw: bytes, start: int, end: int, needle: bytes) -> Iterator[tuple[int, int, bool]]:
    """RFC 2046 §5.1.1 boundary delimiter lines in `raw[start:end]`: `--boundary` (or `--boundary--`) at the
    start of a line, then only blanks. Yields (line start, offset after the line end, closing)."""
    pos = start
    while pos < end:
        if pos == start and raw.startswith(needle, pos, end):
            idx = pos
        else:
            found = raw.find(b"\n" + needle, pos, end)
            if found < 0:
                return
            idx = found + 1
        after = idx + len(needle)
        eol = raw.find(b"\n", after, end)
        line_end = end if eol < 0 else eol + 1
        rest = raw[after : end if eol < 0 else eol]
        closing = rest.startswith(b"--")
        if closing:
            rest = rest[2:]
        if not rest.strip(b" \t\r"):
            yield idx, line_end, closing
            pos = line_end
        else:
            pos = idx + 1


class Part:
    """One entity: its header at `raw[start:body_start]`, its body at `raw[body_start:end]`.

    A multipart has `children`; a message/rfc822 part has `message`, the encapsulated message as a `Part`
    whose header is that message's header. Only the offsets are computed on creation."""

    __slots__ = ("__dict__", "body_start", "default_type", "depth", "end", "raw", "start")

    def __init__(
        self, raw: bytes, start: int, end: int, default_type: bytes = b"text/plain", depth: int = 0
    ) -> None:
        self.raw = raw
        self.start = start
        self.end = end
        self.body_start = _header_end(raw, start, end)
        self.default_type = default_type
        self.depth = depth

    # --- header and content type ---------------------------------------------------------------------

    @cached_property
    def header(self) -> HeaderBlock:
        return HeaderBlock(self.raw[self.start : self.body_start])

    @cached_property
    def _content_type(self) -> tuple[str, str, list[tuple[str, str]], bool]:
        value = self.header.value("content-type")
        explicit = False
        params: list[tuple[str, str]] = []
        head = b""
        if value is not None:
            head, params = parse_content_value(value)
        if b"/" in head:
            main, _, sub = head.partition(b"/")
            main, sub = main.strip(), sub.strip()
            explicit = bool(main and sub)
        if not explicit:
            main, _, sub = self.default_type.partition(b"/")
        return main.decode("latin-1"), sub.decode("latin-1"), params, explicit

    @property
    def maintype(self) -> str:
        """Media type as written (case kept), e.g. `text`; compare with `.lower()`."""
        return self._content_type[0]

    @property
    def subtype(self) -> str:
        return self._content_type[1]

    @property
    def params(self) -> list[tuple[str, str]]:
        """Content-Type parameters in order, names lower case, RFC 2231 merged."""
        return self._content_type[2]

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return None

    @property
    def media_type(self) -> str:
        return f"{self.maintype}/{self.subtype}".lower()

    @cached_property
    def cte(self) -> str:
        """Content-Transfer-Encoding, lower case; `7bit` when absent."""
        value = self.header.value("content-transfer-encoding")
        if not value:
            return "7bit"
        text = value.split(b"(", 1)[0].strip().decode("latin-1").lower()
        return text or "7bit"

    @property
    def is_multipart(self) -> bool:
        return (
            self.maintype.lower() == "multipart" and self.depth < MAX_DEPTH and bool(self.param("boundary"))
        )

    @property
    def is_message(self) -> bool:
        """A message/rfc822 (or message/global, RFC 6532) part whose body is parsed as a message."""
        return (
            self.maintype.lower() == "message"
            and self.subtype.lower() in ("rfc822", "global")
            and self.depth < MAX_DEPTH
            and self.cte in ("7bit", "8bit", "binary")
        )

    # --- bytes --------------------------------------------------------------------------------------

    @property
    def header_bytes(self) -> bytes:
        return self.raw[self.start : self.body_start]

    @property
    def body(self) -> bytes:
        return self.raw[self.body_start : self.end]

    @property
    def body_size(self) -> int:
        return self.end - self.body_start

    @cached_property
    def body_lines(self) -> int:
        """Lines in the body as IMAP counts them (RFC 9051 §7.5.2 body-fld-lines): its LF count."""
        return self.raw.count(b"\n", self.body_start, self.end)

    # --- structure ----------------------------------------------------------------------------------

    @cached_property
    def children(self) -> list[Part]:
        """The parts of a multipart (RFC 2046 §5.1.1); empty for anything else. A multipart in which no
        part can be found gets one empty text/plain part, so that BODYSTRUCTURE stays valid."""
        if not self.is_multipart:
            return []
        boundary = (self.param("boundary") or "").encode("utf-8", "replace")
        default = b"message/rfc822" if self.subtype.lower() == "digest" else b"text/plain"
        raw, end = self.raw, self.end
        parts: list[Part] = []
        child_start = -1
        for line_start, line_end, closing in _delimiters(raw, self.body_start, end, b"--" + boundary):
            if child_start >= 0:
                child_end = line_start
                if child_end > child_start and raw[child_end - 1] == 0x0A:
                    child_end -= 1
                    if child_end > child_start and raw[child_end - 1] == 0x0D:
                        child_end -= 1
                parts.append(Part(raw, child_start, max(child_end, child_start), default, self.depth + 1))
            if closing:
                child_start = -1
                break
            child_start = line_end
        if child_start >= 0:
            parts.append(Part(raw, child_start, end, default, self.depth + 1))
        if not parts:
            parts.append(Part(raw, end, end, b"text/plain", self.depth + 1))
        return parts

    @cached_property
    def message(self) -> Part | None:
        """The encapsulated message of a message/rfc822 part."""
        if not self.is_message:
            return None
        return Part(self.raw, self.body_start, self.end, b"text/plain", self.depth + 1)

    def walk(self) -> list[Part]:
        """This part and every part below it, depth first (encapsulated messages included)."""
        out: list[Part] = []
        stack: list[Part] = [self]
        while stack:
            p = stack.pop()
            out.append(p)
            if p.is_multipart:
                stack.extend(reversed(p.children))
            elif p.message is not None:
                stack.append(p.message)
        return out


class Message:
    """A message as raw bytes plus everything computed from them on demand."""

    __slots__ = ("__dict__", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    @cached_property
    def root(self) -> Part:
        return Part(self.raw, 0, len(self.raw))

    @property
    def header(self) -> HeaderBlock:
        return self.root.header

    @property
    def size(self) -> int:
        """RFC822.SIZE: octets of the message as stored (CRLF line ends)."""
        return len(self.raw)

    def resolve(self, path: tuple[int, ...] | list[int]) -> Part | None:
        """The part a section number names (RFC 9051 §6.4.5), or None when there is no such part.

        Part 1 of a message that is not multipart is its body; the parts below a message/rfc822 part are
        those of the encapsulated message's body."""
        entity = self.root
        message_level = True
        for n in path:
            if n < 1:
                return None
            if not message_level:
                if entity.is_multipart:
                    kids = entity.children
                    if n > len(kids):
                        return None
                    entity = kids[n - 1]
                    continue
                inner = entity.message
                if inner is None:
                    return None
                entity = inner
            # message level: the body of `entity` is multipart (n-th part) or a single part (only 1)
            if entity.is_multipart:
                kids = entity.children
                if n > len(kids):
                    return None
                entity = kids[n - 1]
            elif n != 1:
                return None
            message_level = False
        return entity
