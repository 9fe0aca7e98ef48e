"""Maildir++ storage with a SQLite index per user: the only code that writes mailboxes.

Public names for the rest of kinmail (see docs/internals.md, "Store"): `Store`, `UserMailboxes`, `Mailbox`,
`MessageInfo`, `FolderInfo`, `FolderStatus`, `Change`, `ChangeKind`, the errors, `short_call` and its
`NotShort`, and the modified UTF-7 helpers `encode_mutf7` / `decode_mutf7`. Keeps on disk what
`kinmail.store.store` describes.
"""

from kinmail.store.errors import (
    FolderExists,
    InvalidFolderName,
    MessageGone,
    NoSuchFolder,
    NotShort,
    QuotaExceeded,
    StoreError,
)
from kinmail.store.mailbox import Mailbox
from kinmail.store.names import decode_mutf7, encode_mutf7
from kinmail.store.store import Store, UserMailboxes
from kinmail.store.types import Change, ChangeKind, FolderInfo, FolderStatus, MessageInfo
from kinmail.store.user import short_call

__all__ = [
    "Change",
    "ChangeKind",
    "FolderExists",
    "FolderInfo",
    "FolderStatus",
    "InvalidFolderName",
    "Mailbox",
    "MessageGone",
    "MessageInfo",
    "NoSuchFolder",
    "NotShort",
    "QuotaExceeded",
    "Store",
    "StoreError",
    "UserMailboxes",
    "decode_mutf7",
    "encode_mutf7",
    "short_call",
]
