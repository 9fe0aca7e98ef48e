"""The store under stress: concurrent writers (threads and processes), crashes mid-write, lost or broken
indexes, Dovecot Maildirs dropped in, and files other programs add, rename or remove."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kinmail.store import Change, Store, UserMailboxes

ALICE = "alice@example.test"
FLAG_POOL = ["\\Seen", "\\Flagged", "\\Answered", "\\Draft", "$Forwarded", "Work", "$Junk"]


def numbered(tag: str, n: int, size: int = 0) -> bytes:
    body = (f"{tag}-{n} " * max(1, size // 12))[: max(size, 10)]
    digest = hashlib.sha256(body.encode()).hexdigest()
    return f"Subject: {tag} {n}\r\nX-Digest: {digest}\r\n\r\n{body}\r\n".encode()


def intact(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    digest = [line.split(b": ")[1] for line in head.split(b"\r\n") if line.startswith(b"X-Digest: ")]
    return bool(digest) and hashlib.sha256(body[:-2]).hexdigest().encode() == digest[0]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "mail", tmp_path / "index")
    yield s
    s.close()


def snapshot(mb: UserMailboxes) -> dict[str, tuple[int, int, list[tuple[int, frozenset[str], int, float]]]]:
    out = {}
    for folder in mb.folders():
        box = mb.open(folder.name)
        out[folder.name] = (
            box.uidvalidity,
            box.uidnext,
            [(i.uid, i.flags, i.size, round(i.internaldate, 3)) for i in box.messages()],
        )
    return out


def check_all_once(mb: UserMailboxes, expected: set[bytes]) -> None:
    box = mb.open("INBOX")
    box.refresh()
    infos = box.messages()
    uids = [i.uid for i in infos]
    assert len(uids) == len(set(uids))
    got = [box.read(u) for u in uids]
    assert all(intact(d) for d in got)
    assert sorted(got) == sorted(expected)
    assert box.uidnext > max(uids)


# --- concurrency -----------------------------------------------------------------------------------------


def test_two_threads_and_two_stores_deliver_without_loss(tmp_path: Path, store: Store) -> None:
    other = Store(
        tmp_path / "mail", tmp_path / "index"
    )  # a second connection and flock, as another process has
    expected: set[bytes] = set()
    errors: list[BaseException] = []

    def writer(s: Store, tag: str) -> None:
        try:
            mb = s.mailboxes(ALICE)
            for n in range(15):
                mb.deliver("INBOX", numbered(tag, n))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(s, f"t{i}")) for i, s in enumerate([store, store, other, other])
    ]
    for i in range(4):
        expected.update(numbered(f"t{i}", n) for n in range(15))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    check_all_once(store.mailboxes(ALICE), expected)
    check_all_once(other.mailboxes(ALICE), expected)
    other.close()


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tests.test_store_durability import numbered
    from kinmail.store import Store
    root, tag, count, size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    mb = Store(root / "mail", root / "index").mailboxes("alice@example.test")
    print("ready", flush=True)
    for n in range(count):
        mb.deliver("INBOX", numbered(tag, n, size))
        print(n, flush=True)
    """
)


def spawn_writer(root: Path, tag: str, count: int, size: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), tag, str(count), str(size)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )


def test_two_processes_deliver_without_loss_or_reused_uids(tmp_path: Path, store: Store) -> None:
    mb = store.mailboxes(ALICE)
    procs = [spawn_writer(tmp_path, f"p{i}", 20) for i in range(2)]
    mine = [numbered("main", n) for n in range(10)]
    for data in mine:  # this process writes at the same time
        mb.deliver("INBOX", data)
    for p in procs:
        assert p.wait(120) == 0
    expected = set(mine) | {numbered(f"p{i}", n) for i in range(2) for n in range(20)}
    check_all_once(mb, expected)
    # dovecot-uidlist has every UID once, each with its own file
    lines = (mb.root / "dovecot-uidlist").read_text().splitlines()[1:]
    assert len({line.split()[0] for line in lines}) == len(lines) == 50


# --- crashes ---------------------------------------------------------------------------------------------


def test_killed_writer_leaves_no_half_message(tmp_path: Path, store: Store) -> None:
    mb = store.mailboxes(ALICE)
    proc = spawn_writer(tmp_path, "big", 10_000, size=400_000)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    for _ in range(3):
        proc.stdout.readline()
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    box = mb.open("INBOX")
    box.refresh()
    infos = box.messages()
    assert len(infos) >= 3
    for info in infos:
        assert intact(box.read(info.uid))
    on_disk = os.listdir(mb.root / "new") + os.listdir(mb.root / "cur")
    assert len(on_disk) == len(infos)  # a file cut short stays in tmp/, never in new/ or cur/


def test_half_written_tmp_file_is_never_shown_and_old_ones_are_cleaned(tmp_path: Path) -> None:
    first = Store(tmp_path / "mail", tmp_path / "index")
    mb = first.mailboxes(ALICE)
    mb.deliver("INBOX", numbered("ok", 1))
    first.close()
    fresh = mb.root / "tmp" / "1700000000.M1P1Q1.host,S=999,W=999"
    fresh.write_bytes(b"Subject: half\r\n\r\nthis message was cut sh")
    stale = mb.root / "tmp" / "1600000000.M1P1Q1.host"
    stale.write_bytes(b"Subject: stale\r\n")
    old = time.time() - 37 * 3600
    os.utime(stale, (old, old))
    again = Store(tmp_path / "mail", tmp_path / "index")
    box = again.mailboxes(ALICE).open("INBOX")
    box.refresh()
    assert [box.read(i.uid) for i in box.messages()] == [numbered("ok", 1)]
    assert fresh.exists()  # younger than 36 hours: it may still be being written
    assert not stale.exists()
    again.close()


# --- the index is a cache --------------------------------------------------------------------------------


def build_history(mb: UserMailboxes) -> None:
    mb.create_folder("Lists")
    mb.create_folder("Lists/Python")
    for n in range(6):
        mb.deliver("INBOX", numbered("in", n), flags=["\\Seen"] if n % 2 else [])
    box = mb.open("INBOX")
    box.store_flags([1, 2], ["\\Flagged", "$Important", "Work"], "add")
    box.store_flags([3], ["\\Deleted"], "add")
    box.expunge()
    box.move([6], "Lists/Python")
    box.copy([1], "Archive")
    mb.deliver("INBOX", numbered("in", 99))
    trash = mb.open("Trash")
    trash.append(numbered("t", 1), flags=["\\Seen", "\\Deleted"])
    trash.expunge()  # UIDNEXT of Trash is 2 with no message left


@pytest.mark.parametrize("damage", ["delete", "garbage", "rebuild"])
def test_rebuilt_index_equals_the_original(tmp_path: Path, damage: str) -> None:
    first = Store(tmp_path / "mail", tmp_path / "index")
    mb = first.mailboxes(ALICE)
    build_history(mb)
    before = snapshot(mb)
    index = tmp_path / "index" / "example.test" / "alice.sqlite"
    if damage == "rebuild":
        assert first.rebuild(ALICE) == sum(len(v[2]) for v in before.values())
        after = snapshot(first.mailboxes(ALICE))
        first.close()
    else:
        first.close()
        for suffix in ("", "-wal", "-shm"):
            index.with_name(index.name + suffix).unlink(missing_ok=True)
        if damage == "garbage":
            index.write_bytes(b"this is not a database" * 100)
        second = Store(tmp_path / "mail", tmp_path / "index")
        after = snapshot(second.mailboxes(ALICE))
        second.close()
    assert after == before
    assert before["Trash"][1] == 2 and before["INBOX"][1] == 8


def test_running_store_notices_a_rebuild_by_another_process(tmp_path: Path, store: Store) -> None:
    mb = store.mailboxes(ALICE)
    build_history(mb)
    box = mb.open("INBOX")
    before = box.messages()
    other = Store(tmp_path / "mail", tmp_path / "index")
    other.rebuild(ALICE)
    other.close()
    assert box.messages() == [i._replace(modseq=box.messages()[0].modseq) for i in before]
    assert box.highestmodseq > max(
        i.modseq for i in before
    )  # CONDSTORE clients resync rather than miss changes
    assert mb.deliver("INBOX", numbered("after", 1)) == 8


def test_dovecot_maildir_keeps_uids_uidvalidity_and_keywords(tmp_path: Path) -> None:
    root = tmp_path / "mail" / "example.test" / "alice"
    for folder in (root, root / ".Sent"):
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True)
    files = {
        "1700000001.M1P10V0000000000000801I00000001.mx,S=29,W=32:2,S": b"Subject: a\n\nfrom dovecot one\n",
        "1700000002.M2P10.mx,S=29,W=32:2,RSab": b"Subject: b\n\nfrom dovecot two\n",
        "1700000003.M3P10.mx:2,T": b"Subject: c\n\nthird\n",
    }
    for name, data in files.items():
        (root / "cur" / name).write_bytes(data)
    (root / "new" / "1700000009.M9P10.mx").write_bytes(b"Subject: new\n\nnot seen by dovecot yet\n")
    (root / "dovecot-uidlist").write_text(
        "3 V1234567890 N20 G0123456789abcdef\n"
        "4 :1700000001.M1P10V0000000000000801I00000001.mx,S=29,W=32\n"
        "7 W32 :1700000002.M2P10.mx,S=29,W=32\n"
        "12 :1700000003.M3P10.mx\n"
        "15 :1699999999.M0P1.mx\n"
    )
    (root / "dovecot-keywords").write_text("0 $Forwarded\n1 NonJunk\n")
    (root / ".Sent" / "dovecot-uidlist").write_text("3 V1234567891 N3\n2 :1700000004.M4P10.mx\n")
    (root / ".Sent" / "cur" / "1700000004.M4P10.mx:2,S").write_bytes(b"Subject: s\n\nsent\n")
    (root / "subscriptions").write_text("INBOX\nSent\n")
    store = Store(tmp_path / "mail", tmp_path / "index")
    mb = store.mailboxes(ALICE)
    box = mb.open("INBOX")
    assert box.uidvalidity == 1234567890
    infos = {i.uid: i for i in box.messages()}
    assert sorted(infos) == [4, 7, 12, 20]  # the new file gets the next UID after N20
    assert box.uidnext == 21
    assert infos[4].flags == {"\\Seen"} and infos[4].size == 32
    assert infos[7].flags == {"\\Answered", "\\Seen", "$Forwarded", "NonJunk"}
    assert infos[12].flags == {"\\Deleted"} and infos[12].size == len(b"Subject: c\r\n\r\nthird\r\n")
    assert box.read(20) == b"Subject: new\r\n\r\nnot seen by dovecot yet\r\n"
    sent = mb.open("Sent")
    assert (sent.uidvalidity, [i.uid for i in sent.messages()], sent.special_use) == (
        1234567891,
        [2],
        "\\Sent",
    )
    assert {f.name for f in mb.folders() if f.subscribed} >= {"INBOX", "Sent"}
    # keywords we add go into dovecot-keywords as Dovecot would read them
    box.store_flags([4], ["Todo"], "add")
    assert (root / "dovecot-keywords").read_text().splitlines()[2] == "2 Todo"
    assert box.get(4).filename.endswith(":2,Sc")  # type: ignore[union-attr]
    store.close()


# --- other programs --------------------------------------------------------------------------------------


def test_refresh_picks_up_files_other_programs_add_rename_and_remove(store: Store) -> None:
    mb = store.mailboxes(ALICE)
    changes: list[Change] = []
    store.subscribe(ALICE, changes.append)
    uid = mb.deliver("INBOX", numbered("x", 1))
    box = mb.open("INBOX")
    assert box.refresh() is False
    (mb.root / "new" / "1700000000.M5P5Q5.procmail").write_bytes(b"Subject: dropped\n\nby procmail\n")
    assert box.refresh() is True
    dropped = box.messages()[-1]
    assert dropped.uid == uid + 1 and box.read(dropped.uid).startswith(b"Subject: dropped\r\n")
    # a mail reader marks it seen (moves it to cur/ with flags) and deletes the first one
    os.rename(mb.root / dropped.filename, mb.root / "cur" / "1700000000.M5P5Q5.procmail:2,FS")
    os.unlink(mb.root / box.get(uid).filename)  # type: ignore[union-attr]
    assert box.refresh() is True
    assert [(i.uid, i.flags) for i in box.messages()] == [(uid + 1, {"\\Flagged", "\\Seen"})]
    changed, vanished = box.changes_since(dropped.modseq)
    assert [i.uid for i in changed] == [uid + 1] and vanished == [uid]
    kinds = [(c.kind, c.uids) for c in changes]
    assert ("append", (uid + 1,)) in kinds and ("flags", (uid + 1,)) in kinds and ("expunge", (uid,)) in kinds
    # UIDs are never reused, even for a file that reappears
    (mb.root / "new" / "1700000001.M6P6Q6.other").write_bytes(b"Subject: later\n\n.\n")
    box.refresh()
    assert box.messages()[-1].uid == uid + 2


def test_folder_made_by_another_program_appears(store: Store) -> None:
    mb = store.mailboxes(ALICE)
    for sub in ("cur", "new", "tmp"):
        (mb.root / ".Imported" / sub).mkdir(parents=True)
    (mb.root / ".Imported" / "cur" / "1700000000.M1P1Q1.x:2,S").write_bytes(b"Subject: i\n\nx\n")
    assert "Imported" in [f.name for f in mb.folders()]
    assert [i.uid for i in mb.open("Imported").messages()] == [1]


OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("deliver"), st.sampled_from(["INBOX", "Archive"]), st.sets(st.sampled_from(FLAG_POOL))
        ),
        st.tuples(st.just("flags"), st.integers(1, 12), st.sets(st.sampled_from(FLAG_POOL))),
        st.tuples(st.just("expunge"), st.integers(1, 12), st.just(frozenset())),
        st.tuples(st.just("move"), st.integers(1, 12), st.just(frozenset())),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_any_history_survives_losing_the_index(tmp_path_factory: pytest.TempPathFactory, ops: list) -> None:  # type: ignore[type-arg]
    root = tmp_path_factory.mktemp("history")
    store = Store(root / "mail", root / "index")
    mb = store.mailboxes(ALICE)
    for n, (op, arg, flags) in enumerate(ops):
        if op == "deliver":
            mb.deliver(arg, numbered("h", n), flags=flags)
            continue
        box = mb.open("INBOX")
        if op == "flags":
            box.store_flags([arg], flags, "set")
        elif op == "expunge":
            box.store_flags([arg], ["\\Deleted"], "add")
            box.expunge([arg])
        else:
            box.move([arg], "Archive")
    before = snapshot(mb)
    store.close()
    (root / "index" / "example.test" / "alice.sqlite").unlink()
    again = Store(root / "mail", root / "index")
    assert snapshot(again.mailboxes(ALICE)) == before
    again.close()


def test_a_removed_uidlist_is_written_again_before_the_next_uid(tmp_path: Path) -> None:
    first = Store(tmp_path / "mail", tmp_path / "index")
    mb = first.mailboxes(ALICE)
    mb.deliver("INBOX", numbered("u", 1))
    mb.deliver("INBOX", numbered("u", 2))
    validity = mb.open("INBOX").uidvalidity
    (mb.root / "dovecot-uidlist").unlink()
    mb.deliver("INBOX", numbered("u", 3))
    first.close()
    (tmp_path / "index" / "example.test" / "alice.sqlite").unlink()
    again = Store(tmp_path / "mail", tmp_path / "index")
    box = again.mailboxes(ALICE).open("INBOX")
    assert box.uidvalidity == validity
    assert [(i.uid, box.read(i.uid)) for i in box.messages()] == [(n, numbered("u", n)) for n in (1, 2, 3)]
    again.close()
