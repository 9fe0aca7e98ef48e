"""`store.checkpoint`: commits leave the WAL alone (no checkpoint, with its syncs, inside a commit), and the
store's checkpointer copies it back into the index file once enough commits have gone by."""

from __future__ import annotations

import hashlib
from pathlib import Path

from kinmail.store import Store
from kinmail.store.checkpoint import COMMITS

ALICE = "alice@example.test"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_commits_do_not_checkpoint_and_the_checkpointer_does(store: Store) -> None:
    mb = store.mailboxes(ALICE)
    store.checkpointer.close()  # no looks of its own every second: only those the test asks for
    uid = mb.deliver("INBOX", b"From: bob@example.test\r\nSubject: s\r\n\r\nhello\r\n")
    box = mb.open("INBOX")
    user = box.user_state
    store.checkpointer.check()  # what opening the user wrote
    before = digest(user.index_path)
    for n in range(2 * COMMITS + 1):  # some 1,600 pages: SQLite would have checkpointed by itself after 1,000
        box.store_flags([uid], ["\\Flagged"], "add" if n % 2 == 0 else "remove")
    assert digest(user.index_path) == before  # all of it still in the WAL: no checkpoint in a commit
    assert store.checkpointer.check() == 1
    assert digest(user.index_path) != before
    assert store.checkpointer.check() == 0  # nothing new since
    again = Store(store.mail_root, store.index_root)  # the index file and its WAL read as one
    try:
        info = again.mailboxes(ALICE).open("INBOX").get(uid)
        assert info is not None and "\\Flagged" in info.flags
    finally:
        again.close()


def test_a_few_commits_wait_for_the_next_look(store: Store) -> None:
    mb = store.mailboxes(ALICE)
    store.checkpointer.close()
    uid = mb.deliver("INBOX", b"Subject: s\r\n\r\nhello\r\n")
    store.checkpointer.check()
    box = mb.open("INBOX")
    for _ in range(3):
        box.store_flags([uid], ["\\Seen"], "add")
    assert store.checkpointer.check() == 0


def test_an_index_removed_meanwhile_is_not_made_again(tmp_path: Path) -> None:
    from kinmail.store.checkpoint import _checkpoint

    gone = tmp_path / "index" / "example.test" / "nobody.sqlite"
    gone.parent.mkdir(parents=True)
    assert not _checkpoint(gone)
    assert not gone.exists()
