"""Compatibility with Dovecot itself: its IMAP server reads the Maildirs kinmail writes (same UIDs, UIDVALIDITY,
flags, keywords and folder names), and kinmail takes over a Maildir Dovecot wrote without renumbering it.

Dovecot's `imap` binary runs pre-authenticated on a pipe with a private config (`tests.peers.PrivateDovecot`);
it refuses to touch mail as root, so the Maildir is handed to `nobody` in a temporary folder it can reach.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kinmail.store import Store
from tests.peers import PrivateDovecot, private_tmp

NAMESPACE = "namespace inbox {\n  inbox = yes\n  separator = /\n}\n"


@pytest.fixture
def world() -> Iterator[Path]:
    with private_tmp(prefix="kinmail-dovecot-") as base:
        yield base


def dovecot(base: Path, script: bytes) -> str:
    """Dovecot's imap as alice@example.test on the Maildirs under `base/mail`; what it answered."""
    peer = PrivateDovecot(base / "dovecot", mail=base / "mail", extra=NAMESPACE)
    return peer.run_imap("alice@example.test", script)


def test_dovecot_reads_what_kinmail_writes(world: Path) -> None:
    store = Store(world / "mail", world / "index")
    mb = store.mailboxes("alice@example.test")
    mb.deliver("INBOX", b"Subject: one\r\n\r\nfirst\r\n")
    mb.deliver(
        "INBOX", b"Subject: two\r\n\r\nsecond\r\n", flags=["\\Seen", "\\Answered", "Work", "$Forwarded"]
    )
    mb.deliver("INBOX", b"Subject: three\r\n\r\nthird\r\n")
    box = mb.open("INBOX")
    box.store_flags([1], ["\\Deleted"], "add")
    box.expunge()
    mb.create_folder("Entwürfe")
    mb.open("Entwürfe").append(b"Subject: draft\r\n\r\nz\r\n", flags=["\\Draft"])
    validity = box.uidvalidity
    drafts_validity = mb.open("Entwürfe").uidvalidity
    store.close()
    out = dovecot(
        world,
        b'a LIST "" *\r\nb SELECT INBOX\r\nc FETCH 1:* (UID FLAGS RFC822.SIZE)\r\n'
        b"d STATUS Entw&APw-rfe (UIDVALIDITY UIDNEXT MESSAGES)\r\ne LOGOUT\r\n",
    )
    assert '"/" Entw&APw-rfe' in out and '"/" Sent' in out
    assert f"[UIDVALIDITY {validity}]" in out and "[UIDNEXT 4]" in out and "* 2 EXISTS" in out
    fetched = dict(re.findall(r"\* \d+ FETCH \(UID (\d+) FLAGS \(([^)]*)\)", out))
    assert set(fetched) == {"2", "3"}
    assert set(fetched["2"].split()) == {"\\Seen", "\\Answered", "Work", "$Forwarded"}
    assert fetched["3"] in ("", "\\Recent")  # Dovecot's first session sees it as recent
    assert "RFC822.SIZE 24" in out
    assert f"(MESSAGES 1 UIDNEXT 2 UIDVALIDITY {drafts_validity})" in out


def test_kinmail_takes_over_what_dovecot_wrote(world: Path) -> None:
    one = b"Subject: from dovecot\r\n\r\nhello\r\n"
    two = b"Subject: flagged\r\n\r\nworld\r\n"
    out = dovecot(
        world,
        b"a CREATE Lists/Python\r\n"
        + b"b APPEND INBOX (\\Seen $Important) {%d+}\r\n%s\r\n" % (len(one), one)
        + b"c APPEND INBOX (\\Flagged) {%d+}\r\n%s\r\n" % (len(two), two)
        + b"d APPEND Lists/Python () {%d+}\r\n%s\r\n" % (len(one), one)
        + b"e SELECT INBOX\r\nf STORE 1 +FLAGS (\\Deleted)\r\ng EXPUNGE\r\nh LOGOUT\r\n",
    )
    validity = int(re.search(r"\[UIDVALIDITY (\d+)\]", out).group(1))  # type: ignore[union-attr]
    appended = re.findall(r"\[APPENDUID (\d+) (\d+)\]", out)
    assert [uid for _v, uid in appended] == ["1", "2", "1"]
    store = Store(world / "mail", world / "index")
    mb = store.mailboxes("alice@example.test")
    box = mb.open("INBOX")
    assert box.uidvalidity == validity
    assert [(i.uid, i.flags) for i in box.messages()] == [(2, frozenset({"\\Flagged"}))]
    assert box.read(2) == two
    assert box.uidnext == 3  # UID 1 was expunged by Dovecot and is not given again
    lists = mb.open("Lists/Python")
    assert [i.uid for i in lists.messages()] == [1]
    assert mb.deliver("INBOX", b"Subject: new\r\n\r\nx\r\n") == 3
    store.close()
