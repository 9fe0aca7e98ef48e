"""FETCH items that need the message's MIME structure, rendered by the message package
(`kinmail.message.structure`, `kinmail.message.sections`): ENVELOPE, BODY, BODYSTRUCTURE, RFC822.HEADER,
RFC822.TEXT, BODY[section]<partial>, BINARY[section], BINARY.SIZE (RFC 9051 §6.4.5, RFC 3516).

ENVELOPE, BODY, BODYSTRUCTURE and the header section are kept in a bounded in-memory cache (16 MB, one entry per
message: about 15,000 messages of ordinary mail), so that clients listing a folder again do not make the server
read and parse every message again. Keeps nothing on disk.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict

from kinmail.message import sections, structure
from kinmail.message.mime import Message
from kinmail.proto.imap_args import FetchAtt
from kinmail.proto.imap_response import Code, ImapError, Status, literal

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


class NeedsFile(Exception):
    """A rendering asked for without the message (`msg=None`) is not in the cache: read the file and ask again."""


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


# ENVELOPE, BODY, BODYSTRUCTURE (each plain and UTF8=ACCEPT) and the header section of a message, by
# (folder key, uid): they never change for a message, and clients ask for them again and again when they list
# a folder. One entry per message, its renderings in slots: a key, a list and the LRU bookkeeping cost about
# ENTRY_OVERHEAD bytes, which one entry per rendering paid three times over.
Key = tuple[int, int]
_CACHE: OrderedDict[Key, list[bytes | None]] = OrderedDict()
CACHE_BYTES = 16 * 1024 * 1024  # what the entries hold in memory, bookkeeping included
ENTRY_OVERHEAD = 280  # the key tuple and its uid, the list of slots, the OrderedDict's links (measured)
VALUE_OVERHEAD = 33  # a bytes object's header
_cache_bytes = 0
CACHEABLE = frozenset({"ENVELOPE", "BODY", "BODYSTRUCTURE"})
SLOTS = {
    ("ENVELOPE", False): 0,
    ("ENVELOPE", True): 1,
    ("BODY", False): 2,
    ("BODY", True): 3,
    ("BODYSTRUCTURE", False): 4,
    ("BODYSTRUCTURE", True): 5,
}
HEADER_SLOT = len(SLOTS)
_FOLDER_KEYS: dict[tuple[str, str, int], int] = {}


def folder_key(user: str, folder: str, uidvalidity: int) -> int:
    """A small number standing for (user, folder, uidvalidity) in cache keys."""
    ident = (user, folder, uidvalidity)
    key = _FOLDER_KEYS.get(ident)
    if key is None:
        key = _FOLDER_KEYS.setdefault(ident, len(_FOLDER_KEYS))
    return key


def cached(key: Key, slot: int) -> bytes | None:
    entry = _CACHE.get(key)
    if entry is None:
        return None
    value = entry[slot]
    if value is not None:
        try:
            _CACHE.move_to_end(key)
        except KeyError:  # dropped meanwhile by a worker thread rendering a big FETCH
            pass
    return value


def _remember(key: Key, slot: int, value: bytes) -> None:
    """Keep a rendering; the least recently used messages go once the cache holds more than CACHE_BYTES."""
    global _cache_bytes
    entry = _CACHE.get(key)
    if entry is None:
        entry = _CACHE[key] = [None] * (HEADER_SLOT + 1)
        _cache_bytes += ENTRY_OVERHEAD
    old = entry[slot]
    if old is not None:
        _cache_bytes -= len(old) + VALUE_OVERHEAD
    entry[slot] = value
    _cache_bytes += len(value) + VALUE_OVERHEAD
    while _cache_bytes > CACHE_BYTES and _CACHE:
        _gone_key, gone = _CACHE.popitem(last=False)
        _cache_bytes -= ENTRY_OVERHEAD + sum(len(v) + VALUE_OVERHEAD for v in gone if v is not None)


def simple(key: Key, msg: Rendered | None, name: str, utf8: bool = False) -> bytes:
    """ENVELOPE, BODY, BODYSTRUCTURE (cached), RFC822.HEADER, RFC822.TEXT."""
    if name in CACHEABLE:
        slot = SLOTS[name, utf8]
        value = cached(key, slot)
        if value is not None:
            return value
        if msg is None:
            raise NeedsFile(name)
        if name == "ENVELOPE":
            value = structure.envelope(msg.message, utf8)
        else:
            value = structure.bodystructure(msg.message, extended=name == "BODYSTRUCTURE", utf8=utf8)
        _remember(key, slot, value)
        return value
    assert msg is not None
    if name == "RFC822.HEADER":
        return literal(sections.section_bytes(msg.message, (), "HEADER") or b"")
    return literal(sections.section_bytes(msg.message, (), "TEXT") or b"")


def is_whole_header(att: FetchAtt) -> bool:
    """BODY[HEADER] / BODY.PEEK[HEADER] (partial or not): the message's header, which never changes."""
    sec = att.section
    return sec is not None and not sec.part and sec.text == "HEADER" and att.name.startswith("BODY")


def header(key: Key, msg: Rendered | None) -> bytes:
    """The message's header section (cached like ENVELOPE: clients list folders with BODY.PEEK[HEADER])."""
    value = cached(key, HEADER_SLOT)
    if value is None:
        if msg is None:
            raise NeedsFile("HEADER")
        value = sections.section_bytes(msg.message, (), "HEADER") or b""
        _remember(key, HEADER_SLOT, value)
    return value


def section(msg: Rendered | None, att: FetchAtt, header_key: Key) -> bytes:
    """BODY[section]<partial>, BINARY[section]<partial>, BINARY.SIZE[section]; `msg` may be None only
    for a whole header that is cached."""
    if is_whole_header(att):
        data = header(header_key, msg)
        if att.partial is not None:
            data = sections.partial(data, att.partial[0], att.partial[1])
        return literal(data)
    assert msg is not None
    return section_of(msg, att)


def section_of(msg: Rendered, att: FetchAtt) -> bytes:
    """A section of a parsed message (no cache)."""
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
