"""A POP3 session's view of a user's INBOX: the locked, numbered snapshot taken at login.

Called by `kinmail.pop3server.protocol`: loading, expunging and reading messages not in the page cache from
worker threads; reading a cached message (`encoded_if_cached`, RWF_NOWAIT) and opening one for `sendfile` on
the event loop. Reads the mailbox through `kinmail.store` and, for Maildirs moved over from Dovecot, the POP3
UIDLs Dovecot recorded in `dovecot-uidlist` (read only; the file is the store's). Writes no file itself:
deletions at QUIT go through the store, which broadcasts them to IMAP sessions, and whether a large message can
be sent as it is is kept in the store's per-message cache (key `pop3.as_is`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import BinaryIO

from kinmail.proto.pop3 import (
    TERMINATOR,
    Pop3Message,
    encode_message,
    encode_retr,
    uidl_for,
)
from kinmail.store import Mailbox, MessageGone, Store

INBOX = "INBOX"
AS_IS_KEY = "pop3.as_is"  # per-message store cache: the file can be sent as it is (see `sendable_as_is`)
_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC


class MaildropLocks:
    """RFC 1939 §8: one POP3 session per maildrop at a time. In-process: kinmail is one process."""

    def __init__(self) -> None:
        self._held: dict[str, str] = {}
        self._mutex = threading.Lock()

    def acquire(self, user: str, cid: str) -> bool:
        with self._mutex:
            if user in self._held:
                return False
            self._held[user] = cid
            return True

    def release(self, user: str, cid: str) -> None:
        with self._mutex:
            if self._held.get(user) == cid:
                del self._held[user]


def dovecot_pop3_uidls(maildir: Path, uidvalidity: int) -> dict[int, str]:
    """UIDLs Dovecot's pop3 saved (`pop3_save_uidl = yes`) as `P` fields in a version 3 `dovecot-uidlist`,
    used while the folder's UIDVALIDITY is still Dovecot's. Missing or unreadable file: none."""
    try:
        text = (maildir / "dovecot-uidlist").read_text("utf-8", errors="replace")
    except OSError:
        return {}
    lines = text.splitlines()
    if not lines:
        return {}
    header = lines[0].split()
    if not header or header[0] != "3":
        return {}
    fields = {item[0]: item[1:] for item in header[1:] if item}
    if fields.get("V") != str(uidvalidity):
        return {}
    found: dict[int, str] = {}
    for line in lines[1:]:
        head, _, filename = line.partition(":")
        parts = head.split()
        if not parts or not parts[0].isdigit():
            continue
        for item in parts[1:]:
            if item.startswith("P"):
                # An empty P field means "the file's base name", as Dovecot saves `pop3_uidl_format = %f`.
                uidl = item[1:] or filename.strip()
                if uidl:
                    found[int(parts[0])] = uidl
    return found


class Maildrop:
    """The INBOX as one POP3 session sees it.

    Message files are opened relative to a descriptor of the Maildir kept for the session (no path lookup
    per RETR). Whether a message can go out as it is (`as_is`) is decided the first time it is read and kept
    for the session; for messages of at least `remember_from` bytes also in the store's per-message cache,
    so that later sessions send them with `sendfile` without reading them first.
    """

    def __init__(self, store: Store, maildir: Path, user: str, *, remember_from: int = 64 * 1024) -> None:
        self.user = user
        self.mailbox: Mailbox = store.mailboxes(user).open(INBOX)
        self._maildir = maildir
        self._remember_from = remember_from
        self._dir_fd: int | None = None
        self.as_is: dict[int, bool] = {}

    def load(self) -> list[Pop3Message]:
        """Pick up changes on disk and number the messages in UID order (RFC 1939 §5)."""
        self.mailbox.refresh()
        uidvalidity = self.mailbox.uidvalidity
        overrides = dovecot_pop3_uidls(self._maildir, uidvalidity)
        infos = self.mailbox.messages()
        if infos and self._dir_fd is None:
            self._open_dir(infos[0].uid, infos[0].filename)
        for info in infos:
            if info.size >= self._remember_from and info.uid not in self.as_is:
                known = self.mailbox.cache_get(info.uid, AS_IS_KEY)
                if isinstance(known, bool):
                    self.as_is[info.uid] = known
        return [
            Pop3Message(info.uid, info.size, overrides.get(info.uid) or uidl_for(info.uid, uidvalidity))
            for info in infos
        ]

    def _open_dir(self, uid: int, filename: str) -> None:
        path = self.mailbox.path(uid)
        if not path.endswith(filename):
            return
        try:
            self._dir_fd = os.open(path[: -len(filename)] or ".", _OPEN_FLAGS | os.O_DIRECTORY)
        except OSError:
            self._dir_fd = None  # every read goes through the full path then

    def close(self) -> None:
        """End of the session: let go of the Maildir descriptor."""
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def open_fd(self, uid: int) -> int:
        """A descriptor of the message file; raises MessageGone or OSError (renamed or removed since)."""
        info = self.mailbox.get(uid)
        if info is None:
            raise MessageGone(f"message {uid} was expunged")
        if self._dir_fd is not None:
            return os.open(info.filename, _OPEN_FLAGS, dir_fd=self._dir_fd)
        return os.open(self.mailbox.path(uid), _OPEN_FLAGS)

    def read(self, uid: int) -> bytes:
        """The message with CRLF line ends; raises `kinmail.store.MessageGone` when it was expunged."""
        return self.mailbox.read(uid)

    def raw(self, uid: int) -> bytes:
        """The message file as stored (the POP3 encoder fixes line ends); raises MessageGone."""
        try:
            with open(self.mailbox.path(uid), "rb") as f:
                return f.read()
        except FileNotFoundError:  # renamed by a flag change meanwhile: the store finds it again
            return self.mailbox.read(uid)

    def encoded(self, uid: int, body_lines: int | None) -> bytes | bytearray:
        """The multi-line body for RETR (`body_lines` None) or TOP: dot-stuffed, CRLF, terminated. Called in
        a worker thread; remembers (in the store too, for large messages) whether RETR can send it as is."""
        data = self.raw(uid)
        if body_lines is None:
            out, as_is = encode_retr(bytearray(data), crlf_only=False)
            if uid not in self.as_is:
                self.remember(uid, as_is, len(data))
            return out
        return encode_message(data, body_lines)

    def remember(self, uid: int, as_is: bool, size: int) -> None:
        """Keep whether RETR can send the message as it is: for the session, and in the store's cache when the
        message is large enough for `sendfile` to pay (called in a worker thread)."""
        self.as_is[uid] = as_is
        if size >= self._remember_from:
            self.mailbox.cache_put(uid, AS_IS_KEY, as_is)

    def encoded_if_cached(self, uid: int, body_lines: int | None, limit: int) -> bytes | bytearray | None:
        """As `encoded`, but only when the whole file (at most `limit` bytes) is in the page cache: read with
        RWF_NOWAIT, so that the event loop can call this without ever waiting for the disk. None otherwise
        (the caller then reads it in a worker thread)."""
        if _NOWAIT is None:
            return None
        info = self.mailbox.get(uid)
        if info is None or info.size > limit:
            return None
        try:
            if self._dir_fd is not None:
                fd = os.open(info.filename, _OPEN_FLAGS, dir_fd=self._dir_fd)
            else:
                fd = os.open(self.mailbox.path(uid), _OPEN_FLAGS)
        except (OSError, MessageGone):
            return None
        try:
            # `info.size` counts CRLF line ends, so it is never less than the file's size: one read of one
            # byte more gets the whole file, and a count that falls short needs fstat to tell EOF from a
            # page that is not cached.
            buffer = bytearray(info.size + 1)
            done = os.preadv(fd, [buffer], 0, _NOWAIT)
            if done > info.size or (done < info.size and os.fstat(fd).st_size != done):
                return None
        except OSError:  # BlockingIOError: not cached; anything else: let the slow path decide
            return None
        finally:
            os.close(fd)
        del buffer[done:]
        if body_lines is None:
            if self.as_is.get(uid):  # decided before: nothing to look at again
                buffer += TERMINATOR
                return buffer
            wire, self.as_is[uid] = encode_retr(buffer, done == info.size)
            return wire
        return encode_message(bytes(buffer), body_lines)

    def open(self, uid: int) -> BinaryIO:
        """The message file for streaming (line ends as stored); raises MessageGone or FileNotFoundError when
        the file was renamed or removed since."""
        return open(self.mailbox.path(uid), "rb")

    def update(self, deleted: list[int], retrieved: list[int]) -> list[int]:
        """RFC 1939 §6, the UPDATE state: remove the messages marked with DELE and, as Dovecot does, flag
        the ones downloaded with RETR as `\\Seen` for IMAP clients. Returns the UIDs removed."""
        seen = sorted(set(retrieved) - set(deleted))
        if seen:
            self.mailbox.store_flags(seen, {"\\Seen"}, "add")
        if not deleted:
            return []
        self.mailbox.store_flags(deleted, {"\\Deleted"}, "add")
        return self.mailbox.expunge(deleted)
