"""The message side of SEARCH (RFC 9051 §6.4.4): header, address, date and text matching on one message.

The IMAP server evaluates flags, sizes, sequence sets and INTERNALDATE itself and calls these for the keys
that look inside a message. Matching is a case-insensitive substring test on decoded text (RFC 2047 words,
transfer encodings and charsets undone), as Dovecot does. BODY/TEXT in the IMAP server go through the
store's FTS5 index and check its candidates against the same text the index holds (`store.textindex`: HTML
parts as text); `text_contains` matches the raw text parts, for callers without an index. Pure; nothing is
kept on disk.
"""

from __future__ import annotations

from datetime import date

from kinmail.message.address import parse_addresses, search_text
from kinmail.message.headers import Field, decode_bytes, decode_text, decode_words, sent_date
from kinmail.message.mime import Message, Part
from kinmail.message.sections import UnknownTransferEncoding, decode_transfer

__all__ = [
    "ADDRESS_FIELDS",
    "body_text",
    "fold",
    "header_contains",
    "message_sent_date",
    "text_contains",
]

ADDRESS_FIELDS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "sender",
        "reply-to",
        "resent-from",
        "resent-sender",
        "resent-to",
        "resent-cc",
        "resent-bcc",
    }
)


def fold(text: str) -> str:
    """The comparison form of text for SEARCH: case folded."""
    return text.casefold()


def _field_text(field: Field) -> str:
    if field.name.lower() in ADDRESS_FIELDS:
        addresses = parse_addresses(field.value)
        if addresses:
            return search_text(addresses)
    return field.text


def header_contains(message: Message, name: str, needle: str) -> bool:
    """HEADER name needle (and SUBJECT, FROM, TO, CC, BCC): a field `name` whose decoded value contains
    `needle`. An empty needle matches any message that has the field (RFC 9051 §6.4.4)."""
    fields = message.header.get_all(name)
    if not fields:
        return False
    if needle == "":
        return True
    want = fold(needle)
    return any(want in fold(_field_text(f)) for f in fields)


def message_sent_date(message: Message) -> date | None:
    """SENTBEFORE/SENTON/SENTSINCE: the date of the Date: field in its own zone, time and zone disregarded
    (RFC 9051 §6.4.4); None when it has none or it cannot be read (RFC 9051 does not say what then; SORT
    uses INTERNALDATE, RFC 5256 §3)."""
    return sent_date(message.header.value("date"))


def _part_text(part: Part) -> str | None:
    try:
        data = decode_transfer(part.body, part.cte)
    except UnknownTransferEncoding:
        data = part.body
    return decode_text(data, part.param("charset"))


def _headers_text(part: Part) -> str:
    return "\n".join(f"{f.name}: {_field_text(f)}" for f in part.header.fields)


def body_text(message: Message, with_headers: bool = False) -> list[str]:
    """The searchable text of a message: each text part decoded (and the headers of encapsulated
    messages); the top-level header first when `with_headers` (TEXT rather than BODY)."""
    out: list[str] = []
    if with_headers:
        out.append(_headers_text(message.root))
    for part in message.root.walk():
        inner = part.message
        if inner is not None:
            out.append(_headers_text(inner))
            continue
        if part.is_multipart:
            continue
        if part.maintype.lower() in ("text", "message"):
            text = _part_text(part)
            if text:
                out.append(text)
    return out


def text_contains(message: Message, needle: str, with_headers: bool) -> bool:
    """BODY (`with_headers=False`) or TEXT: does the decoded text contain `needle`, case-insensitively."""
    if needle == "":
        return True
    want = fold(needle)
    if with_headers and want in fold(_headers_text(message.root)):
        return True
    return any(want in fold(t) for t in body_text(message, with_headers=False))


def decoded_header(message: Message, name: str) -> str | None:
    """The first `name` field decoded (RFC 2047), or None."""
    value = message.header.value(name)
    return None if value is None else decode_words(decode_bytes(value))
