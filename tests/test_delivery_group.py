"""Group commit of local deliveries (`kinmail.delivery.local.GroupCommit`): messages that worker threads bring
for one folder while a write is in progress go into the store together, each caller returning only after its
own message is stored; a failed batch falls back to one message at a time."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from kinmail.delivery.local import GroupCommit
from kinmail.store import QuotaExceeded, Store


class GatedMailboxes:
    """Stands in for `UserMailboxes`: the first single delivery waits for a gate, so that others pile up."""

    def __init__(self, fail_batches: bool = False) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[tuple[str, list[bytes]]] = []
        self.fail_batches = fail_batches
        self._lock = threading.Lock()

    def deliver(self, folder: str, data: bytes, flags: Sequence[str] = ()) -> int:
        if not self.entered.is_set():
            self.entered.set()
            self.gate.wait(30)
        with self._lock:
            self.calls.append(("one", [data]))
        return 1

    def deliver_many(self, folder: str, messages: Sequence[bytes], flags: Sequence[str] = ()) -> list[int]:
        if len(messages) == 1:
            return [self.deliver(folder, messages[0], flags)]
        if self.fail_batches:
            raise QuotaExceeded("the batch is too big")
        with self._lock:
            self.calls.append(("many", list(messages)))
        return list(range(len(messages)))


def pending_count(group: GroupCommit) -> int:
    with group._lock:
        return sum(len(v) for v in group._pending.values())


def run_piled_up(mailboxes: GatedMailboxes, followers: int) -> list[BaseException]:
    group = GroupCommit()
    errors: list[BaseException] = []

    def one(n: int) -> None:
        try:
            group.deliver(mailboxes, "alice@example.test", "INBOX", b"m%d" % n, ())
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=one, args=(0,))
    first.start()
    assert mailboxes.entered.wait(30)
    others = [threading.Thread(target=one, args=(n,)) for n in range(1, followers + 1)]
    for thread in others:
        thread.start()
    while pending_count(group) < followers:  # all of them queued behind the write in progress
        time.sleep(0.01)
    mailboxes.gate.set()
    for thread in [first, *others]:
        thread.join(30)
        assert not thread.is_alive()
    assert pending_count(group) == 0 and not group._busy
    return errors


def test_waiting_messages_are_written_as_one_batch() -> None:
    mailboxes = GatedMailboxes()
    assert run_piled_up(mailboxes, 5) == []
    assert mailboxes.calls[0] == ("one", [b"m0"])
    assert mailboxes.calls[1][0] == "many"
    assert sorted(mailboxes.calls[1][1]) == [b"m%d" % n for n in range(1, 6)]
    assert len(mailboxes.calls) == 2


def test_a_failed_batch_is_retried_one_by_one() -> None:
    mailboxes = GatedMailboxes(fail_batches=True)
    assert run_piled_up(mailboxes, 4) == []
    assert [kind for kind, _ in mailboxes.calls] == ["one"] * 5
    assert sorted(data for _, [data] in mailboxes.calls) == [b"m%d" % n for n in range(5)]


def test_many_threads_into_a_real_store_each_message_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "mail", tmp_path / "index")
    group = GroupCommit()
    try:

        def worker(start: int) -> None:
            for n in range(start, start + 25):
                mailboxes = store.mailboxes("alice@example.test")
                body = f"Subject: m{n}\r\n\r\nnumber{n}\r\n".encode()
                group.deliver(mailboxes, "alice@example.test", "INBOX", body, ())

        threads = [threading.Thread(target=worker, args=(k * 25,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        box = store.mailboxes("alice@example.test").open("INBOX")
        assert box.uids() == list(range(1, 201))
        subjects = sorted(box.read(uid).split(b"\r\n", 1)[0] for uid in box.uids())
        assert subjects == sorted(f"Subject: m{n}".encode() for n in range(200))
        assert box.search_text("number137", "body") != set()
    finally:
        store.close()
