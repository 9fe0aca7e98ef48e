"""Local deliveries in batches: `kinmail.queue.batches.Batches` gathers what the scheduler's workers bring while
a batch runs, and `kinmail.delivery.local.deliver_batch` stores the messages for one folder with one commit, and those of
all folders with one round of syncs; a
batch that fails as a whole is stored one message at a time, each with its own outcome."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kinmail.config.directory import Recipient
from kinmail.delivery.local import DELIVERED, PERMANENT, Delivery, deliver_batch
from kinmail.queue.batches import Batches
from kinmail.store import Store

ALICE = "alice@example.test"
BOB = "bob@example.test"


def runtime(store: Store) -> Any:
    """The parts of a `Runtime` that local delivery uses (no Sieve scripts, no mailbox command)."""
    delivery = SimpleNamespace(recipient_delimiter="+", mailbox_command="")
    sieve = SimpleNamespace(global_script="", after_script="")
    config = SimpleNamespace(delivery=delivery, sieve=sieve)
    return SimpleNamespace(store=store, config=config, data_dir=store.mail_root.parent)


def item(n: int, address: str = ALICE) -> Delivery:
    body = f"Subject: m{n}\r\n\r\nnumber{n}\r\n".encode()
    return Delivery(f"Q{n:015d}", "sender@remote.example", Recipient(address, local=True), body)


def test_one_commit_per_folder_and_an_outcome_per_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 deliveries for two users: one index commit per user's folder, and one round of syncs for all of
    them — one `sync_many` of the 30 files, one of the two directories."""
    from kinmail.core import atomic
    from kinmail.store import groupappend
    from kinmail.store.mailbox import Mailbox, Staged

    commits: list[tuple[str, int]] = []
    syncs: list[int] = []
    real_commit, real_sync = Mailbox.commit, groupappend.sync_many

    def commit(self: Mailbox, staged: Staged, before: tuple[int, int]) -> None:
        commits.append((self.user_state.address, len(staged.uids)))
        real_commit(self, staged, before)

    def sync_many(fds: list[int], *, one_fs: bool = False) -> None:
        syncs.append(len(fds))
        assert not one_fs  # two users' files: a fdatasync each (see `append_group`)
        real_sync(fds, one_fs=one_fs)

    monkeypatch.setattr(Mailbox, "commit", commit)
    monkeypatch.setattr(groupappend, "sync_many", sync_many)  # the files
    monkeypatch.setattr(atomic, "sync_many", sync_many)  # the directories (`fsync_dirs`)
    store = Store(tmp_path / "mail", tmp_path / "index")
    try:
        rt = runtime(store)
        store.mailboxes(ALICE)  # users exist
        store.mailboxes(BOB)
        outcomes = deliver_batch(rt, [item(n, ALICE if n % 3 else BOB) for n in range(30)])
        assert [o.status for o in outcomes] == [DELIVERED] * 30
        assert sorted(commits) == [(ALICE, 20), (BOB, 10)]
        assert syncs == [30, 2]
        box = store.mailboxes(ALICE).open("INBOX")
        assert len(box.uids()) == 20
        first = box.read(box.uids()[0])
        assert first.startswith(
            b"Return-Path: <sender@remote.example>\r\nDelivered-To: alice@example.test\r\n"
        )
    finally:
        store.close()


def test_a_batch_over_quota_is_stored_one_by_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "mail", tmp_path / "index")
    store.quota_for = lambda address: 250  # room for two of these messages (96 bytes each), not for five
    try:
        outcomes = deliver_batch(runtime(store), [item(n) for n in range(5)])
        statuses = [o.status for o in outcomes]
        assert statuses[:2] == [DELIVERED, DELIVERED]
        assert statuses[2:] == [PERMANENT] * 3
        assert {o.code for o in outcomes[2:]} == {552}
        assert len(store.mailboxes(ALICE).open("INBOX").uids()) == 2
    finally:
        store.close()


def test_submissions_during_a_batch_go_into_the_next_one() -> None:
    gate = threading.Event()
    seen: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        seen.append(list(items))
        if len(seen) == 1:
            gate.wait(10)
        return [i * 10 for i in items]

    async def main() -> list[list[int]]:
        with ThreadPoolExecutor(2) as pool:
            batches: Batches[int, int] = Batches(run, pool, parallel=1)
            first = asyncio.ensure_future(batches.submit([1]))
            await asyncio.sleep(0.05)  # the first batch is running and held at the gate
            later = [asyncio.ensure_future(batches.submit([n, n + 1])) for n in (2, 4, 6)]
            await asyncio.sleep(0.05)
            gate.set()
            return [await first, *[await f for f in later]]

    results = asyncio.run(main())
    assert results == [[10], [20, 30], [40, 50], [60, 70]]
    assert seen == [[1], [2, 3, 4, 5, 6, 7]]


def test_a_second_batch_starts_only_when_the_first_is_held_up() -> None:
    """`overlap_after`: while batches are quick they run one at a time; one held up for longer lets the next
    start beside it, also when nothing more is submitted meanwhile."""
    gate = threading.Event()
    seen: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        seen.append(list(items))
        if items == [1]:
            gate.wait(10)
        return items

    async def main() -> tuple[list[list[int]], list[list[int]]]:
        with ThreadPoolExecutor(2) as pool:
            batches: Batches[int, int] = Batches(run, pool, parallel=2, overlap_after=0.3)
            first = asyncio.ensure_future(batches.submit([1]))
            await asyncio.sleep(0.05)
            second = asyncio.ensure_future(batches.submit([2]))
            await asyncio.sleep(0.1)
            early = list(seen)  # the first batch has run 0.15 s: the second still waits
            done, _ = await asyncio.wait([second], timeout=2)  # after 0.3 s it starts beside the held one
            after = list(seen)
            gate.set()
            await first
            assert done
            return early, after

    early, after = asyncio.run(main())
    assert early == [[1]]
    assert after == [[1], [2]]


def test_a_failing_batch_fails_only_its_own_callers() -> None:
    async def main() -> tuple[BaseException | None, list[str]]:
        def run(items: list[str]) -> list[str]:
            if "bad" in items:
                raise OSError("disk gone")
            return [i.upper() for i in items]

        with ThreadPoolExecutor(2) as pool:
            batches: Batches[str, str] = Batches(run, pool, parallel=1, max_batch=1)
            bad = asyncio.ensure_future(batches.submit(["bad"]))
            good = asyncio.ensure_future(batches.submit(["good"]))
            error = None
            try:
                await bad
            except OSError as exc:
                error = exc
            return error, await good

    error, good = asyncio.run(main())
    assert isinstance(error, OSError)
    assert good == ["GOOD"]


def test_a_burst_for_one_mailbox_is_synced_with_one_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kinmail.store import groupappend

    seen: list[tuple[int, bool]] = []
    real_sync = groupappend.sync_many

    def sync_many(fds: list[int], *, one_fs: bool = False) -> None:
        seen.append((len(fds), one_fs))
        real_sync(fds, one_fs=one_fs)

    monkeypatch.setattr(groupappend, "sync_many", sync_many)
    store = Store(tmp_path / "mail", tmp_path / "index")
    try:
        rt = runtime(store)
        outcomes = deliver_batch(rt, [item(n, ALICE) for n in range(5)])
        assert [o.status for o in outcomes] == [DELIVERED] * 5
        assert seen == [(5, True)]
        assert len(store.mailboxes(ALICE).open("INBOX").uids()) == 5
    finally:
        store.close()


def test_files_of_one_folder_are_synced_with_one_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sync_many(one_fs=True)`: from three files on, one syncfs(2) instead of a fdatasync per file; its error is
    raised as OSError; fewer files, or files of several folders, are synced one by one."""
    from kinmail.core import atomic

    if atomic._syncfs is None:
        pytest.fail("syncfs(2) not found in the C library")
    calls: list[str] = []
    real_syncfs, real_fdatasync = atomic._syncfs, atomic.os.fdatasync

    def syncfs(fd: int) -> int:
        calls.append("syncfs")
        return int(real_syncfs(fd))

    def fdatasync(fd: int) -> None:
        calls.append("fdatasync")
        real_fdatasync(fd)

    monkeypatch.setattr(atomic, "_syncfs", syncfs)
    monkeypatch.setattr(atomic.os, "fdatasync", fdatasync)
    fds = [os.open(tmp_path / f"f{n}", os.O_WRONLY | os.O_CREAT, 0o600) for n in range(4)]
    try:
        for fd in fds:
            os.write(fd, b"x" * 100)
        atomic.sync_many(fds, one_fs=True)
        assert calls == ["syncfs"]
        calls.clear()
        atomic.sync_many(fds[:2], one_fs=True)
        assert calls == ["fdatasync", "fdatasync"]
        calls.clear()
        atomic.sync_many(fds[:3])  # not said to be one file system: one thread each
        assert calls == ["fdatasync"] * 3
        monkeypatch.setattr(atomic, "_syncfs", lambda fd: -1)
        with pytest.raises(OSError):
            atomic.sync_many(fds, one_fs=True)
    finally:
        for fd in fds:
            os.close(fd)
