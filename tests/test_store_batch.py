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


def message_files(tmp_path: Path) -> list[str]:
    box = root(tmp_path)
    return sorted(
        name for sub in ("new", "cur") for name in os.listdir(box / sub) if not name.startswith(".")
    )


@pytest.mark.parametrize("many", [True, False])
def test_a_store_that_fails_before_its_commit_leaves_no_file_behind(
    store: Store, mb: UserMailboxes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, many: bool
) -> None:
    """All or nothing: when the index commit fails after the files were renamed into the folder, they are taken
    out again — a later scan must not find them, or a delivery retried after the error is stored twice."""
    mb.deliver("INBOX", msg("before"))
    before = message_files(tmp_path)
    index_type = type(mb.open("INBOX")._user.db)
    real = index_type.insert_message
    calls = 0

    def failing(self: object, *args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(28, "No space left on device")
        real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(index_type, "insert_message", failing)
    with pytest.raises(OSError):
        if many:
            mb.deliver_many("INBOX", [msg("retried 1"), msg("retried 2")])
        else:
            mb.open("INBOX").append(msg("retried 1"), ["\\Seen"])
    assert message_files(tmp_path) == before
    assert not os.listdir(root(tmp_path) / "tmp")
    box = mb.open("INBOX")
    assert box.refresh() is False  # nothing for a scan to pick up
    # the retry stores each message once
    if many:
        mb.deliver_many("INBOX", [msg("retried 1"), msg("retried 2")])
    else:
        box.append(msg("retried 1"), ["\\Seen"])
    subjects = [box.read(uid).split(b"Subject: ")[1].split(b"\r\n")[0] for uid in box.uids()]
    assert subjects == [b"before", b"retried 1", b"retried 2"] if many else [b"before", b"retried 1"]


def test_append_group_stores_each_job_of_several_users_and_folders(store: Store, tmp_path: Path) -> None:
    """`store.groupappend`: jobs of two users, two of them in one folder, one over its user's quota. Each
    job gets consecutive UIDs of its own folder; the failing one leaves no file and does not stop the others."""
    from kinmail.store.groupappend import AppendJob, append_group

    alice = store.mailboxes(ALICE)
    alice.create_folder("Work")
    store.quota_for = lambda address: 500 if address.startswith("bob") else None
    bob = store.mailboxes("bob@example.test")
    jobs = [
        AppendJob(alice.open("INBOX"), [(msg("a1"), (), None), (msg("a2"), ["\\Seen"], 1_700_000_000.0)]),
        AppendJob(alice.open("Work"), [(msg("w1"), ["$Work"], None)]),
        AppendJob(bob.open("INBOX"), [(msg("b-big", "x" * 600), (), None)]),
        AppendJob(alice.open("INBOX"), [(msg("a3"), (), None)]),
        AppendJob(bob.open("INBOX"), [(msg("b1"), (), None)]),
    ]
    append_group(jobs)
    assert [job.uids for job in jobs] == [[1, 2], [1], [], [3], [1]]
    assert isinstance(jobs[2].error, QuotaExceeded) and all(j.error is None for j in jobs if j is not jobs[2])
    inbox = alice.open("INBOX")
    subjects = [inbox.read(uid).split(b"\r\n")[1] for uid in (1, 2, 3)]
    assert subjects == [b"Subject: a1", b"Subject: a2", b"Subject: a3"]
    second = inbox.get(2)
    assert second is not None and second.flags == {"\\Seen"} and second.internaldate == 1_700_000_000.0
    work = alice.open("Work").get(1)
    assert work is not None and work.flags == {"$Work"}
    bob_root = tmp_path / "mail" / "example.test" / "bob"
    assert len(os.listdir(bob_root / "new")) == 1 and os.listdir(bob_root / "tmp") == []
    # a store opened afresh (the index read again, the Maildir scanned) finds the same, nothing twice
    again = Store(tmp_path / "mail", tmp_path / "index")
    try:
        assert sorted(again.mailboxes(ALICE).open("INBOX").uids()) == [1, 2, 3]
        assert sorted(again.mailboxes("bob@example.test").open("INBOX").uids()) == [1]
    finally:
        again.close()


def test_append_group_defers_a_job_whose_user_is_locked(store: Store, tmp_path: Path) -> None:
    """A job whose user's lock another thread holds is left written and synced, not waited for; the other
    users' jobs are stored, and `finish_deferred` lands the deferred one once the lock is free."""
    import threading

    from kinmail.store.groupappend import AppendJob, append_group, finish_deferred

    alice, bob = store.mailboxes(ALICE), store.mailboxes("bob@example.test")
    jobs = [
        AppendJob(alice.open("INBOX"), [(msg("a"), (), None)]),
        AppendJob(bob.open("INBOX"), [(msg("b"), (), None)]),
    ]
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with jobs[0].mailbox.user_state.writing():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        append_group(jobs)
        assert jobs[0].deferred and jobs[0].uids == [] and jobs[1].uids == [1]
        assert alice.open("INBOX", scan=False).uids() == []
    finally:
        release.set()
        holder.join()
    assert finish_deferred(jobs[0]) == [1]
    assert alice.open("INBOX").uids() == [1]
    assert os.listdir(root(tmp_path) / "tmp") == []
