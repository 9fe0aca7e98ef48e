"""IMAP semantics where the server and the store meet, through imaplib against one `kinmail serve`: MOVE into
the same mailbox, subscriptions that outlive a deleted mailbox, SEARCH on header fields a message lacks, SEARCH BODY in HTML,
ENVELOPE after ENABLE UTF8=ACCEPT, and several FETCH items of one message in one command."""

from __future__ import annotations

import contextlib
import fcntl
import imaplib
import os
import re
import threading
import time
from collections.abc import Iterator

import pytest

from tests.serverctl import HOST, USERS, KinmailServer

ALICE = "alice@example.test"
BOB = "bob@example.test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    root = tmp_path_factory.mktemp("imapsemantics")
    with KinmailServer(root / "kinmail", services=("imap",)) as srv:
        yield srv


def login(server: KinmailServer, user: str = ALICE) -> imaplib.IMAP4:
    m = imaplib.IMAP4(HOST, server.port("imap"))
    m.login(user, dict(USERS)[user])
    return m


def message(subject: str | None, body: str = "text", extra: str = "") -> bytes:
    head = "From: Bob <bob@example.test>\r\nTo: alice@example.test\r\n" + extra
    if subject is not None:
        head += f"Subject: {subject}\r\n"
    return f"{head}\r\n{body}\r\n".encode()


def uids_of(m: imaplib.IMAP4) -> list[int]:
    typ, data = m.uid("SEARCH", "ALL")
    assert typ == "OK"
    return [int(x) for x in data[0].split()]


def test_move_into_the_same_mailbox_gives_new_uids(server: KinmailServer) -> None:
    m = login(server)
    m.create("Moving")
    for n in range(3):
        m.append("Moving", r"(\Flagged)", None, message(f"move {n}"))
    m.select("Moving")
    before = uids_of(m)
    assert len(before) == 3
    typ, data = m.uid("MOVE", f"{before[0]}:{before[1]}", "Moving")
    assert typ == "OK"
    copyuid = [r for r in m.untagged_responses.get("OK", []) if b"COPYUID" in r]
    assert copyuid, m.untagged_responses
    after = uids_of(m)
    # RFC 6851 §3.3: the originals are gone, the moved messages come back under new UIDs, flags kept
    assert len(after) == 3
    assert before[0] not in after and before[1] not in after
    assert before[2] in after
    typ, data = m.uid("FETCH", ",".join(str(u) for u in after), "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    text = b" ".join(x[0] + x[1] if isinstance(x, tuple) else x for x in data)
    assert text.count(b"\\Flagged") == 3
    assert all(f"move {n}".encode() in text for n in range(3))
    m.close()
    typ, data = m.status("Moving", "(MESSAGES)")
    assert b"MESSAGES 3" in data[0]
    m.logout()


def test_subscription_outlives_a_deleted_mailbox(server: KinmailServer) -> None:
    m = login(server)
    assert m.create("Ephemeral")[0] == "OK"
    assert m.subscribe("Ephemeral")[0] == "OK"
    assert m.delete("Ephemeral")[0] == "OK"
    # RFC 9051 §6.3.9: DELETE does not unsubscribe; LSUB and LIST (SUBSCRIBED) still show the name
    typ, data = m.lsub('""', "Ephemeral")
    assert typ == "OK" and data[0] is not None and b"Ephemeral" in data[0]
    typ, data = m.list('""', "Ephemeral")
    assert data == [None]
    typ, data = m._simple_command("LIST", "(SUBSCRIBED)", '""', "Ephemeral")  # type: ignore[attr-defined]
    _typ, lines = m._untagged_response(typ, data, "LIST")  # type: ignore[attr-defined]
    assert lines[0] is not None and b"\\NonExistent" in lines[0] and b"\\Subscribed" in lines[0]
    assert m.unsubscribe("Ephemeral")[0] == "OK"
    assert m.lsub('""', "Ephemeral")[1] == [None]
    m.logout()


def test_search_header_keys_need_the_field(server: KinmailServer) -> None:
    m = login(server)
    m.create("Headers")
    m.append("Headers", None, None, message("with subject", extra="Cc: carol@example.test\r\n"))
    m.append("Headers", None, None, message(None))
    m.append("Headers", None, None, message(""))
    m.select("Headers")
    search = lambda *key: m.search(None, *key)[1][0].split()  # noqa: E731
    # RFC 9051 §6.4.4: an empty string matches every message that has the field, and only those
    assert search("SUBJECT", '""') == [b"1", b"3"]
    assert search("CC", '""') == [b"1"]
    assert search("BCC", '""') == []
    assert search("HEADER", "CC", '""') == [b"1"]
    assert search("HEADER", "X-Nothing", '""') == []
    assert search("NOT", "SUBJECT", '""') == [b"2"]
    assert search("FROM", '""') == [b"1", b"2", b"3"]
    assert search("SUBJECT", "subject") == [b"1"]
    m.logout()


def test_search_body_reads_html_as_the_full_text_index_does(server: KinmailServer) -> None:
    """An HTML part is searched as its text — tags out, entities undone — both when the full-text index's
    answer is the answer (ASCII) and when each candidate is read again (case folding beyond ASCII)."""
    m = login(server)
    m.create("Html")
    html = (
        b"From: Bob <bob@example.test>\r\nSubject: cartoon\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><body><p>Tom &amp; Jerry</p><style>p { color: red }</style>"
        b"<p>Gr&uuml;&szlig;e</p>\r\n<p>Sch&ouml;ne&nbsp;  Tage</p></body></html>\r\n"
    )
    m.append("Html", None, None, html)
    m.append("Html", None, None, message("plain", "Tom and Jerry"))
    m.select("Html")
    search = lambda *key: m.search("UTF-8", *key)[1][0].split()  # noqa: E731
    assert search("BODY", '"Tom & Jerry"') == [b"1"]
    assert search("TEXT", '"tom & jerry"') == [b"1"]
    assert search("BODY", '"&amp;"') == []
    assert search("BODY", "color") == []  # a style sheet is no text
    assert search("BODY", "Jerry") == [b"1", b"2"]
    # beyond ASCII each candidate is read again (Python's case folding): the same text, entities undone
    assert m.search("UTF-8", "BODY", '"GRÜßE"'.encode())[1][0].split() == [b"1"]
    # white space squeezed on both sides, the same in the index and in the reading again: across the line
    # break between two paragraphs, and a no-break space with spaces after it
    assert m.search("UTF-8", "BODY", '"grüße schöne tage"'.encode())[1][0].split() == [b"1"]
    assert m.search("UTF-8", "BODY", '"Schöne   Tage"'.encode())[1][0].split() == [b"1"]
    m.logout()


def test_envelope_after_enable_utf8_accept(server: KinmailServer) -> None:
    m = login(server, BOB)
    raw = "From: Jürgen <j@example.test>\r\nSubject: Grüße aus Köln\r\n\r\nHallo\r\n".encode()
    m.append("INBOX", None, None, raw)
    m.select("INBOX")
    _typ, data = m.fetch("*", "(ENVELOPE)")
    # Without UTF8=ACCEPT 8-bit text goes out as a literal (RFC 9051 §4.3)
    assert isinstance(data[0], tuple)
    m.close()
    assert m.enable("UTF8=ACCEPT")[0] == "OK"
    m.select("INBOX")
    _typ, data = m.fetch("*", "(ENVELOPE)")
    # ... and as a quoted UTF-8 string once it is enabled (RFC 6855 §3)
    assert isinstance(data[0], bytes), data
    assert '"Grüße aus Köln"'.encode() in data[0]
    m.logout()


def test_many_items_of_one_message_in_one_fetch(server: KinmailServer) -> None:
    m = login(server)
    m.create("Items")
    body = "--b\r\nContent-Type: text/plain\r\n\r\npart one\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>two</p>\r\n--b--\r\n"
    m.append(
        "Items",
        None,
        None,
        message(
            "multi", body, extra='MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b"\r\n'
        ),
    )
    m.select("Items", readonly=True)
    typ, data = m.fetch(
        "1",
        "(ENVELOPE BODYSTRUCTURE RFC822.SIZE BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[HEADER.FIELDS (SUBJECT)]"
        " BINARY.PEEK[1] BINARY.SIZE[2] RFC822.HEADER)",
    )
    assert typ == "OK"
    text = b"".join(x[0] + x[1] if isinstance(x, tuple) else x for x in data)
    assert b'"multi"' in text
    assert b'("text" "plain"' in text.lower() or b'("TEXT" "PLAIN"' in text
    assert b"part one" in text and b"<p>two</p>" in text
    assert re.search(rb"BINARY\.SIZE\[2\] 10", text), text
    assert b"Subject: multi" in text
    m.logout()


def test_header_section_served_again_and_in_part(server: KinmailServer) -> None:
    m = login(server)
    m.create("Head")
    raw = message("header twice")
    m.append("Head", None, None, raw)
    m.select("Head", readonly=True)
    header = raw[: raw.index(b"\r\n\r\n") + 4]
    for _ in range(2):  # the second answer comes from what the first one kept
        _typ, data = m.fetch("1", "(BODY.PEEK[HEADER] BODY.PEEK[HEADER]<6.8> RFC822.SIZE)")
        assert isinstance(data[0], tuple) and data[0][1] == header
        assert isinstance(data[1], tuple) and data[1][1] == header[6:14]
    m.logout()


def exists_after(m: imaplib.IMAP4) -> int:
    counts = [int(x) for x in m.untagged_responses.pop("EXISTS", [b"-1"])]
    return counts[-1]


def test_append_to_the_selected_mailbox_reports_own_and_others_messages(server: KinmailServer) -> None:
    """APPEND to the selected folder: the session's own message is taken from the store's memory when it was
    the only change; when another session appended meanwhile, both messages are reported (RFC 9051 §7.4)."""
    a, b = login(server), login(server)
    a.create("Appending")
    a.select("Appending")
    a.untagged_responses.clear()
    a.append("Appending", None, None, message("own 1"))
    assert exists_after(a) == 1
    b.append("Appending", None, None, message("other 1"))
    a.append("Appending", None, None, message("own 2"))
    assert exists_after(a) == 3
    assert len(uids_of(a)) == 3
    b.append("Appending", None, None, message("other 2"))
    typ, _ = a.noop()  # NOOP looks for changes and reports them in the same answer
    assert typ == "OK"
    assert exists_after(a) == 4
    typ, data = a.fetch("1:4", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects = [part[1].decode().strip() for part in data if isinstance(part, tuple)]
    assert subjects == ["Subject: own 1", "Subject: other 1", "Subject: own 2", "Subject: other 2"]
    for m in (a, b):
        m.logout()


@contextlib.contextmanager
def users_lock_held(server: KinmailServer, user: str) -> Iterator[None]:
    """Hold `user`'s store lock from outside the server, as another process (`kinmail index rebuild`) would."""
    local, _, domain = user.partition("@")
    lock_path = server.data_dir / "index" / domain / f"{local}.lock"
    assert lock_path.exists()
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def test_a_held_user_lock_stalls_only_that_users_commands(server: KinmailServer) -> None:
    """Short store calls (STORE, NOOP, SELECT of a small folder) run on the server's event loop when the
    user's lock is free; when another process holds it (here: this test, as `kinmail index rebuild` would),
    they wait in a store thread, and other users' sessions carry on meanwhile."""
    a, b = login(server, ALICE), login(server, BOB)
    a.create("Locked")
    a.append("Locked", None, None, message("locked 1"))
    a.select("Locked")
    b.select("INBOX")
    done = threading.Event()
    result: list[tuple[str, list[bytes | None]]] = []

    def store() -> None:
        result.append(a.store("1", "+FLAGS", r"(\Flagged)"))  # type: ignore[arg-type]
        done.set()

    with users_lock_held(server, ALICE):
        worker = threading.Thread(target=store)
        worker.start()
        assert not done.wait(0.5), "STORE went ahead while another process held the user's lock"
        started = time.monotonic()
        assert b.noop()[0] == "OK" and b.select("INBOX")[0] == "OK"  # another user: not held up
        assert time.monotonic() - started < 0.4
    assert done.wait(10)
    worker.join()
    typ, data = result[0]
    assert typ == "OK" and b"\\Flagged" in (data[0] or b"")
    typ, data = a.fetch("1", "(FLAGS)")
    assert b"\\Flagged" in data[0]  # type: ignore[operator]
    for m in (a, b):
        m.logout()


def test_a_held_user_lock_holds_back_only_that_users_append(server: KinmailServer) -> None:
    """APPENDs of all sessions are stored in batches by one thread; while another process holds one user's
    lock, that user's APPEND waits (its file already written and synced) and other users' APPENDs complete;
    once the lock is free it completes too, stored once, with the UID its APPENDUID gave."""
    a, b = login(server, ALICE), login(server, BOB)
    a.create("Held")
    b.create("Free")
    done = threading.Event()
    result: list[tuple[str, list[bytes | None]]] = []

    def append() -> None:
        result.append(a.append("Held", None, None, message("held 1")))
        done.set()

    with users_lock_held(server, ALICE):
        worker = threading.Thread(target=append)
        worker.start()
        assert not done.wait(0.5), "APPEND went ahead while another process held the user's lock"
        typ, data = b.append("Free", None, None, message("free 1"))  # another user: stored meanwhile
        assert typ == "OK" and b"APPENDUID" in (data[0] or b"") and not done.is_set()
    assert done.wait(10)
    worker.join()
    typ, data = result[0]
    assert typ == "OK"
    uid = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
    assert uid is not None
    a.select("Held")
    typ, found = a.uid("SEARCH", "SUBJECT", '"held 1"')
    assert found[0] == uid.group(1)
    for m in (a, b):
        m.logout()


def test_concurrent_appends_of_many_sessions_each_land_once(server: KinmailServer) -> None:
    """Eight sessions of two users append at once into shared folders: every message is stored exactly once,
    under the UID its APPENDUID named, and no UID is given twice."""
    for user in (ALICE, BOB):
        m = login(server, user)
        m.create("Burst")
        m.logout()
    per_session = 15
    answers: dict[tuple[str, str], bytes] = {}
    lock = threading.Lock()

    def session(user: str, n: int) -> None:
        m = login(server, user)
        for i in range(per_session):
            subject = f"burst {n}-{i}"
            typ, data = m.append("Burst", None, None, message(subject))
            assert typ == "OK"
            with lock:
                answers[(user, subject)] = data[0] or b""
        m.logout()

    threads = [threading.Thread(target=session, args=(user, n)) for n in range(4) for user in (ALICE, BOB)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for user in (ALICE, BOB):
        m = login(server, user)
        m.select("Burst")
        _typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        stored = {}
        for part in data:
            if isinstance(part, tuple):
                uid = re.search(rb"UID (\d+)", part[0])
                assert uid is not None
                stored[part[1].decode().strip().removeprefix("Subject: ")] = uid.group(1)
        mine = {subject: answer for (u, subject), answer in answers.items() if u == user}
        assert len(stored) == len(mine) == 4 * per_session
        for subject, answer in mine.items():
            assert answer.split()[2].rstrip(b"]") == stored[subject]
        m.logout()


def test_select_lists_the_keywords_in_use(server: KinmailServer) -> None:
    """SELECT's FLAGS response (RFC 9051 §7.3.5): the system flags and every keyword set on some message."""
    m = login(server)
    m.create("Keywords")
    for n in range(4):
        m.append("Keywords", r"(\Seen $Label1)" if n % 2 else "(Work)", None, message(f"keyword {n}"))
    m.select("Keywords")
    flags = m.untagged_responses["FLAGS"][-1]
    assert b"\\Seen" in flags and b"\\Deleted" in flags
    assert b"$Label1" in flags and b"Work" in flags
    m.store("1:*", "-FLAGS", "(Work)")
    m.close()
    m.select("Keywords")
    flags = m.untagged_responses["FLAGS"][-1]
    assert b"$Label1" in flags and b"Work" not in flags
    m.logout()


def test_noop_reports_what_another_process_committed(server: KinmailServer) -> None:
    """Another process's commits (a `kinmail` command, a second server) reach no session by the store's
    notifications: NOOP catches up with the index and reports its flag changes, appends and expunges."""
    from kinmail.store import Store

    m = login(server, BOB)
    m.create("Elsewhere")
    for n in range(2):
        m.append("Elsewhere", None, None, message(f"elsewhere {n}"))
    m.select("Elsewhere")
    assert m.noop()[0] == "OK"  # nothing changed: nothing reported
    assert not any(k in m.untagged_responses for k in ("FETCH", "EXPUNGE"))
    mail_root = server.maildir(BOB).parent.parent
    other = Store(mail_root, server.data_dir / "index")
    try:
        box = other.mailboxes(BOB).open("Elsewhere")
        box.store_flags([1], ["\\Flagged"], "add")
        typ, _ = m.noop()
        assert typ == "OK"
        fetched = m.untagged_responses.pop("FETCH", [])
        assert any(b"\\Flagged" in (line or b"") for line in fetched), fetched
        box.append(message("elsewhere 2"))
        box.store_flags([2], ["\\Deleted"], "add")
        box.expunge()
        m.noop()
        assert m.untagged_responses.pop("EXISTS", []) and m.untagged_responses.pop("EXPUNGE", []) == [b"2"]
    finally:
        other.close()
    assert uids_of(m) == [1, 3]
    m.logout()
