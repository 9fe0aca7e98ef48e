"""The store's exceptions: `StoreError` and the cases callers tell apart.

Raised by `kinmail.store` to the IMAP, POP3, web and delivery code; each is a `KinmailError`, so its message can
be shown to a user as it is. Keeps nothing on disk.
"""

from __future__ import annotations

from kinmail.core.errors import KinmailError


class StoreError(KinmailError):
    """Something about a mailbox went wrong."""


class NoSuchFolder(StoreError):
    """The folder does not exist."""


class FolderExists(StoreError):
    """A folder of that name exists already."""


class InvalidFolderName(StoreError):
    """The name cannot be a folder: empty, too long, a control character, a `.` in a part, bad modified UTF-7..."""


class QuotaExceeded(StoreError):
    """The message would take the user over their quota."""


class MessageGone(StoreError):
    """The message was expunged (by another session or another program) and cannot be read."""


class NotShort(Exception):
    """A call made as a short one (`kinmail.store.user.short_call`) found long work to do — files another
    program added, removed or renamed in a folder, to read and index with a durable commit — and did nothing:
    the caller runs it again where it may wait for the disk. Never reaches a user."""
