"""FETCH items that need the message's MIME structure, rendered by the message package
(`kinmail.message.structure`, `kinmail.message.sections`): ENVELOPE, BODY, BODYSTRUCTURE, RFC822.HEADER,
RFC822.TEXT, BODY[section]<partial>, BINARY[section], BINARY.SIZE (RFC 9051 §6.4.5, RFC 3516).

ENVELOPE, BODY and BODYSTRUCTURE are kept in a bounded in-memory cache, so that clients listing a folder
again do not make the server read and parse every message again. Keeps nothing on disk.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from typing import TYPE_CHECKING

from kinmail.message import sections, structure
from kinmail.message.mime import Message
from kinmail.proto.imap_args import FetchAtt
from kinmail.proto.imap_response import Code, ImapError, Status, literal

if TYPE_CHECKING:
    from kinmail.store.mailbox import Mailbox

_AVAILABLE: bool | None = None


def available() -> bool:
    """True when the message package offers the IMAP renderings."""
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = all(
            importlib.util.find_spec(name) is not None
            for name in ("kinmail.message.structure", "kinmail.message.sections", "kinmail.message.mime")
        )
    return _AVAILABLE


class Rendered:
    """One message's raw bytes with its MIME tree parsed at most once, for all the items of one FETCH."""

    __slots__ = ("_message", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._message: Message | None = None

    @property
    def message(self) -> Message:
        if self._message is None:
            self._message = Message(self.raw)
        return self._message


# ENVELOPE / BODY / BODYSTRUCTURE by (user, folder, uidvalidity, uid, item, utf8): they never change for a
# message, and clients ask for them again and again when they list a folder.
_CACHE: OrderedDict[tuple[str, str, int, int, str, bool], bytes] = OrderedDict()
CACHE_SIZE = 50000
CACHEABLE = frozenset({"ENVELOPE", "BODY", "BODYSTRUCTURE"})


def cache_key(
    user: str, mailbox: Mailbox, uid: int, name: str, utf8: bool
) -> tuple[str, str, int, int, str, bool]:
    return (user, mailbox.name, mailbox.uidvalidity, uid, name, utf8)


def cached(key: tuple[str, str, int, int, str, bool]) -> bytes | None:
    value = _CACHE.get(key)
    if value is not None:
        _CACHE.move_to_end(key)
    return value


def simple(
    key: tuple[str, str, int, int, str, bool], msg: Rendered | None, name: str, utf8: bool = False
) -> bytes:
    """ENVELOPE, BODY, BODYSTRUCTURE (cached), RFC822.HEADER, RFC822.TEXT."""
    if name in CACHEABLE:
        value = cached(key)
        if value is not None:
            return value
        assert msg is not None
        if name == "ENVELOPE":
            value = structure.envelope(msg.message, utf8)
        else:
            value = structure.bodystructure(msg.message, extended=name == "BODYSTRUCTURE", utf8=utf8)
        _CACHE[key] = value
        if len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return value
    assert msg is not None
    if name == "RFC822.HEADER":
        return literal(sections.section_bytes(msg.message, (), "HEADER") or b"")
    return literal(sections.section_bytes(msg.message, (), "TEXT") or b"")


def section(msg: Rendered, att: FetchAtt) -> bytes:
    sec = att.section
    assert sec is not None
    if not sec.part and not sec.text and att.name != "BINARY.SIZE":
        data: bytes | None = msg.raw
    elif att.name.startswith("BINARY"):
        try:
            data = sections.binary_bytes(msg.message, sec.part)
        except sections.UnknownTransferEncoding as exc:
            raise ImapError(Status.NO, "Unknown Content-Transfer-Encoding", Code.UNKNOWN_CTE) from exc
    else:
        data = sections.section_bytes(msg.message, sec.part, sec.text, sec.fields)
    if att.name == "BINARY.SIZE":
        return b"%d" % len(data or b"")
    if data is None:
        return b"NIL"
    if att.partial is not None:
        data = sections.partial(data, att.partial[0], att.partial[1])
    return literal(data, binary=att.name.startswith("BINARY") and b"\x00" in data)
