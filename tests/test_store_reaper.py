"""Expunged messages' files: out of the folder at once, deleted by the reaper's thread soon after."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kinmail.store import Store, UserMailboxes, maildir
from kinmail.store.reaper import REAPER, Reaper

ALICE = "alice@example.test"


def _files(root: Path, sub: str) -> list[str]:
    return sorted(os.listdir(root / sub))


def test_expunge_moves_files_out_then_the_reaper_deletes_them(store: Store) -> None:
    mb: UserMailboxes = store.mailboxes(ALICE)
    uids = [mb.deliver("INBOX", b"Subject: m%d\r\n\r\nbody\r\n" % i) for i in range(3)]
    box = mb.open("INBOX")
    box.store_flags(uids[:2], ["\\Deleted"], "add")
    assert box.expunge() == uids[:2]
    # no folder listing shows them any more, not even before the reaper ran: a scan would take them for new mail
    assert len(_files(mb.root, "new")) + len(_files(mb.root, "cur")) == 1
    deadline = time.monotonic() + 10
    while any(n.startswith(maildir.EXPUNGED_PREFIX) for n in _files(mb.root, "tmp")):
        assert time.monotonic() < deadline, _files(mb.root, "tmp")
        time.sleep(0.05)
    assert _files(mb.root, "tmp") == []
    assert [i.uid for i in box.messages()] == [uids[2]]


def test_a_hard_linked_copy_outlives_the_expunge(store: Store) -> None:
    mb = store.mailboxes(ALICE)
    uid = mb.deliver("INBOX", b"Subject: keep\r\n\r\nbody\r\n")
    box = mb.open("INBOX")
    box.copy([uid], "Archive")
    box.store_flags([uid], ["\\Deleted"], "add")
    box.expunge()
    REAPER.drain()
    (copied,) = mb.open("Archive").messages()
    assert mb.open("Archive").read(copied.uid).endswith(b"body\r\n")


def test_files_left_by_a_process_that_ended_are_cleared(tmp_path: Path) -> None:
    folder = tmp_path / "Maildir"
    maildir.make_folder_dirs(folder, subfolder=False)
    left = folder / "tmp" / (maildir.EXPUNGED_PREFIX + "1700000000.M1P1.host,S=10,W=10:2,ST")
    left.write_bytes(b"x")
    writing = folder / "tmp" / "1700000001.M2P1.host,S=10,W=10"  # a message being written: kept
    writing.write_bytes(b"y")
    assert maildir.clean_tmp(folder) == 1
    assert _files(folder, "tmp") == [writing.name]


def test_drain_deletes_what_it_was_given_and_ignores_missing_files(tmp_path: Path) -> None:
    reaper = Reaper(interval=3600)  # its thread never gets to look: only drain deletes
    paths = [tmp_path / f"f{i}" for i in range(3)]
    for p in paths[:2]:
        p.write_bytes(b"x")
    reaper.add([str(p) for p in paths])
    assert all(p.exists() for p in paths[:2])
    assert reaper.drain() == 3
    assert not any(p.exists() for p in paths)
    assert reaper.drain() == 0
