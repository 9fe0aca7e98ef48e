"""What the store keeps in memory of a folder agrees with its index: the folder row after each kind of change
(written in one statement and not read back), and one shared set object per distinct set of flags."""

from __future__ import annotations

import sqlite3

from kinmail.store import Store, UserMailboxes
from kinmail.store.mailbox import Mailbox

ALICE = "alice@example.test"


def msg(n: int) -> bytes:
    return f"From: bob@example.test\r\nSubject: {n}\r\n\r\nbody {n}\r\n".encode()


def row_on_disk(store: Store, box: Mailbox) -> tuple[object, ...]:
    """The folder's row as another reader of the index sees it."""
    conn = sqlite3.connect(box.user_state.index_path)
    try:
        cur = conn.execute(
            "SELECT uidnext, highestmodseq, new_mtime, cur_mtime, scanned_at, stale_uidlist FROM folders"
            " WHERE id=?",
            (box.folder_state.row.id,),
        )
        found = cur.fetchone()
    finally:
        conn.close()
    assert found is not None
    return tuple(found)


def row_in_memory(box: Mailbox) -> tuple[object, ...]:
    r = box.folder_state.row
    return (r.uidnext, r.highestmodseq, r.new_mtime, r.cur_mtime, r.scanned_at, r.stale_uidlist)


def test_folder_rows_in_memory_match_the_index_after_every_kind_of_change(store: Store) -> None:
    mb: UserMailboxes = store.mailboxes(ALICE)
    mb.create_folder("Kept")
    box, archive = mb.open("INBOX"), mb.open("Kept")
    steps = {
        "append": lambda: box.append_many([msg(n) for n in range(6)]),
        "append with flags": lambda: box.append(msg(9), ["\\Seen"]),
        "flags": lambda: box.store_flags(box.uids()[:3], ["\\Flagged"], "add"),
        "deleted": lambda: box.store_flags(box.uids()[:2], ["\\Deleted"], "add"),
        "expunge": lambda: box.expunge(box.uids()[:2]),
        "copy": lambda: box.copy(box.uids()[:2], archive),
        "move": lambda: box.move(box.uids()[-1:], archive),
    }
    for name, step in steps.items():
        step()
        for folder in (box, archive):
            assert row_in_memory(folder) == row_on_disk(store, folder), (name, folder.name)
    assert box.folder_state.row.stale_uidlist == 3  # two expunged, one moved away
    # and a fresh process reading the index finds the same messages
    other = Store(store.mail_root, store.index_root)
    try:
        assert other.mailboxes(ALICE).open("INBOX").uids() == box.uids()
        assert other.mailboxes(ALICE).open("Kept").uids() == archive.uids()
    finally:
        other.close()


def test_equal_flag_sets_are_one_object(store: Store) -> None:
    box = store.mailboxes(ALICE).open("INBOX")
    box.append_many([msg(n) for n in range(3)])
    assert len({id(i.flags) for i in box.messages()}) == 1  # appended without flags: one empty set
    box.append(msg(3), ["\\Seen", "\\Flagged"])
    box.append(msg(4), ["\\Flagged", "\\Seen"])
    uids = box.uids()
    box.store_flags(uids[:2], ["\\Seen", "\\Flagged"], "add")
    box.store_flags(uids[2:3], ["\\Seen"], "set")
    box.store_flags(uids[2:3], ["\\Flagged"], "add")
    both = [i.flags for i in box.messages() if i.flags == {"\\Seen", "\\Flagged"}]
    assert len(both) == 5 and len({id(f) for f in both}) == 1
