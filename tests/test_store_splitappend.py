"""`store.splitappend`: an append in three steps — prepare (lock), settle (no lock, for several appends at
once), record (lock) — as the IMAP server runs them, with scans and failures in between."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kinmail.store import Change, Store, maildir
from kinmail.store.splitappend import close_files, discard, prepare, record, settle

ALICE, BOB = "alice@example.test", "bob@example.test"


def msg(subject: str) -> bytes:
    return f"From: carol@example.test\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()


def root(tmp_path: Path, local: str = "alice") -> Path:
    return tmp_path / "mail" / "example.test" / local


def test_three_steps_store_messages_of_two_users_with_one_settle(store: Store, tmp_path: Path) -> None:
    seen: list[Change] = []
    store.subscribe(ALICE, seen.append)
    alice, bob = store.mailboxes(ALICE).open("INBOX"), store.mailboxes(BOB).open("INBOX")
    date = 1_700_000_000.0
    a = prepare(alice, [(msg("a1"), (), None), (msg("a2"), ["\\Seen"], date)])
    b = prepare(bob, [(msg("b1"), (), None)])
    assert os.listdir(root(tmp_path) / "new") == []  # nothing in the folder before it is synced
    assert settle([a, b]) == [None, None]
    assert len(os.listdir(root(tmp_path) / "new")) == 1 and len(os.listdir(root(tmp_path) / "cur")) == 1
    for staged in (a, b):
        close_files(staged)
    assert record(alice, a) == [1, 2]
    assert record(bob, b) == [1]
    assert [(c.kind, c.uids) for c in seen if c.kind == "append"] == [("append", (1, 2))]
    box = store.mailboxes(ALICE).open("INBOX")
    assert box.uids() == [1, 2] and box.uidnext == 3
    info = box.get(2)
    assert info is not None and info.flags == frozenset({"\\Seen"}) and info.internaldate == date
    assert b"Subject: a2" in box.read(2)
    uidlist = maildir.read_uidlist(root(tmp_path))
    assert uidlist is not None and sorted(uidlist.uids.values()) == [1, 2]
    assert os.listdir(root(tmp_path) / "tmp") == [] and alice.user_state.placing == set()


def test_a_scan_between_settle_and_record_leaves_the_files_to_the_append(
    store: Store, tmp_path: Path
) -> None:
    mailboxes = store.mailboxes(ALICE)
    box = mailboxes.open("INBOX")
    staged = prepare(box, [(msg("x"), (), None)])
    assert settle([staged]) == [None]
    close_files(staged)
    other = mailboxes.open("INBOX")  # a scan of the folder, as another session's SELECT makes it
    other.refresh()
    assert other.uids() == []
    assert record(box, staged) == [1]
    again = Store(tmp_path / "mail", tmp_path / "index2")  # a rebuild from the Maildir finds it once
    try:
        assert again.mailboxes(ALICE).open("INBOX").uids() == [1]
    finally:
        again.close()


def test_a_failed_settle_takes_the_files_back_and_uses_no_uid(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = store.mailboxes(ALICE).open("INBOX")
    staged = prepare(box, [(msg("lost"), (), None), (msg("lost too"), (), None)])
    real_rename = os.rename
    calls = 0

    def rename(src: str | Path, dst: str | Path) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    [error] = settle([staged])
    monkeypatch.undo()
    assert isinstance(error, OSError)
    discard(box, staged)
    assert os.listdir(root(tmp_path) / "new") == [] and os.listdir(root(tmp_path) / "tmp") == []
    assert box.user_state.placing == set()
    later = prepare(box, [(msg("kept"), (), None)])
    assert settle([later]) == [None]
    close_files(later)
    assert record(box, later) == [1]  # the failed append gave no UID away


def test_a_file_that_cannot_be_written_fails_only_its_append(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files are created and written by `settle`, in its thread: a disk full while writing the second
    message of one append fails that append, all of it, and not the other one of the batch."""
    alice, bob = store.mailboxes(ALICE).open("INBOX"), store.mailboxes(BOB).open("INBOX")
    a = prepare(alice, [(msg("a1"), (), None), (msg("a2"), (), None)])
    b = prepare(bob, [(msg("b1"), (), None)])
    assert os.listdir(root(tmp_path) / "tmp") == []  # prepare writes nothing
    real_write = os.write
    calls = 0

    def write(fd: int, data: bytes | memoryview) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    errors = settle([a, b])
    monkeypatch.undo()
    assert isinstance(errors[0], OSError) and errors[1] is None
    assert os.listdir(root(tmp_path) / "tmp") == [] and a.fds == []  # nothing left behind or open
    discard(alice, a)
    close_files(b)
    assert record(bob, b) == [1]
    assert os.listdir(root(tmp_path) / "new") == [] and alice.user_state.placing == set()
    later = prepare(alice, [(msg("kept"), (), None)])
    assert settle([later]) == [None]
    close_files(later)
    assert record(alice, later) == [1]  # the failed append gave no UID away


def test_record_takes_the_uids_another_process_gave_the_files(store: Store, tmp_path: Path) -> None:
    """Another process (here a second Store on the same files) lists the folder after `settle`: it indexes
    the files itself, and `record` answers with the UIDs it gave them instead of failing."""
    box = store.mailboxes(ALICE).open("INBOX")
    staged = prepare(box, [(msg("raced"), (), None)])
    assert settle([staged]) == [None]
    close_files(staged)
    other = Store(tmp_path / "mail", tmp_path / "index")
    try:
        assert other.mailboxes(ALICE).open("INBOX").uids() == [1]
    finally:
        other.close()
    assert record(box, staged) == [1]
    assert store.mailboxes(ALICE).open("INBOX").uids() == [1]
    assert len(os.listdir(root(tmp_path) / "new")) == 1
