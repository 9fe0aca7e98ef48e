"""Full-text indexing in the background: messages are stored without it, and the store's `TextBackfill` fills
the FTS table once deliveries pause; SEARCH never waits for it (it indexes what is still pending first)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kinmail.store import Store
from kinmail.store.backfill import TextBackfill

ALICE = "alice@example.test"


def msg(subject: str, body: str) -> bytes:
    return f"From: bob@example.test\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()


def unindexed(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "index" / "example.test" / "alice.sqlite") as conn:
        return int(conn.execute("SELECT count(*) FROM messages WHERE fts_done=0").fetchone()[0])


def indexed_rows(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "index" / "example.test" / "alice.sqlite") as conn:
        return int(conn.execute("SELECT count(*) FROM fts").fetchone()[0])


def test_delivered_messages_are_indexed_in_the_background(store: Store, tmp_path: Path) -> None:
    mb = store.mailboxes(ALICE)
    mb.deliver_many("INBOX", [msg(f"report {n}", f"zebra{n} budget") for n in range(30)])
    mb.deliver("INBOX", msg("single", "giraffe"))
    assert unindexed(tmp_path) > 0  # storing did not wait for the full-text index
    deadline = time.monotonic() + 10
    while unindexed(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert unindexed(tmp_path) == 0
    assert indexed_rows(tmp_path) == 31
    box = mb.open("INBOX")
    assert len(box.search_text("zebra1", "body")) == 11  # zebra1, zebra10..zebra19
    assert len(box.search_text("giraffe")) == 1


def test_search_right_after_delivery_finds_the_message(tmp_path: Path) -> None:
    store = Store(tmp_path / "mail", tmp_path / "index")
    store.backfill.close()  # no background help: the search itself must catch up
    try:
        mb = store.mailboxes(ALICE)
        uid = mb.deliver("INBOX", msg("minutes", "okapi sighting"))
        assert unindexed(tmp_path) == 1
        assert mb.open("INBOX").search_text("OKAPI", "body") == {uid}
        assert unindexed(tmp_path) == 0
    finally:
        store.close()


def test_backfill_waits_for_a_quiet_moment_but_not_forever() -> None:
    calls: list[tuple[str, str]] = []
    done = threading.Event()

    def index(address: str, folder: str) -> bool:
        calls.append((address, folder))
        done.set()
        return False

    backfill = TextBackfill(index, quiet=0.3, max_delay=1.0)
    try:
        backfill.note(ALICE, "INBOX")
        time.sleep(0.1)
        assert calls == []  # deliveries may still be coming
        assert done.wait(2)
        assert calls == [(ALICE, "INBOX")]
        # under steady deliveries (a note every 50 ms, never quiet) a folder still gets its turn
        done.clear()
        started = time.monotonic()
        while not done.is_set() and time.monotonic() - started < 3:
            backfill.note(ALICE, "Lists")
            time.sleep(0.05)
        assert done.is_set()
        assert 0.8 <= time.monotonic() - started < 3
    finally:
        backfill.close()


def test_backfill_goes_on_while_a_folder_has_more() -> None:
    batches: list[int] = []
    finished = threading.Event()

    def index(address: str, folder: str) -> bool:
        batches.append(1)
        if len(batches) == 3:
            finished.set()
        return len(batches) < 3

    backfill = TextBackfill(index, quiet=0.05)
    try:
        backfill.note(ALICE, "INBOX")
        assert finished.wait(3)
        time.sleep(0.2)
        assert len(batches) == 3
    finally:
        backfill.close()


def test_no_batch_starts_while_a_search_runs() -> None:
    calls: list[str] = []
    done = threading.Event()

    def index(address: str, folder: str) -> bool:
        calls.append(folder)
        done.set()
        return False

    backfill = TextBackfill(index, quiet=0.05, max_delay=0.1)
    try:
        with backfill.paused():
            backfill.note(ALICE, "INBOX")
            assert not done.wait(0.5)  # due after 0.05 s, but a search holds the indexer back
            assert calls == []
        assert done.wait(2)  # and it goes on as soon as the search is over
        assert calls == ["INBOX"]
    finally:
        backfill.close()


def test_users_at_work_put_the_indexer_off_but_not_forever() -> None:
    done = threading.Event()
    backfill = TextBackfill(lambda address, folder: bool(done.set()), quiet=0.3, max_delay=1.2)
    try:
        backfill.note(ALICE, "INBOX")
        started = time.monotonic()
        while not done.is_set() and time.monotonic() - started < 3:
            backfill.busy()  # IMAP commands every 50 ms: never quiet
            time.sleep(0.05)
        assert done.is_set()
        assert 1.0 <= time.monotonic() - started < 3  # it waited for max_delay, not just `quiet`
    finally:
        backfill.close()


def dead_rows(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "index" / "example.test" / "alice.sqlite") as conn:
        return int(conn.execute("SELECT count(*) FROM fts_dead").fetchone()[0])


def wait_for(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 10
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()


def test_expunged_text_is_left_to_the_indexer_and_never_found(store: Store, tmp_path: Path) -> None:
    mb = store.mailboxes(ALICE)
    uids = mb.deliver_many("INBOX", [msg(f"note {n}", f"walrus{n} tusk") for n in range(5)])
    box = mb.open("INBOX")
    assert box.search_text("tusk", "body") == set(uids)  # indexes them all
    box.store_flags(uids[:3], ["\\Deleted"], "add")
    assert box.expunge() == uids[:3]
    assert indexed_rows(tmp_path) == 5 and dead_rows(tmp_path) == 3  # the expunge only marked their rows
    assert box.search_text("tusk", "body") == set(uids[3:])
    assert box.search_text("walrus0") == set()
    assert wait_for(lambda: dead_rows(tmp_path) == 0)  # the background indexer deleted them
    assert indexed_rows(tmp_path) == 2
    assert box.search_text("tusk", "body") == set(uids[3:])


def test_a_folder_made_again_does_not_find_the_old_folders_text(tmp_path: Path) -> None:
    store = Store(tmp_path / "mail", tmp_path / "index")
    store.backfill.close()  # nothing deletes the marked rows: the search must skip them itself
    try:
        mb = store.mailboxes(ALICE)
        mb.create_folder("Projects")
        old = mb.open("Projects")
        (uid,) = mb.deliver_many("Projects", [msg("plans", "narwhal horn")])
        assert old.search_text("narwhal") == {uid}
        mb.delete_folder("Projects")
        assert dead_rows(tmp_path) == 1
        mb.create_folder("Projects")
        again = mb.open("Projects")
        (new_uid,) = mb.deliver_many("Projects", [msg("other", "penguin")])
        assert again.search_text("narwhal") == set()
        assert again.search_text("penguin") == {new_uid}
    finally:
        store.close()


def test_an_index_of_version_4_gets_the_new_table_in_place(tmp_path: Path) -> None:
    store = Store(tmp_path / "mail", tmp_path / "index")
    store.mailboxes(ALICE).deliver("INBOX", msg("kept", "seal"))
    store.close()
    path = tmp_path / "index" / "example.test" / "alice.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE fts_dead")
        conn.execute("PRAGMA user_version=4")
    store = Store(tmp_path / "mail", tmp_path / "index")
    try:
        box = store.mailboxes(ALICE).open("INBOX")
        (uid,) = box.search_text("seal")
        assert box.expunge() == [] and dead_rows(tmp_path) == 0
        assert not list((tmp_path / "index" / "example.test").glob("*.broken-*"))  # not rebuilt
        box.store_flags([uid], ["\\Deleted"], "add")
        assert box.expunge() == [uid]
    finally:
        store.close()
