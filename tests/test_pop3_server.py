"""POP3 through the wire against a real `kinmail serve`: poplib (plain, STLS, POP3S), AUTH PLAIN, [IN-USE],
byte-stuffing and CRLF sizes, login failures, the error limit, and IMAP seeing POP3's deletions and back."""

from __future__ import annotations

import base64
import poplib
import shutil
import socket
from collections.abc import Iterator
from typing import cast

import pytest

from tests.peers import PrivateDovecot, give, private_tmp
from tests.serverctl import KinmailServer
from tests.test_pop3_helpers import (
    Pop3Users,
    client_context,
    count_files,
    deliver,
    drop_into_maildir,
    imap_expunge_first,
    imap_seen,
    imap_subjects,
    message,
    running_server,
    wait_for_count,
)

USERS = Pop3Users("srv", 20)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    sections = {"auth": {"throttle_max_delay": 0, "throttle_lockout_failures": 4}, "pop3": {"max_errors": 4}}
    with running_server(tmp_path_factory.mktemp("pop3"), users=USERS.all(), sections=sections) as srv:
        yield srv


def login(server: KinmailServer, user: str) -> poplib.POP3:
    pop = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    pop.user(user)
    pop.pass_(USERS.password(user))
    return pop


class Raw:
    """A line-oriented POP3 client on a plain socket, optionally from another loopback address."""

    def __init__(self, server: KinmailServer, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", server.port("pop3")), timeout=30, source_address=(source, 0)
        )
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self) -> bytes:
        return self.file.readline()

    def cmd(self, text: bytes) -> bytes:
        self.sock.sendall(text + b"\r\n")
        return self.line()

    def multiline(self) -> list[bytes]:
        lines = []
        while (line := self.line()) != b".\r\n":
            assert line, "connection closed inside a multi-line response"
            lines.append(line)
        return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_poplib_retrieve_and_delete(server: KinmailServer) -> None:
    user = USERS.take()
    for i in range(3):
        deliver(server, user, message(f"hello {i}", f"body {i}\r\n"))
    wait_for_count(server, user, 3)
    pop = login(server, user)
    count, total = pop.stat()
    assert count == 3
    sizes = [int(line.split()[1]) for line in pop.list()[1]]
    assert sum(sizes) == total
    uidls = [line.split()[1] for line in pop.uidl()[1]]
    assert len(set(uidls)) == 3
    _, lines, octets = pop.retr(2)
    assert b"Subject: hello 1" in lines
    assert b"body 1" in lines
    assert octets >= sizes[1]
    _, top, _ = pop.top(1, 0)
    assert b"Subject: hello 0" in top and b"body 0" not in top
    pop.dele(1)
    assert pop.stat()[0] == 2
    pop.rset()
    assert pop.stat()[0] == 3
    pop.dele(1)
    pop.quit()

    pop = login(server, user)
    assert pop.stat()[0] == 2
    again = [line.split()[1] for line in pop.uidl()[1]]
    assert again == uidls[1:], "UIDLs must be stable across sessions"
    assert all(len(u) == 16 and int(u, 16) for u in again)  # Dovecot's %08Xu%08Xv
    pop.quit()


def test_stls_and_pop3s(server: KinmailServer) -> None:
    user = USERS.take()
    deliver(server, user, message("over tls", "secret body\r\n"))
    wait_for_count(server, user, 1)
    pop = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    assert "STLS" in pop.capa()
    pop.stls(client_context(server))
    assert "STLS" not in pop.capa()
    pop.user(user)
    pop.pass_(USERS.password(user))
    assert b"secret body" in pop.retr(1)[1]
    pop.quit()

    pops = poplib.POP3_SSL("127.0.0.1", server.port("pop3s"), context=client_context(server), timeout=30)
    capa = pops.capa()
    assert "STLS" not in capa and "USER" in capa and capa["SASL"] == ["PLAIN"]
    pops.user(user)
    pops.pass_(USERS.password(user))
    assert pops.stat()[0] == 1
    pops.quit()


def test_auth_plain_initial_response_and_continuation(server: KinmailServer) -> None:
    user = USERS.take()
    token = base64.b64encode(f"\0{user}\0{USERS.password(user)}".encode())
    raw = Raw(server)
    assert raw.cmd(b"AUTH PLAIN " + token).startswith(b"+OK")
    assert raw.cmd(b"STAT").startswith(b"+OK 0 0")
    raw.cmd(b"QUIT")
    raw.close()
    raw = Raw(server)
    assert raw.cmd(b"AUTH PLAIN") == b"+ \r\n"
    assert raw.cmd(token).startswith(b"+OK")
    raw.cmd(b"QUIT")
    raw.close()


def test_second_session_is_refused_in_use(server: KinmailServer) -> None:
    user = USERS.take()
    first = login(server, user)
    second = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    second.user(user)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_(USERS.password(user))
    first.quit()
    second.user(user)  # free again once the first session is gone
    second.pass_(USERS.password(user))
    second.quit()


def test_byte_stuffing_and_crlf_sizes(server: KinmailServer) -> None:
    user = USERS.take()
    body = b"Subject: dots\n\n.starts with a dot\n..two dots\n.\nbare lf line\nend\n"
    drop_into_maildir(server, user, body)  # bare LFs: SMTP refuses them, other programs' files have them
    wait_for_count(server, user, 1)
    expected = body.replace(b"\n", b"\r\n")
    raw = Raw(server)
    raw.cmd(b"USER " + user.encode())
    assert raw.cmd(b"PASS " + USERS.password(user).encode()).startswith(b"+OK")
    size = int(raw.cmd(b"LIST 1").split()[2])
    assert raw.cmd(b"RETR 1").startswith(b"+OK")
    wire = b"".join(raw.multiline())
    assert b"\r\n..starts with a dot\r\n...two dots\r\n..\r\n" in wire
    assert b"\n" not in wire.replace(b"\r\n", b"")
    unstuffed = b"".join(
        line[1:] if line.startswith(b".") else line for line in wire.splitlines(keepends=True)
    )
    assert unstuffed.endswith(expected[expected.index(b"\r\n\r\n") :])
    assert size == len(unstuffed), "LIST size counts CRLF line ends"
    raw.cmd(b"QUIT")
    raw.close()


def test_bad_commands_and_error_limit(server: KinmailServer) -> None:
    raw = Raw(server)
    assert raw.cmd(b"FOO").startswith(b"-ERR")
    assert raw.cmd(b"STAT").startswith(b"-ERR")
    assert raw.cmd(b"NOOP " + b"x" * 5000).startswith(b"-ERR")
    assert raw.cmd(b"CAPA").startswith(b"+OK")
    raw.multiline()
    assert raw.cmd(b"RETR 1").startswith(b"-ERR")
    assert raw.line().startswith(b"-ERR")  # the 4th error: told and closed
    assert raw.line() == b""
    raw.close()


def test_failed_login_and_throttling(server: KinmailServer) -> None:
    user = USERS.take()
    for _ in range(2):  # two connections: failed logins count towards the error limit too
        raw = Raw(server, source="127.0.0.77")
        for _ in range(2):
            raw.cmd(b"USER " + user.encode())
            assert raw.cmd(b"PASS wrong-password").startswith(b"-ERR [AUTH]")
        raw.close()
    raw = Raw(server, source="127.0.0.77")
    raw.cmd(b"USER " + user.encode())
    assert raw.cmd(b"PASS " + USERS.password(user).encode()).startswith(b"-ERR [SYS/TEMP]")
    raw.close()


def test_deletion_seen_by_imap_and_imap_expunge_seen_by_pop3(server: KinmailServer) -> None:
    user = USERS.take()
    for subject in ("one", "two", "three"):
        deliver(server, user, message(subject, "x\r\n"))
    wait_for_count(server, user, 3)
    pop = login(server, user)
    pop.dele(1)
    pop.retr(2)
    pop.quit()
    assert imap_subjects(server, user, USERS.password(user)) == ["two", "three"]
    assert imap_seen(server, user, USERS.password(user)) == [True, False]  # RETR marks read, as Dovecot
    imap_expunge_first(server, user, USERS.password(user))
    pop = login(server, user)
    assert pop.stat()[0] == 1
    assert b"Subject: three" in pop.retr(1)[1]
    pop.quit()


@pytest.mark.parametrize("uidl_format", [None, "%f"], ids=["default-format", "saved-uidls"])
def test_uidls_kept_for_a_maildir_moved_from_dovecot(server: KinmailServer, uidl_format: str | None) -> None:
    user = USERS.take()
    local = user.split("@")[0]
    with private_tmp(prefix="kinmail-dovecot-") as root:
        maildir = root / "mail" / "example.test" / local
        for sub in ("new", "cur", "tmp"):
            (maildir / sub).mkdir(parents=True)
        for i in range(3):
            (maildir / "new" / f"{1700000000 + i}.M{i}P77.oldhost").write_bytes(
                message(f"old {i}", "from before\r\n")
            )
        give(root / "mail")
        with PrivateDovecot(
            root / "dovecot",
            protocols=("pop3",),
            users={user: USERS.password(user)},
            mail=root / "mail",
            pop3_uidl_format=uidl_format,
        ) as dovecot:
            pop = poplib.POP3("127.0.0.1", dovecot.port("pop3"), timeout=30)
            pop.user(user)
            pop.pass_(USERS.password(user))
            dovecot_uidls = [line.split()[1] for line in pop.uidl()[1]]
            pop.quit()
        shutil.copytree(maildir, server.maildir(user))  # dropped in; the server has not seen this user yet
    pop = login(server, user)
    assert [line.split()[1] for line in pop.uidl()[1]] == dovecot_uidls
    pop.quit()


def test_large_message_streamed_and_top(server: KinmailServer) -> None:
    user = USERS.take()
    lines = [f"line {i:06d} " + "x" * 60 for i in range(12000)]
    lines[5000] = ".a line with a leading dot"
    body = "\r\n".join(lines) + "\r\n"
    deliver(server, user, message("big one", body))
    wait_for_count(server, user, 1)
    pop = login(server, user)
    size = int(cast(bytes, pop.list(1)).split()[2])  # one message: the reply line
    assert size > 600_000
    _, got, _ = pop.retr(1)
    assert b".a line with a leading dot" in got  # poplib removed the stuffing dot
    assert got[-1] == lines[-1].encode()
    assert sum(len(line) + 2 for line in got) == size
    _, top, _ = pop.top(1, 3)
    assert top[-3:] == [line.encode() for line in lines[:3]]
    pop.quit()


def test_pipelined_commands_answered_in_order(server: KinmailServer) -> None:
    user = USERS.take()
    for i in range(3):
        deliver(server, user, message(f"pipe {i}", f"body {i}\r\n"))
    wait_for_count(server, user, 3)
    raw = Raw(server)
    password = USERS.password(user)
    batch = (
        f"USER {user}\r\nPASS {password}\r\nSTAT\r\nRETR 1\r\nRETR 3\r\nDELE 2\r\nBOGUS\r\nSTAT\r\nQUIT\r\n"
    )
    raw.sock.sendall(batch.encode())
    assert raw.line().startswith(b"+OK")  # USER
    assert raw.line().startswith(b"+OK")  # PASS
    assert raw.line().startswith(b"+OK 3 ")  # STAT
    assert raw.line().startswith(b"+OK")
    assert b"Subject: pipe 0\r\n" in b"".join(raw.multiline())
    assert raw.line().startswith(b"+OK")
    assert b"Subject: pipe 2\r\n" in b"".join(raw.multiline())
    assert raw.line().startswith(b"+OK")  # DELE 2
    assert raw.line().startswith(b"-ERR")  # BOGUS
    assert raw.line().startswith(b"+OK 2 ")  # STAT
    assert raw.line().startswith(b"+OK")  # QUIT
    assert raw.line() == b""
    raw.close()
    assert count_files(server, user) == 2
