"""The store's API: deliver, append, read, flags, copy, move, expunge, CONDSTORE data, cache, search, folders."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from kinmail.store import (
    Change,
    FolderExists,
    MessageGone,
    NoSuchFolder,
    QuotaExceeded,
    Store,
    StoreError,
    UserMailboxes,
)

ALICE = "alice@example.test"


def msg(subject: str, body: str = "hello", extra: str = "") -> bytes:
    return f"From: bob@example.test\r\nSubject: {subject}\r\n{extra}\r\n{body}\r\n".encode()


@pytest.fixture
def mb(store: Store) -> UserMailboxes:
    return store.mailboxes(ALICE)


def test_first_use_creates_maildir_and_special_folders(mb: UserMailboxes, tmp_path: Path) -> None:
    root = tmp_path / "mail" / "example.test" / "alice"
    for sub in ("cur", "new", "tmp"):
        assert (root / sub).is_dir()
    folders = {f.name: f for f in mb.folders()}
    assert mb.folders()[0].name == "INBOX"
    assert {name: f.special_use for name, f in folders.items() if f.special_use} == {
        "Drafts": "\\Drafts",
        "Sent": "\\Sent",
        "Junk": "\\Junk",
        "Trash": "\\Trash",
        "Archive": "\\Archive",
    }
    assert all(f.subscribed for f in folders.values())
    assert (root / ".Sent" / "maildirfolder").exists()
    assert set((root / "subscriptions").read_text().split()) == {
        "INBOX",
        "Drafts",
        "Sent",
        "Junk",
        "Trash",
        "Archive",
    }
    assert (tmp_path / "index" / "example.test" / "alice.sqlite").exists()


def test_deliver_read_and_file_names(mb: UserMailboxes) -> None:
    uid1 = mb.deliver("INBOX", msg("one"))
    uid2 = mb.deliver("INBOX", b"Subject: two\n\nbare LF body\n", flags=["\\Seen", "Work"])
    box = mb.open("INBOX")
    assert (uid1, uid2) == (1, 2)
    assert box.uidnext == 3
    assert box.read(uid1) == msg("one")
    assert box.read(uid2) == b"Subject: two\r\n\r\nbare LF body\r\n"
    infos = box.messages()
    assert [i.uid for i in infos] == [1, 2]
    assert infos[1].size == len(b"Subject: two\r\n\r\nbare LF body\r\n")
    assert infos[1].flags == {"\\Seen", "Work"}
    # Dovecot file names: new/ without flags, cur/ with `:2,` flags and keyword letters
    assert infos[0].filename.startswith("new/") and ",S=" in infos[0].filename and ",W=" in infos[0].filename
    assert infos[1].filename.startswith("cur/") and infos[1].filename.endswith(":2,Sa")
    assert (mb.root / "dovecot-keywords").read_text() == "0 Work\n"
    assert box.get(uid2) == infos[1]
    assert box.get(99) is None
    assert box.highestmodseq >= infos[1].modseq > infos[0].modseq


def test_read_converts_lf_files_from_other_programs(mb: UserMailboxes) -> None:
    (mb.root / "new" / "1700000000.external.host").write_bytes(b"Subject: ext\n\nline one\nline two\n")
    box = mb.open("INBOX")
    box.refresh()
    (info,) = box.messages()
    data = box.read(info.uid)
    assert data == b"Subject: ext\r\n\r\nline one\r\nline two\r\n"
    assert info.size == len(data)


def test_store_flags_modes_and_unchanged_since(mb: UserMailboxes) -> None:
    uid = mb.deliver("INBOX", msg("f"))
    box = mb.open("INBOX")
    changed, failed = box.store_flags([uid], ["\\seen", "$Forwarded"], "add")
    assert failed == []
    assert changed[0].flags == {"\\Seen", "$Forwarded"}
    info = box.get(uid)
    assert info is not None
    assert info.filename.endswith(":2,PSa")  # $Forwarded: P and, as Dovecot keeps it, a keyword
    first_modseq = info.modseq
    # no change: MODSEQ stays
    assert box.store_flags([uid], ["\\Seen"], "add") == ([], [])
    assert box.get(uid).modseq == first_modseq  # type: ignore[union-attr]
    changed, _ = box.store_flags([uid], ["\\Seen"], "remove")
    assert changed[0].flags == {"$Forwarded"}
    # UNCHANGEDSINCE older than the message's MODSEQ fails (RFC 7162 §3.1.3)
    changed, failed = box.store_flags([uid], ["\\Flagged"], "set", unchanged_since=first_modseq)
    assert (changed, failed) == ([], [uid])
    changed, failed = box.store_flags(
        [uid, 77], ["\\Flagged", "\\Draft"], "set", unchanged_since=box.highestmodseq
    )
    assert failed == [] and changed[0].flags == {"\\Flagged", "\\Draft"}
    assert os.path.exists(box.path(uid)) and box.path(uid).endswith(":2,DF")
    for bad in ("\\Bogus", "two words", "paren(", "x\x00", "k" * 200):
        with pytest.raises(StoreError):
            box.store_flags([uid], [bad], "add")


def test_expunge_only_deleted_and_changes_since(mb: UserMailboxes) -> None:
    uids = [mb.deliver("INBOX", msg(f"m{i}")) for i in range(4)]
    box = mb.open("INBOX")
    mark = box.highestmodseq
    box.store_flags(uids[:3], ["\\Deleted"], "add")
    assert box.expunge([uids[0], uids[3]]) == [uids[0]]  # UID EXPUNGE: only flagged ones among those given
    assert box.expunge() == uids[1:3]
    assert [i.uid for i in box.messages()] == [uids[3]]
    changed, vanished = box.changes_since(mark)
    assert changed == []
    assert vanished == uids[:3]
    with pytest.raises(MessageGone):
        box.read(uids[0])
    assert len(os.listdir(mb.root / "new")) + len(os.listdir(mb.root / "cur")) == 1


def test_copy_and_move_keep_flags_and_give_new_uids(mb: UserMailboxes) -> None:
    a = mb.deliver("INBOX", msg("a"), flags=["\\Flagged", "Work"])
    b = mb.deliver("INBOX", msg("b"))
    archive = mb.open("Archive")
    archive.append(msg("already there"))
    box = mb.open("INBOX")
    assert box.copy([a, b, 99], "Archive") == [(a, 2), (b, 3)]
    copied = {i.uid: i for i in archive.messages()}
    assert copied[2].flags == {"\\Flagged", "Work"}
    assert archive.read(2) == msg("a")
    pairs = box.move([a], archive)
    assert pairs == [(a, 4)]
    assert [i.uid for i in box.messages()] == [b]
    assert archive.get(4).flags == {"\\Flagged", "Work"}  # type: ignore[union-attr]
    # moving within one folder gives new UIDs too
    assert box.move([b], box) == [(b, b + 1)]
    assert [i.uid for i in box.messages()] == [b + 1]
    assert box.read(b + 1) == msg("b")


def test_cache_and_full_text_search(mb: UserMailboxes) -> None:
    u1 = mb.deliver("INBOX", msg("Quarterly report", "The numbers are in."))
    html = (
        "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
        "MIME-Version: 1.0\r\n"
    )
    u2 = mb.deliver(
        "INBOX", msg("=?utf-8?q?Gr=C3=BC=C3=9Fe?=", "<p>Sch=C3=B6ne <b>Gr=C3=BC=C3=9Fe</b></p>", html)
    )
    box = mb.open("INBOX")
    assert box.search_text("quarterly") == {u1}
    assert box.search_text("NUMBERS", "body") == {u1}
    assert box.search_text("report", "body") == set()
    assert box.search_text("grüße") == {u2}  # decoded header
    assert box.search_text("schöne", "body") == {u2}  # decoded QP HTML
    assert box.search_text("b>") == set()  # tags are not text
    assert box.search_text("nu") == {u1}  # short queries use LIKE
    assert box.cache_get(u1, "envelope") is None
    box.cache_put(u1, "envelope", ["x", None, 3])
    assert box.cache_get(u1, "envelope") == ["x", None, 3]
    pairs = box.copy([u1], "Archive")
    assert mb.open("Archive").cache_get(pairs[0][1], "envelope") == ["x", None, 3]
    assert mb.open("Archive").search_text("quarterly") == {pairs[0][1]}


def test_search_text_squeezes_white_space_in_the_text_and_in_the_query(mb: UserMailboxes) -> None:
    """A phrase matches across a line break, a run of spaces or tabs, a no-break space and a folded header;
    a space at an end of the query still asks for a word boundary."""
    box = mb.open("INBOX")
    u1 = box.append(msg("annual\r\n  general meeting", "minutes of the\r\nlast   meeting\t\ttoday"))
    u2 = box.append(
        msg(
            "other",
            "caf=C3=A9&nbsp;cr=C3=A8me",
            "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n",
        )
    )
    u3 = box.append(msg("third", "a preheated oven"))
    assert box.search_text("annual general meeting") == {u1}
    assert box.search_text("the last meeting today", "body") == {u1}
    assert box.search_text("last \r\n meeting") == {u1}
    assert box.search_text("café crème") == {u2}
    assert box.search_text("heat") == {u3}
    assert box.search_text(" heat") == set()
    assert box.search_text("  pre") == {u3}
    assert box.search_text("ed ") == {u3}


def test_folders_create_rename_delete_subscribe(mb: UserMailboxes) -> None:
    mb.create_folder("Projects")
    mb.create_folder("Projects/Älter")
    assert (mb.root / ".Projects.&AMQ-lter" / "cur").is_dir()
    with pytest.raises(FolderExists):
        mb.create_folder("Projects")
    mb.set_subscribed("Projects/Älter", True)
    mb.open("Projects/Älter").append(msg("old"))
    validity = mb.open("Projects/Älter").uidvalidity
    mb.rename_folder("Projects", "Work")
    names = [f.name for f in mb.folders()]
    assert "Work" in names and "Work/Älter" in names and "Projects" not in names
    moved = mb.open("Work/Älter")
    assert moved.uidvalidity == validity
    assert [i.uid for i in moved.messages()] == [1]
    assert {f.name for f in mb.folders() if f.subscribed} >= {"Work/Älter"}
    assert "Work.&AMQ-lter" in (mb.root / "subscriptions").read_text().split()
    mb.delete_folder("Work")
    assert "Work" not in [f.name for f in mb.folders()]
    assert "Work/Älter" in [f.name for f in mb.folders()]
    with pytest.raises(NoSuchFolder):
        mb.open("Work")
    with pytest.raises(StoreError):
        mb.delete_folder("INBOX")
    mb.create_folder("Work")
    assert mb.open("Work").uidvalidity != validity


def test_rename_inbox_moves_messages(mb: UserMailboxes) -> None:
    mb.deliver("INBOX", msg("x"))
    mb.rename_folder("inbox", "Old")
    assert mb.open("INBOX").messages() == []
    assert len(mb.open("Old").messages()) == 1


def test_deliver_to_missing_folder(mb: UserMailboxes) -> None:
    with pytest.raises(NoSuchFolder):
        mb.deliver("Lists/python", msg("x"))
    uid = mb.deliver("Lists", msg("x"), create=True)
    assert uid == 1 and mb.exists("Lists")


def test_quota(store: Store, mb: UserMailboxes) -> None:
    mb.deliver("INBOX", msg("a", "x" * 100))
    used, count = mb.quota_usage()
    assert count == 1 and used == len(msg("a", "x" * 100))
    store.quota_for = lambda address: used + 50 if address == ALICE else None
    limited = store.mailboxes(ALICE)
    with pytest.raises(QuotaExceeded):
        limited.deliver("INBOX", msg("b", "y" * 100))
    limited.deliver("INBOX", msg("c"))
    with pytest.raises(QuotaExceeded):
        limited.open("INBOX").copy([1], "Archive")
    assert limited.quota_usage()[1] == 2


def test_change_broadcast_only_after_commit(store: Store, mb: UserMailboxes, tmp_path: Path) -> None:
    index = tmp_path / "index" / "example.test" / "alice.sqlite"
    seen: list[tuple[Change, list[int]]] = []

    def listener(change: Change) -> None:
        # another connection must already see what the change announces: it was committed
        conn = sqlite3.connect(index)
        try:
            uids = [
                r[0]
                for r in conn.execute(
                    "SELECT uid FROM messages m JOIN folders f ON f.id=m.folder WHERE f.name='INBOX'"
                )
            ]
        finally:
            conn.close()
        seen.append((change, uids))

    unsubscribe = store.subscribe(ALICE, listener)
    uid = mb.deliver("INBOX", msg("x"))
    box = mb.open("INBOX")
    box.store_flags([uid], ["\\Deleted"], "add")
    box.expunge()
    after_expunge = box.highestmodseq
    unsubscribe()
    mb.deliver("INBOX", msg("after"))
    kinds = [(c.kind, c.uids) for c, _ in seen]
    assert kinds == [("append", (uid,)), ("flags", (uid,)), ("expunge", (uid,))]
    assert seen[0][1] == [uid] and seen[1][1] == [uid] and seen[2][1] == []
    assert seen[2][0].modseq == after_expunge


def test_failing_listener_does_not_break_delivery(store: Store, mb: UserMailboxes) -> None:
    def broken(change: Change) -> None:
        raise RuntimeError("boom")

    store.subscribe(ALICE, broken)
    assert mb.deliver("INBOX", msg("x")) == 1


def test_status_counts(mb: UserMailboxes) -> None:
    mb.deliver("INBOX", msg("a"), flags=["\\Seen"])
    mb.deliver("INBOX", msg("b"))
    mb.deliver("INBOX", msg("c"), flags=["\\Deleted", "\\Seen"])
    st = mb.open("INBOX").status()
    assert (st.messages, st.unseen, st.deleted, st.uidnext) == (3, 1, 1, 4)
    assert st.size == sum(len(msg(x)) for x in "abc")


def test_bad_addresses_refused(store: Store) -> None:
    for bad in ("../x@example.test", "alice@../../etc", "noat", "a/b@example.test", ".hidden@example.test"):
        with pytest.raises(StoreError):
            store.mailboxes(bad)


def test_snapshot_of_big_folders_matches_the_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kinmail.store import snapshot

    monkeypatch.setattr(snapshot, "MIN_MESSAGES", 3)
    monkeypatch.setattr(snapshot, "MAX_DELTA", 2)
    first = Store(tmp_path / "mail", tmp_path / "index")
    mb = first.mailboxes(ALICE)
    for n in range(6):
        mb.deliver("INBOX", msg(f"s{n}"), flags=["Work"] if n % 2 else [])
    box = mb.open("INBOX")
    full = box.messages()  # written as a snapshot
    conn = sqlite3.connect(tmp_path / "index" / "example.test" / "alice.sqlite")
    assert conn.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 1
    conn.close()
    box.store_flags([2], ["\\Seen"], "add")
    box.store_flags([3], ["\\Deleted"], "add")
    box.expunge()
    mb.deliver("INBOX", msg("late"))
    expected = box.messages()
    assert [i.uid for i in expected] == [1, 2, 4, 5, 6, 7] and len(full) == 6
    first.close()
    for _ in range(2):  # snapshot + a delta of changes, then the rewritten snapshot
        again = Store(tmp_path / "mail", tmp_path / "index")
        assert again.mailboxes(ALICE).open("INBOX").messages() == expected
        again.close()
    assert snapshot.decode(b"not a snapshot") is None


def test_mail_and_index_are_private(mb: UserMailboxes, tmp_path: Path) -> None:
    mb.deliver("INBOX", msg("secret"))
    for path in (mb.root, mb.root / "cur", mb.root / "new", mb.root / ".Sent"):
        assert path.stat().st_mode & 0o077 == 0, path
    (info,) = mb.open("INBOX").messages()
    assert (mb.root / info.filename).stat().st_mode & 0o077 == 0
    index = tmp_path / "index" / "example.test" / "alice.sqlite"
    assert index.stat().st_mode & 0o077 == 0


def test_delete_folder_keeps_the_subscription(mb: UserMailboxes) -> None:
    mb.create_folder("Gone")
    mb.set_subscribed("Gone", True)
    mb.delete_folder("Gone")
    # RFC 9051 §6.3.9: the subscription stays until UNSUBSCRIBE
    assert "Gone" not in [f.name for f in mb.folders()]
    assert "Gone" in mb.subscriptions()
    assert "INBOX" in mb.subscriptions()
    mb.set_subscribed("Gone", False)
    assert "Gone" not in mb.subscriptions()


def test_uidlist_rewrite_keeps_fields_it_does_not_use(mb: UserMailboxes) -> None:
    from kinmail.store import maildir

    box = mb.open("INBOX")
    uids = [box.append(msg(f"m{n}")) for n in range(3)]
    path = mb.root
    lines = (path / maildir.UIDLIST).read_text().splitlines()
    # another program (Dovecot's POP3 server) adds a header GUID and per-message fields: P (saved UIDL, which
    # may hold a colon) and W (virtual size)
    lines[0] += " Gfeedface"
    lines[1] = lines[1].replace(" :", " P0001:x W123 :", 1)
    (path / maildir.UIDLIST).write_text("\n".join(lines) + "\n")
    listed = maildir.read_uidlist(path)
    assert listed is not None and sorted(listed.uids.values()) == uids
    bases = {uid: base for base, uid in listed.uids.items()}
    maildir.write_uidlist(
        path, box.uidvalidity, box.uidnext, [(uids[0], bases[uids[0]]), (uids[2], bases[uids[2]])]
    )
    text = (path / maildir.UIDLIST).read_text()
    assert text.splitlines()[0] == f"3 V{box.uidvalidity} N{box.uidnext} Gfeedface"
    assert f"{uids[0]} P0001:x W123 :{bases[uids[0]]}\n" in text
    assert f"{uids[2]} :{bases[uids[2]]}\n" in text
    assert bases[uids[1]] not in text
    again = maildir.read_uidlist(path)
    assert again is not None and again.uids == {bases[uids[0]]: uids[0], bases[uids[2]]: uids[2]}


def test_mailboxes_if_open_only_for_open_users(store: Store) -> None:
    assert store.mailboxes_if_open(ALICE) is None
    store.mailboxes(ALICE).deliver("", msg("first"))
    again = store.mailboxes_if_open(ALICE)
    assert again is not None and again.open("INBOX").exists() == 1
    assert store.mailboxes_if_open("bob@example.test") is None


def test_keywords_after_a_folder_rename_go_to_its_new_place(store: Store, tmp_path: Path) -> None:
    mb = store.mailboxes("alice@example.test")
    mb.create_folder("Before")
    box = mb.open("Before")
    uid = box.append(b"Subject: k\r\n\r\nbody\r\n", ["$First"])
    mb.rename_folder("Before", "After")
    box = mb.open("After")
    box.store_flags([uid], ["$Second"], "add")
    root = tmp_path / "mail" / "example.test" / "alice"
    assert not (root / ".Before").exists()
    assert "$Second" in (root / ".After" / "dovecot-keywords").read_text()
    fresh = Store(tmp_path / "mail", tmp_path / "index2")  # a new index, read back from the Maildir
    try:
        info = fresh.mailboxes("alice@example.test").open("After").get(uid)
        assert info is not None and {"$First", "$Second"} <= info.flags
    finally:
        fresh.close()
