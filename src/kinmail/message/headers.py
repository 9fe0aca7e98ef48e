"""Header sections: fields with their raw bytes, unfolding, RFC 2047 encoded words, MIME parameters.

Pure functions over bytes, used by the rest of `kinmail.message` (and by anyone who needs a decoded header:
the IMAP server through `Message`, delivery, the web pages). Nothing is kept on disk.

- RFC 5322 §2.2 fields and §2.2.3 folding: `parse_fields` keeps each field's raw bytes (continuation lines
  included) so that `BODY[HEADER.FIELDS]` returns them byte-exact.
- RFC 2047 encoded words: `decode_words`; RFC 2045 §5.1 parameters with RFC 2231 continuations:
  `parse_params`, which returns them the way Dovecot shows them in BODYSTRUCTURE.
- RFC 5322 §3.3 dates: `parse_date`.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from email.utils import parsedate_tz

__all__ = [
    "Field",
    "HeaderBlock",
    "decode_bytes",
    "decode_text",
    "decode_words",
    "parse_date",
    "parse_params",
    "text_codec",
    "unfold",
]

_LINE = re.compile(rb"[^\n]*(?:\n|\Z)")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(=\?[^?\s]+\?[QqBb]\?[^?\s]*\?=)[ \t\r\n]+(?==\?[^?\s]+\?[QqBb]\?[^?\s]*\?=)")
_QP_HEADER = re.compile(rb"=([0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class Field:
    """One header field: `name` as written, `raw` the whole field (continuation lines and line end)."""

    name: str
    raw: bytes

    @property
    def value(self) -> bytes:
        """The unfolded value, without the name, the colon, leading blanks and the line end."""
        colon = self.raw.find(b":")
        return unfold(self.raw[colon + 1 :]).strip(b" \t\r\n")

    @property
    def text(self) -> str:
        """The value as text: unfolded, 8-bit read as UTF-8 (else Latin-1), encoded words decoded."""
        return decode_words(decode_bytes(self.value))


class HeaderBlock:
    """The fields of one header section, parsed once, looked up case-insensitively."""

    __slots__ = ("_by_name", "fields")

    def __init__(self, raw: bytes) -> None:
        self.fields: list[Field] = parse_fields(raw)
        by_name: dict[str, list[Field]] = {}
        for f in self.fields:
            by_name.setdefault(f.name.lower(), []).append(f)
        self._by_name = by_name

    def get_all(self, name: str) -> list[Field]:
        return self._by_name.get(name.lower(), [])

    def first(self, name: str) -> Field | None:
        found = self._by_name.get(name.lower())
        return found[0] if found else None

    def value(self, name: str) -> bytes | None:
        """The unfolded raw value of the first `name` field, or None when there is none."""
        f = self.first(name)
        return None if f is None else f.value

    def text(self, name: str) -> str | None:
        f = self.first(name)
        return None if f is None else f.text

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._by_name


def parse_fields(raw: bytes) -> list[Field]:
    """Split a header section into fields (RFC 5322 §2.2). Continuation lines stay with their field; lines
    without a colon (broken mail) are kept as nameless fields so that byte offsets stay whole."""
    fields: list[Field] = []
    name = ""
    chunks: list[bytes] = []
    for m in _LINE.finditer(raw):
        line = m.group()
        if not line:
            break
        if line in (b"\r\n", b"\n"):
            break
        if line[0] in (0x20, 0x09) and chunks:
            chunks.append(line)
            continue
        if chunks:
            fields.append(Field(name, b"".join(chunks)))
        colon = line.find(b":")
        name = line[:colon].strip(b" \t").decode("latin-1") if colon > 0 else ""
        chunks = [line]
    if chunks:
        fields.append(Field(name, b"".join(chunks)))
    return fields


def unfold(value: bytes) -> bytes:
    """RFC 5322 §2.2.3: remove the CRLF of each folded line, keeping the blank that follows it."""
    return _FOLD.sub(b"", value)


def decode_bytes(data: bytes) -> str:
    """Header bytes as text: UTF-8 (RFC 6532) when valid, otherwise Latin-1."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def text_codec(charset: str | None, default: str = "utf-8") -> str:
    """The Python codec for a MIME charset name (RFC 2231 §5 language suffix ignored), or `default` when it
    is unknown or not a text encoding (`rot13`, `zlib`... are codecs too)."""
    if not charset:
        return default
    name = charset.split("*", 1)[0].strip().lower()
    if name in ("unknown-8bit", "x-unknown"):
        return "latin-1"
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return default
    return info.name if getattr(info, "_is_text_encoding", True) else default


def decode_text(data: bytes, charset: str | None) -> str:
    """Bytes in a MIME charset as text, never raising: unknown charsets read as UTF-8, broken bytes replaced."""
    try:
        return data.decode(text_codec(charset), "replace")
    except (UnicodeError, LookupError, ValueError, TypeError):
        return data.decode("latin-1")


def _decode_word(m: re.Match[str]) -> str:
    charset, enc, text = m.group(1), m.group(2).upper(), m.group(3)
    data = text.encode("latin-1", "replace")
    try:
        if enc == "B":
            data = base64.b64decode(data + b"=" * (-len(data) % 4), validate=False)
        else:
            data = _QP_HEADER.sub(lambda q: bytes([int(q.group(1), 16)]), data.replace(b"_", b" "))
    except (binascii.Error, ValueError):
        return m.group(0)
    return decode_text(data, charset)


def decode_words(text: str) -> str:
    """RFC 2047 §6: decode encoded words; blanks between two adjacent encoded words are dropped."""
    if "=?" not in text:
        return text
    return _ENCODED_WORD.sub(_decode_word, _BETWEEN_WORDS.sub(r"\1", text))


# --- MIME parameters (RFC 2045 §5.1, RFC 2231) ---------------------------------------------------------

_TSPECIALS = frozenset(b'()<>@,;:\\"/[]?=')


def _skip_cfws(s: bytes, i: int) -> int:
    n = len(s)
    while i < n:
        c = s[i]
        if c in b" \t\r\n":
            i += 1
        elif c == 0x28:  # "(" comment, nested
            depth = 0
            while i < n:
                if s[i] == 0x5C:
                    i += 2
                    continue
                if s[i] == 0x28:
                    depth += 1
                elif s[i] == 0x29:
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        else:
            break
    return i


def _token(s: bytes, i: int) -> tuple[bytes, int]:
    start = i
    n = len(s)
    while i < n and s[i] > 0x20 and s[i] not in _TSPECIALS and s[i] != 0x7F:
        i += 1
    return s[start:i], i


def _quoted(s: bytes, i: int) -> tuple[bytes, int]:
    """Parse a quoted-string starting at s[i] == '"'; returns the unescaped content."""
    out = bytearray()
    i += 1
    n = len(s)
    while i < n:
        c = s[i]
        if c == 0x22:
            return bytes(out), i + 1
        if c == 0x5C and i + 1 < n:
            out.append(s[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return bytes(out), i


def parse_content_value(value: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    """Split `type/subtype; a=b; c="d"` (or `inline; filename=x`) into the leading token and its parameters
    (RFC 2045 §5.1), parameters already merged per RFC 2231 (see `parse_params`)."""
    i = _skip_cfws(value, 0)
    start = i
    n = len(value)
    while i < n and value[i] not in b";" and value[i] not in b" \t\r\n(":
        i += 1
    head = value[start:i]
    raw: list[tuple[str, bytes]] = []
    while i < n:
        i = _skip_cfws(value, i)
        if i >= n:
            break
        if value[i] != 0x3B:  # garbage before the next ';'
            nxt = value.find(b";", i)
            if nxt < 0:
                break
            i = nxt
        i = _skip_cfws(value, i + 1)
        name, i = _token(value, i)
        i = _skip_cfws(value, i)
        if not name or i >= n or value[i] != 0x3D:
            continue
        i = _skip_cfws(value, i + 1)
        if i < n and value[i] == 0x22:
            val, i = _quoted(value, i)
        else:
            start = i
            while i < n and value[i] not in b"; \t\r\n":
                i += 1
            val = value[start:i]
        raw.append((name.decode("latin-1").lower(), val))
    return head, parse_params(raw)


_SECTION = re.compile(r"^([^*]*)\*(\d*)(\*?)$")


def parse_params(raw: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """Merge RFC 2231 §3-4 continuations the way Dovecot shows them (lib-mail/rfc2231-parser.c): plain
    parameters first, in order; then each continued one, by name: `name*0`, `name*1`... become `name`;
    when a piece is extended (`*0*=utf-8''...`) the result is `name*` = `charset'lang'%XX...`, with `%` in
    the plain pieces written `%25`. A parameter with missing pieces keeps them as they were."""
    out: list[tuple[str, str]] = []
    pieces: dict[str, list[tuple[int, bool, bytes]]] = {}
    for name, value in raw:
        m = _SECTION.match(name) if "*" in name else None
        if m is None:
            out.append((name, decode_bytes(value)))
            continue
        number, star = m.group(2), m.group(3) == "*"
        if not number:  # `name*=charset'lang'value`: one extended piece
            if star:
                out.append((name, decode_bytes(value)))
                continue
            star = True
        pieces.setdefault(m.group(1), []).append((int(number or 0), star, value))
    for base in sorted(pieces):
        parts = sorted(pieces[base], key=lambda p: p[0])
        extended = any(ext for _n, ext, _v in parts)
        if [n for n, _e, _v in parts] != list(range(len(parts))):
            out += [(f"{base}*{n}*" if ext else f"{base}*{n}", decode_bytes(v)) for n, ext, v in parts]
            continue
        text = "''" if extended and not parts[0][1] else ""
        for _n, ext, v in parts:
            piece = decode_bytes(v)
            text += piece.replace("%", "%25") if extended and not ext else piece
        out.append((base + "*" if extended else base, text))
    return out


# --- dates (RFC 5322 §3.3) -----------------------------------------------------------------------------


def parse_date(value: bytes | str | None) -> datetime | None:
    """A Date: field value as an aware datetime in the zone it was written in, or None when unusable."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    try:
        parts = parsedate_tz(text)
    except (ValueError, IndexError, TypeError, OverflowError):
        return None
    if parts is None:
        return None
    y, mo, d, h, mi, s = parts[:6]
    off = parts[9] or 0
    try:
        if not (-86400 < off < 86400):
            off = 0
        return datetime(y, mo, d, h, mi, min(s, 59), tzinfo=timezone(timedelta(seconds=off)))
    except (ValueError, OverflowError, TypeError):
        return None


def sent_date(value: bytes | str | None) -> date | None:
    """RFC 9051 §6.4.4 SENTON/SENTBEFORE/SENTSINCE: the date part of the Date: field, time and zone ignored."""
    dt = parse_date(value)
    return None if dt is None else dt.date()


def timestamp(dt: datetime) -> float:
    return dt.astimezone(UTC).timestamp()
