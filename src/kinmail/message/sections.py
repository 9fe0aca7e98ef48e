"""FETCH body sections: BODY[section]<partial> (RFC 9051 §6.4.5) and BINARY[section] / BINARY.SIZE (RFC 3516).

The IMAP server calls `section_bytes`, `binary_bytes` and `partial` with the section it parsed; the results
are the exact octets to send (the server wraps them as literals). Also `decode_transfer` for anyone who
needs a part's content. Pure; nothing is kept on disk.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable

from kinmail.message.headers import Field
from kinmail.message.mime import Message, Part

__all__ = [
    "UnknownTransferEncoding",
    "binary_bytes",
    "decode_transfer",
    "header_fields",
    "partial",
    "section_bytes",
]


class UnknownTransferEncoding(ValueError):
    """BINARY on a part whose Content-Transfer-Encoding we cannot decode (RFC 3516 §4.3: `NO [UNKNOWN-CTE]`)."""


def header_fields(fields: Iterable[Field], names: Iterable[str], exclude: bool = False) -> bytes:
    """HEADER.FIELDS (or .NOT with `exclude`): the matching fields byte-exact, in message order, then the
    blank line."""
    wanted = {n.lower() for n in names}
    out = [f.raw for f in fields if (f.name.lower() in wanted) != exclude and f.name]
    data = b"".join(out)
    if data and not data.endswith(b"\n"):
        data += b"\r\n"
    return data + b"\r\n"


def _message_part(message: Message, path: tuple[int, ...]) -> Part | None:
    """The message whose HEADER/TEXT a section names: the top one, or the one encapsulated at `path`."""
    if not path:
        return message.root
    part = message.resolve(path)
    return None if part is None else part.message


def section_bytes(
    message: Message, path: tuple[int, ...] = (), text: str = "", fields: Iterable[str] = ()
) -> bytes | None:
    """The octets of BODY[path.text (fields)]; None when the section does not exist (sent as NIL).

    `text` is one of "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME (any case)."""
    text = text.upper()
    path = tuple(path)
    if text == "":
        if not path:
            return message.raw
        part = message.resolve(path)
        return None if part is None else part.body
    if text == "MIME":
        part = message.resolve(path) if path else None
        return None if part is None else part.header_bytes
    target = _message_part(message, path)
    if target is None:
        return None
    if text == "HEADER":
        return target.header_bytes
    if text == "TEXT":
        return target.body
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return header_fields(target.header.fields, fields, exclude=text.endswith(".NOT"))
    return None


# --- Content-Transfer-Encoding (RFC 2045 §6) -------------------------------------------------------------

_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_QP_SOFT = re.compile(rb"=[ \t]*\r?\n")
_QP_TRAILING = re.compile(rb"[ \t]+(?=\r?\n|\Z)")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


def _decode_base64(data: bytes) -> bytes:
    clean = _B64_JUNK.sub(b"", data.split(b"=", 1)[0] if b"=" in data else data)
    clean = clean[: len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
    clean += b"=" * (-len(clean) % 4)
    try:
        return binascii.a2b_base64(clean)
    except binascii.Error:
        return b""


def _decode_qp(data: bytes) -> bytes:
    data = _QP_TRAILING.sub(b"", data)
    data = _QP_SOFT.sub(b"", data)
    return _QP_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), data)


def decode_transfer(data: bytes, cte: str) -> bytes:
    """Undo a Content-Transfer-Encoding; raises `UnknownTransferEncoding` for one we do not know."""
    cte = cte.lower()
    if cte in ("7bit", "8bit", "binary", ""):
        return data
    if cte == "base64":
        return _decode_base64(data)
    if cte == "quoted-printable":
        return _decode_qp(data)
    raise UnknownTransferEncoding(cte)


def binary_bytes(message: Message, path: tuple[int, ...] = ()) -> bytes | None:
    """The octets of BINARY[path]: the part's body with its transfer encoding undone (RFC 3516 §4.2).
    BINARY[] is the whole message as it is. None when the part does not exist."""
    path = tuple(path)
    if not path:
        return message.raw
    part = message.resolve(path)
    if part is None:
        return None
    if part.is_multipart or part.message is not None:
        return part.body
    return decode_transfer(part.body, part.cte)


def partial(data: bytes, origin: int, length: int | None) -> bytes:
    """The `<origin.length>` slice of a section (RFC 9051 §6.4.5); empty when origin is past the end."""
    if length is None:
        return data[origin:]
    return data[origin : origin + length]
