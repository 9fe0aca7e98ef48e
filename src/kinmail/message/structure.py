"""ENVELOPE, BODY and BODYSTRUCTURE as IMAP bytes (RFC 9051 §7.5.2, RFC 3501 §7.4.2).

Called by the IMAP server's FETCH (through `envelope`, `bodystructure`) and by whoever caches them in the
index. Pure; nothing is kept on disk. The output follows Dovecot where the RFC leaves room: missing Sender
and Reply-To repeat From, a comment after a bare address becomes the display name, a missing host reads
`MISSING_DOMAIN`, text parts without parameters get `("charset" "us-ascii")`, RFC 2231 parameters are
merged (see `headers.parse_params`).
"""

from __future__ import annotations

import re

from kinmail.message.address import Address, parse_addresses
from kinmail.message.headers import HeaderBlock, parse_content_value
from kinmail.message.mime import Message, Part

__all__ = ["bodystructure", "envelope", "imap_nstring", "imap_string"]

_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
_QUOTABLE_UTF8 = re.compile(rb"[^\x00\r\n]*")


def imap_string(data: bytes | str, utf8: bool = False) -> bytes:
    """RFC 9051 §4.3 string: quoted when it can be (8-bit only when UTF8=ACCEPT is on and the bytes are
    valid UTF-8), otherwise a literal."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if len(data) < 4096:
        if _QUOTABLE.fullmatch(data):
            return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        if utf8 and _QUOTABLE_UTF8.fullmatch(data):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{" + str(len(data)).encode() + b"}\r\n" + data


def imap_nstring(data: bytes | str | None, utf8: bool = False) -> bytes:
    return b"NIL" if data is None else imap_string(data, utf8)


# --- ENVELOPE ----------------------------------------------------------------------------------------

_LWSP_RUN = re.compile(rb"[ \t]+")


def for_humans(data: bytes | None) -> bytes | None:
    """A subject or display name as Dovecot shows it: line breaks dropped, blank runs made one space, no
    leading or trailing blanks, NUL shown as 0x80."""
    if data is None:
        return None
    data = data.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"\x80")
    return _LWSP_RUN.sub(b" ", data).strip(b" ")


def _address_list(addresses: list[Address], utf8: bool) -> bytes:
    if not addresses:
        return b"NIL"
    out = []
    for a in addresses:
        if a.host is None:  # group start or end
            out.append(b"(NIL NIL " + imap_nstring(a.mailbox, utf8) + b" NIL)")
            continue
        out.append(
            b"("
            + imap_nstring(for_humans(a.name) or None, utf8)
            + b" "
            + imap_nstring(a.route, utf8)
            + b" "
            + imap_string(a.mailbox or b"MISSING_MAILBOX", utf8)
            + b" "
            + imap_string(a.host or b"MISSING_DOMAIN", utf8)
            + b")"
        )
    return b"(" + b"".join(out) + b")"


def envelope_of(header: HeaderBlock, utf8: bool = False) -> bytes:
    """ENVELOPE for a header section (RFC 9051 §7.5.2): date, subject, from, sender, reply-to, to, cc, bcc,
    in-reply-to, message-id."""
    from_ = parse_addresses(header.value("from"))
    sender = parse_addresses(header.value("sender")) or from_
    reply_to = parse_addresses(header.value("reply-to")) or from_
    parts = [
        imap_nstring(header.value("date"), utf8),
        imap_nstring(for_humans(header.value("subject")), utf8),
        _address_list(from_, utf8),
        _address_list(sender, utf8),
        _address_list(reply_to, utf8),
        _address_list(parse_addresses(header.value("to")), utf8),
        _address_list(parse_addresses(header.value("cc")), utf8),
        _address_list(parse_addresses(header.value("bcc")), utf8),
        imap_nstring(header.value("in-reply-to"), utf8),
        imap_nstring(header.value("message-id"), utf8),
    ]
    return b"(" + b" ".join(parts) + b")"


def envelope(message: Message, utf8: bool = False) -> bytes:
    return envelope_of(message.header, utf8)


# --- BODY / BODYSTRUCTURE ----------------------------------------------------------------------------


def _params(params: list[tuple[str, str]], utf8: bool) -> bytes:
    if not params:
        return b"NIL"
    return (
        b"("
        + b" ".join(
            imap_string(k, utf8)
            + b" "
            + imap_string(for_humans(v.encode("utf-8", "surrogateescape")) or b"", utf8)
            for k, v in params
        )
        + b")"
    )


def _disposition(part: Part, utf8: bool) -> bytes:
    value = part.header.value("content-disposition")
    if value is None:
        return b"NIL"
    head, params = parse_content_value(value)
    head = head.strip()
    if not head:
        return b"NIL"
    return b"(" + imap_string(head, utf8) + b" " + _params(params, utf8) + b")"


def _language(part: Part, utf8: bool) -> bytes:
    value = part.header.value("content-language")
    if value is None:
        return b"NIL"
    value = re.sub(rb"\([^)]*\)", b"", value)
    langs = [t for t in re.split(rb"[\s,]+", value) if t]
    if not langs:
        return b"NIL"
    return b"(" + b" ".join(imap_string(t, utf8) for t in langs) + b")"


def _extension(part: Part, utf8: bool, md5: bool) -> bytes:
    items = []
    if md5:
        items.append(imap_nstring(for_humans(part.header.value("content-md5")), utf8))
    items += [
        _disposition(part, utf8),
        _language(part, utf8),
        imap_nstring(for_humans(part.header.value("content-location")), utf8),
    ]
    return b" ".join(items)


def bodystructure(part: Part | Message, extended: bool = True, utf8: bool = False) -> bytes:
    """BODYSTRUCTURE (`extended=True`) or BODY (`extended=False`) of a message or part."""
    if isinstance(part, Message):
        part = part.root
    if part.is_multipart:
        out = b"".join(bodystructure(child, extended, utf8) for child in part.children)
        out += b" " + imap_string(part.subtype, utf8)
        if extended:
            out += b" " + _params(part.params, utf8) + b" " + _extension(part, utf8, md5=False)
        return b"(" + out + b")"
    main = part.maintype
    params = part.params
    if main.lower() == "text" and not any(k == "charset" for k, _v in params):
        params = [*params, ("charset", "us-ascii")]
    h = part.header
    cte = h.value("content-transfer-encoding")
    cte_token = cte.split(b"(", 1)[0].split() if cte else []
    fields = [
        imap_string(main, utf8),
        imap_string(part.subtype, utf8),
        _params(params, utf8),
        imap_nstring(for_humans(h.value("content-id")), utf8),
        imap_nstring(for_humans(h.value("content-description")), utf8),
        imap_string(cte_token[0] if cte_token else b"7bit", utf8),
        str(part.body_size).encode(),
    ]
    inner = part.message
    if inner is not None:
        fields.append(envelope_of(inner.header, utf8))
        fields.append(bodystructure(inner, extended, utf8))
        fields.append(str(part.body_lines).encode())
    elif main.lower() == "text":
        fields.append(str(part.body_lines).encode())
    if extended:
        fields.append(_extension(part, utf8, md5=True))
    return b"(" + b" ".join(fields) + b")"
