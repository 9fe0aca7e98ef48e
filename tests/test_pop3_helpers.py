"""Helpers shared by the POP3 test modules (no tests here): users, putting mail in, the IMAP side, Dovecot.

The Dovecot helpers are thin names over `tests.peers` for the modules that use them.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import smtplib
import ssl
import time
from collections.abc import Iterator
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from tests.serverctl import USERS, KinmailServer


class Pop3Users:
    """Distinct users for the tests of one module, so that tests sharing a server do not see each other's mail."""

    def __init__(self, prefix: str, count: int) -> None:
        # One password for all: the test server hashes each distinct password once (argon2 is slow on purpose).
        self._users = {f"{prefix}{i}@example.test": f"{prefix}-password-x" for i in range(count)}
        self._free = list(self._users)

    def all(self) -> dict[str, str]:
        """These users and the standard ones (the default aliases point at alice)."""
        return {**USERS, **self._users}

    def take(self) -> str:
        return self._free.pop(0)

    def password(self, user: str) -> str:
        return self._users[user]


def message(subject: str, body: str, sender: str = "sender@example.net") -> bytes:
    return (
        f"From: {sender}\r\nTo: someone@example.test\r\nSubject: {subject}\r\n"
        f"Date: {formatdate()}\r\nMessage-ID: {make_msgid()}\r\n\r\n{body}"
    ).encode()


def deliver(server: KinmailServer, user: str, data: bytes) -> None:
    """Send a message to `user` over SMTP and wait until it is in the INBOX (one at a time: order is known)."""
    before = count_files(server, user)
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as smtp:
        smtp.sendmail("sender@example.net", [user], data)
    wait_for_count(server, user, before + 1)


def drop_into_maildir(server: KinmailServer, user: str, data: bytes) -> None:
    """Write a message file straight into `user`'s Maildir, as another program (an old server) would."""
    maildir = server.maildir(user)
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    name = f"{int(time.time())}.M{time.monotonic_ns()}P{os.getpid()}.elsewhere"
    (maildir / "tmp" / name).write_bytes(data)
    os.rename(maildir / "tmp" / name, maildir / "new" / name)


def count_files(server: KinmailServer, user: str) -> int:
    maildir = server.maildir(user)
    return sum(
        1
        for sub in ("new", "cur")
        if (maildir / sub).is_dir()
        for p in (maildir / sub).iterdir()
        if p.is_file()
    )


def wait_for_count(server: KinmailServer, user: str, count: int, timeout: float = 30.0) -> None:
    """Wait until `user`'s INBOX holds `count` messages (SMTP delivery goes through the queue)."""
    deadline = time.monotonic() + timeout
    while count_files(server, user) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{user} has {count_files(server, user)} messages, expected {count}")
        time.sleep(0.05)


def _imap(server: KinmailServer, user: str, password: str) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    imap.login(user, password)
    return imap


def imap_subjects(server: KinmailServer, user: str, password: str) -> list[str]:
    """The subjects in `user`'s INBOX in UID order, as an IMAP client sees them."""
    imap = _imap(server, user, password)
    imap.select("INBOX")
    _, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    imap.logout()
    return [item[1].decode().split(":", 1)[1].strip() for item in data if isinstance(item, tuple)]


def imap_seen(server: KinmailServer, user: str, password: str) -> list[bool]:
    """Whether each message in `user`'s INBOX (UID order) has the \\Seen flag, as an IMAP client sees it."""
    imap = _imap(server, user, password)
    imap.select("INBOX", readonly=True)
    _, data = imap.uid("FETCH", "1:*", "(FLAGS)")
    imap.logout()
    return [b"\\Seen" in item for item in data if isinstance(item, bytes)]


def imap_expunge_first(server: KinmailServer, user: str, password: str) -> None:
    """Delete and expunge the first message of `user`'s INBOX as an IMAP client does."""
    imap = _imap(server, user, password)
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Deleted)")
    imap.expunge()
    imap.logout()


def client_context(server: KinmailServer) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server.cert_path))
    context.check_hostname = False
    return context


@contextlib.contextmanager
def running_server(root: Path, **options: Any) -> Iterator[KinmailServer]:
    """A started KinmailServer; tries again on fresh ports when another process took one of ours meanwhile."""
    for attempt in range(3):
        server = KinmailServer(root / f"try{attempt}", **options)
        try:
            server.start()
        except RuntimeError as exc:
            if "address already in use" in str(exc) and attempt < 2:
                continue
            raise
        try:
            yield server
        finally:
            server.stop()
        return
