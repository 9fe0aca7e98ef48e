"""The store's group commit: `UserMailboxes.deliver_many` / `Mailbox.append_many` (several messages, one commit)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kinmail.store import Change, QuotaExceeded, Store, UserMailboxes, maildir

ALICE = "alice@example.test"


def msg(subject: str, body: str = "hello") -> bytes:
    return f"From: bob@example.test\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()


@pytest.fixture
def mb(store: Store) -> UserMailboxes:
    return store.mailboxes(ALICE)


def root(tmp_path: Path) -> Path:
    return tmp_path / "mail" / "example.test" / "alice"


def test_deliver_many_assigns_consecutive_uids_and_indexes_all(
    store: Store, mb: UserMailboxes, tmp_path: Path
) -> None:
    first = mb.deliver("INBOX", msg("before"))
    seen: list[Change] = []
    store.subscribe(ALICE, seen.append)
    uids = mb.deliver_many("INBOX", [msg(f"batch {n}", f"word{n} body") for n in range(5)])
    assert uids == [first + 1 + n for n in range(5)]
    box = mb.open("INBOX")
    assert box.uids() == [first, *uids]
    assert box.uidnext == uids[-1] + 1
    assert b"Subject: batch 3" in box.read(uids[3])
    assert box.search_text("word4", "body") == {uids[4]}  # full-text indexed in the same commit
    assert len(os.listdir(root(tmp_path) / "new")) == 6
    assert len(os.listdir(root(tmp_path) / "tmp")) == 0
    uidlist = maildir.read_uidlist(root(tmp_path))
    assert uidlist is not None and sorted(uidlist.uids.values()) == [first, *uids]
    assert [(c.kind, c.uids) for c in seen] == [("append", tuple(uids))]
    modseqs = [box.get(uid).modseq for uid in uids]  # type: ignore[union-attr]
    assert modseqs == sorted(set(modseqs)) and box.highestmodseq == modseqs[-1]


def test_deliver_many_with_flags_goes_to_cur(mb: UserMailboxes, tmp_path: Path) -> None:
    uids = mb.deliver_many("Archive", [msg("a"), msg("b")], flags=["\\Seen"])
    box = mb.open("Archive")
    assert [box.get(uid).flags for uid in uids] == [frozenset({"\\Seen"})] * 2  # type: ignore[union-attr]
    assert len(os.listdir(root(tmp_path) / ".Archive" / "cur")) == 2
    assert mb.open("Archive").status().unseen == 0


def test_deliver_many_is_seen_by_a_fresh_store_without_duplicates(tmp_path: Path) -> None:
    first = Store(tmp_path / "mail", tmp_path / "index")
    uids = first.mailboxes(ALICE).deliver_many("INBOX", [msg(str(n)) for n in range(4)])
    first.close()
    again = Store(tmp_path / "mail", tmp_path / "index")
    try:
        box = again.mailboxes(ALICE).open("INBOX")
        box.refresh()
        assert box.uids() == uids
        assert again.mailboxes(ALICE).deliver("INBOX", msg("next")) == uids[-1] + 1
    finally:
        again.close()


def test_deliver_many_over_quota_stores_nothing(store: Store, tmp_path: Path) -> None:
    one = msg("a", "x" * 100)
    store.quota_for = lambda address: len(one) * 2 + 10
    limited = store.mailboxes(ALICE)
    with pytest.raises(QuotaExceeded):
        limited.deliver_many("INBOX", [one, one, one])
    assert limited.quota_usage() == (0, 0)
    assert os.listdir(root(tmp_path) / "new") == [] and os.listdir(root(tmp_path) / "tmp") == []
    assert limited.deliver_many("INBOX", [one, one]) == [1, 2]


def test_deliver_many_of_nothing(mb: UserMailboxes) -> None:
    assert mb.deliver_many("INBOX", []) == []
    assert mb.open("INBOX").uidnext == 1


def test_quota_of_deliver_many_follows_every_change(store: Store, tmp_path: Path) -> None:
    one = msg("a", "x" * 100)
    store.quota_for = lambda address: len(one) * 3
    mb = store.mailboxes(ALICE)
    assert mb.deliver_many("INBOX", [one]) == [1]
    assert mb.deliver_many("INBOX", [one]) == [2]
    other = Store(tmp_path / "mail", tmp_path / "index")  # another connection, as another process
    try:
        assert other.mailboxes(ALICE).deliver("INBOX", one) == 3
    finally:
        other.close()
    with pytest.raises(QuotaExceeded):  # the other connection's commit counts
        mb.deliver_many("INBOX", [one])
    box = mb.open("INBOX")
    box.store_flags([1], ["\\Deleted"], "add")
    assert box.expunge() == [1]
    assert mb.deliver_many("INBOX", [one]) == [4]  # the expunge freed room
    with pytest.raises(QuotaExceeded):
        mb.deliver_many("INBOX", [one])
    assert mb.quota_usage() == (len(one) * 3, 3)


def test_a_big_delivered_message_is_found_by_search(mb: UserMailboxes) -> None:
    big = msg("big", "needle-in-the-body " + "filler text " * 4000)
    small = msg("small", "needle-in-the-body")
    uids = mb.deliver_many("INBOX", [big, small])
    box = mb.open("INBOX")
    assert box.search_text("needle-in-the-body", "body") == set(uids)
    assert box.search_text("filler text", "body") == {uids[0]}
