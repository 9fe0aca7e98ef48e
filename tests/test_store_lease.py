"""The event loop's short store calls: a lease of a user's `flock` (`UserState.held_now(on_lease=...)`,
`end_lease`) keeps the cross-process lock between them for a moment, and gives it back so other processes get
in; a short call (`short_call`) leaves files other programs dropped into a folder to a thread."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator

import pytest

from kinmail.store import NotShort, Store, short_call
from kinmail.store.mailbox import Mailbox
from kinmail.store.user import UserState

ALICE = "alice@example.test"


def msg(n: int) -> bytes:
    return f"From: bob@example.test\r\nSubject: {n}\r\n\r\nbody {n}\r\n".encode()


@pytest.fixture
def box(store: Store) -> Mailbox:
    return store.mailboxes(ALICE).open("INBOX")


@pytest.fixture
def outsider(box: Mailbox) -> Iterator[int]:
    """The lock file opened apart, as another process has it: `flock` on it conflicts with the store's."""
    fd = os.open(box.user_state.index_path.with_suffix(".lock"), os.O_RDWR)
    yield fd
    os.close(fd)


def free(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def test_a_lease_keeps_the_flock_until_it_ends_then_leaves_a_gap(box: Mailbox, outsider: int) -> None:
    leases: list[UserState] = []
    with box.held_now(leases.append) as held:
        assert held
        box.append(msg(1))
    assert leases == [box.user_state]
    assert not free(outsider)  # kept after the block
    with box.held_now(leases.append) as held:  # the next short call rides on the same lease
        assert held
    assert len(leases) == 1
    assert box.user_state.end_lease(gap=60)
    assert free(outsider)
    with box.held_now(leases.append) as held:  # within the gap: the flock only for the block, no new lease
        assert held
    assert len(leases) == 1 and free(outsider)
    fcntl.flock(outsider, fcntl.LOCK_EX)
    with box.held_now(leases.append) as held:  # another process has the lock: the caller goes elsewhere
        assert not held
    fcntl.flock(outsider, fcntl.LOCK_UN)


def test_without_on_lease_the_flock_goes_with_the_block(box: Mailbox, outsider: int) -> None:
    with box.held_now() as held:
        assert held
        box.append(msg(1))
    assert free(outsider)


def test_a_lease_waits_for_a_store_thread_to_finish(box: Mailbox, outsider: int) -> None:
    with box.held_now(lambda _u: None) as held:
        assert held
    inside, leave = threading.Event(), threading.Event()

    def thread_call() -> None:
        with box.user_state.writing():
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=thread_call)
    t.start()
    assert inside.wait(10)
    assert not box.user_state.end_lease(gap=0)  # the thread has the user's lock: try again later
    leave.set()
    t.join(10)
    assert box.user_state.end_lease(gap=0)
    assert free(outsider)


def test_another_process_commits_after_the_lease_and_the_next_call_sees_it(
    store: Store, box: Mailbox
) -> None:
    with box.held_now(lambda _u: None) as held:
        assert held
        first = box.append(msg(1))
    other = Store(store.mail_root, store.index_root)  # its own index connection and lock file: a process
    delivered: list[int] = []
    try:
        t = threading.Thread(target=lambda: delivered.append(other.mailboxes(ALICE).deliver("INBOX", msg(2))))
        t.start()
        t.join(0.3)
        assert not delivered  # waits for the lease
        assert box.user_state.end_lease(gap=0)
        t.join(10)
        assert len(delivered) == 1
        with box.held_now() as held:
            assert held
            assert box.uids() == [first, delivered[0]]  # caught up with the other process's commit
    finally:
        other.close()


def test_a_lease_is_given_back_and_changes_told_when_the_block_raises(
    store: Store, box: Mailbox, outsider: int
) -> None:
    leases: list[UserState] = []
    told: list[object] = []
    store.subscribe(ALICE, told.append)
    with pytest.raises(RuntimeError), box.held_now(leases.append) as held:
        assert held
        box.append(msg(1))
        raise RuntimeError("after the commit")
    assert leases == [box.user_state]  # so the caller ends the lease as usual
    assert told  # the append committed: sessions hear of it
    assert box.user_state.end_lease(gap=0)
    assert free(outsider)


def test_a_short_call_leaves_files_other_programs_dropped_to_a_thread(box: Mailbox) -> None:
    kept = box.append(msg(1))
    folder = box.folder_state.path
    for n in range(3):
        (folder / "new" / f"170000000{n}.external.host").write_bytes(msg(10 + n))
    os.unlink(box.path(kept))
    before = (box.uids(), box.highestmodseq)
    with box.held_now() as held, short_call():
        assert held
        with pytest.raises(NotShort):
            box.refresh()
        assert (box.uids(), box.highestmodseq) == before  # nothing changed: the call can be made again
    assert box.refresh()  # where it may wait for the disk
    assert len(box.uids()) == 3 and kept not in box.uids()
    with short_call():
        assert not box.refresh()  # nothing new: a short call does its cheap look as before
