"""Values the store hands out: `MessageInfo`, `FolderInfo`, `FolderStatus`, `Change`.

Imported by the IMAP, POP3, web and delivery code through `kinmail.store`. Keeps nothing on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple


class MessageInfo(NamedTuple):
    """One message as the index knows it. `size` is RFC822.SIZE (CRLF line ends); `filename` is relative to
    the folder's directory (`cur/...:2,S` or `new/...`); `internaldate` is a POSIX time."""

    uid: int
    flags: frozenset[str]
    modseq: int
    size: int
    internaldate: float
    filename: str


class ChangeKind(StrEnum):
    APPEND = "append"
    FLAGS = "flags"
    EXPUNGE = "expunge"
    FOLDERS = "folders"


@dataclass(frozen=True, slots=True)
class Change:
    """What a commit changed, broadcast to `Store.subscribe` listeners after the commit.

    `folder` is the IMAP name (for `folders`: the folder created, deleted or renamed — the new name — or "");
    `uids` the messages appended, changed or expunged; `modseq` the folder's HIGHESTMODSEQ after the change.
    """

    address: str
    folder: str
    kind: ChangeKind
    uids: tuple[int, ...]
    modseq: int


@dataclass(frozen=True, slots=True)
class FolderInfo:
    """A folder as LIST shows it: `name` in UTF-8 with `/` as delimiter, SPECIAL-USE (RFC 6154), LSUB state."""

    name: str
    special_use: str | None
    subscribed: bool


@dataclass(frozen=True, slots=True)
class FolderStatus:
    """What IMAP STATUS (RFC 9051 §6.3.11) asks for, from the index without loading the message list."""

    messages: int
    uidnext: int
    uidvalidity: int
    unseen: int
    deleted: int
    size: int
    highestmodseq: int


@lru_cache(maxsize=4096)
def flagset(text: str) -> frozenset[str]:
    """The flags stored as one space-separated string in the index (shared frozensets keep memory small)."""
    return frozenset(text.split()) if text else frozenset()


def flagtext(flags: frozenset[str] | set[str]) -> str:
    return " ".join(sorted(flags))
