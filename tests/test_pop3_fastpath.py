"""POP3's fast paths against a real `kinmail serve`: a message file that can go out as it is and one that needs
dot-stuffing or line-end fixing both arrive byte for byte (poplib and the raw wire), the first time (decided
while reading) and the second (decision remembered); a large message that can go out as it is is sent with
`sendfile`, in the same session and, through the store's per-message cache, in the next one. Also the
sans-I/O pieces behind them: `encode_retr` against the general encoder and the `RETR` shortcut against the
general parser."""

from __future__ import annotations

import poplib
import socket
import time
from collections.abc import Iterator
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinmail.proto import pop3
from kinmail.proto.pop3 import Pop3Message, Pop3Session, SendMessage, State
from tests.serverctl import KinmailServer
from tests.test_pop3_helpers import (
    Pop3Users,
    client_context,
    drop_into_maildir,
    running_server,
    wait_for_count,
)

USERS = Pop3Users("fast", 8)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    with running_server(tmp_path_factory.mktemp("pop3fast"), users=USERS.all()) as srv:
        yield srv


def login(server: KinmailServer, user: str) -> poplib.POP3:
    pop = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    pop.user(user)
    pop.pass_(USERS.password(user))
    return pop


def as_sent(data: bytes) -> bytes:
    """What a client gets back after undoing the stuffing: the message with CRLF line ends, ended by CRLF."""
    text = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return text if not text or text.endswith(b"\r\n") else text + b"\r\n"


def retr_raw(server: KinmailServer, user: str, numbers: list[int]) -> list[bytes]:
    """RETR over a plain socket: each answer's body as on the wire (stuffed, with its terminator)."""
    sock = socket.create_connection(("127.0.0.1", server.port("pop3")), timeout=30)
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(f"USER {user}\r\nPASS {USERS.password(user)}\r\n".encode())
    reader.readline()
    assert reader.readline().startswith(b"+OK")
    bodies = []
    for number in numbers:
        sock.sendall(b"RETR %d\r\n" % number)
        assert reader.readline().startswith(b"+OK")
        lines = []
        while (line := reader.readline()) != b".\r\n":
            assert line, "connection closed inside a multi-line response"
            lines.append(line)
        bodies.append(b"".join(lines) + b".\r\n")
    sock.sendall(b"QUIT\r\n")
    assert reader.readline().startswith(b"+OK")
    reader.close()
    sock.close()
    return bodies


SMALL = [
    b"Subject: as is\r\n\r\nnothing to stuff here\r\nsecond line\r\n",  # sent as the file is
    b"Subject: dots\r\n\r\n.starts with a dot\r\n..two dots\r\n.\r\nend\r\n",  # stuffed
    b"Subject: bare\n\nbare LF line\n.dot after a bare LF\nend\n",  # line ends fixed and stuffed
    b"Subject: open end\r\n\r\nno line end at the end",  # CRLF added before the terminator
    b".Subject: the very first byte is a dot\r\n\r\nbody\r\n",
]


def test_small_messages_byte_exact_first_and_second_time(server: KinmailServer) -> None:
    user = USERS.take()
    for data in SMALL:
        drop_into_maildir(server, user, data)
    wait_for_count(server, user, len(SMALL))
    pop = login(server, user)
    for _ in range(2):  # the second RETR uses what the first decided
        for number, data in enumerate(SMALL, 1):
            _, lines, _ = pop.retr(number)
            assert b"".join(line + b"\r\n" for line in lines) == as_sent(data)
            listed = cast(bytes, pop.list(number))  # one message: the reply line
            assert int(listed.split()[2]) == len(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    pop.quit()
    # on the wire: the file as it is plus ".CRLF", or stuffed
    wire = retr_raw(server, user, [1, 2, 1, 2])
    assert wire[0] == wire[2] == SMALL[0] + b".\r\n"
    stuffed = b"Subject: dots\r\n\r\n..starts with a dot\r\n...two dots\r\n..\r\nend\r\n.\r\n"
    assert wire[1] == wire[3] == stuffed


def big_message(subject: str, lines: int, dot_at: int | None) -> bytes:
    body = [f"line {i:07d} " + "y" * 70 for i in range(lines)]
    if dot_at is not None:
        body[dot_at] = ".a line with a leading dot"
    return (f"Subject: {subject}\r\n\r\n" + "\r\n".join(body) + "\r\n").encode()


def test_large_message_as_is_goes_out_with_sendfile(server: KinmailServer) -> None:
    user = USERS.take()
    messages = [
        big_message("medium as is", 1500, None),  # over the size sent from the event loop, one read
        big_message("large as is", 40000, None),  # about 3 MB: more than a socket takes at once
        big_message("large stuffed", 40000, 20000),  # never sent as it is
    ]
    for data in messages:
        drop_into_maildir(server, user, data)
    wait_for_count(server, user, len(messages))
    before = server.log().count("event=pop3.sendfile")
    for session in range(2):
        pop = login(server, user)
        for _ in range(2):
            for number, data in enumerate(messages, 1):
                _, lines, _ = pop.retr(number)
                assert b"".join(line + b"\r\n" for line in lines) == data, (session, number)
        pop.quit()
        # first session: only the second RETR of each message that can go out as it is; the next session
        # knows from the store's cache before the first RETR
        sent = server.log().count("event=pop3.sendfile") - before
        assert sent == (2 if session == 0 else 6)
    wire = retr_raw(server, user, [1, 3])
    assert wire[0] == messages[0] + b".\r\n"
    assert wire[1] == messages[2].replace(b"\r\n.a line", b"\r\n..a line") + b".\r\n"


# --- sans-I/O -----------------------------------------------------------------------------------------------

line_ends = st.lists(
    st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"a", b"text ", b"\r\n.", b"\r\n.\r\n"]), max_size=40
).map(b"".join)


@given(line_ends)
def test_encode_retr_matches_the_general_encoder(data: bytes) -> None:
    wire, as_is = pop3.encode_retr(bytearray(data), crlf_only=False)
    assert bytes(wire) == pop3.encode_message(data)
    assert as_is == pop3.sendable_as_is(data)
    if as_is:
        assert bytes(wire) == data + pop3.TERMINATOR


@given(line_ends)
def test_encode_retr_of_crlf_only_data(data: bytes) -> None:
    crlf = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    wire, as_is = pop3.encode_retr(bytearray(crlf), crlf_only=True)
    assert bytes(wire) == pop3.encode_message(crlf)
    assert as_is == pop3.sendable_as_is(crlf)


def transaction_session(count: int) -> Pop3Session:
    session = Pop3Session(loopback=True)
    session.login_ok("u@example.test", [Pop3Message(10 + i, 100 + i, f"uidl{i}") for i in range(count)])
    assert session.state is State.TRANSACTION
    return session


@pytest.mark.parametrize(
    "line",
    [
        *(b"RETR 1\r\n", b"retr 2\n", b"Retr 3\r\n", b"RETR 0\r\n", b"RETR 4\r\n", b"RETR 01\r\n"),
        *(b"RETR 2 \r\n", b"RETR  2\r\n", b"RETR 2 3\r\n", b"RETR x\r\n", b"RETR 1234567890\r\n"),
        *(b"RETR \r\n", b"RETR -1\r\n"),
    ],
)
def test_retr_shortcut_answers_as_the_general_parser(line: bytes) -> None:
    fast = transaction_session(3)
    fast.deleted.add(3)
    general = transaction_session(3)
    general.deleted.add(3)
    got = fast.handle_line(line)
    # The general path, reached by a line the shortcut never takes ("RETR" written as "rEtR").
    want = general.handle_line(b"rEtR" + line[4:])
    assert got == want
    assert fast.errors == general.errors


def test_retr_shortcut_only_in_the_transaction_state() -> None:
    session = Pop3Session(loopback=True)
    assert session.handle_line(b"RETR 1\r\n") == [pop3.Send(pop3.ERR_WRONG_STATE.render())]
    session = transaction_session(2)
    assert session.handle_line(b"RETR 2\r\n") == [SendMessage(2, 11, 101, None)]


def test_large_message_as_is_over_tls_never_bypasses_tls(server: KinmailServer) -> None:
    """sendfile would write past TLS: over STLS and POP3S the same message goes through the TLS transport."""
    user = USERS.take()
    data = big_message("tls as is", 3000, None)
    drop_into_maildir(server, user, data)
    wait_for_count(server, user, 1)
    retr_raw(server, user, [1, 1])  # plain: decided, kept in the store, then sent with sendfile
    before = server.log().count("event=pop3.sendfile")
    assert before > 0
    pop = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    pop.stls(client_context(server))
    pops = poplib.POP3_SSL("127.0.0.1", server.port("pop3s"), context=client_context(server), timeout=30)
    for client in (pop, pops):
        client.user(user)
        client.pass_(USERS.password(user))
        for _ in range(2):
            _, lines, _ = client.retr(1)
            assert b"".join(line + b"\r\n" for line in lines) == data
        client.quit()
    assert server.log().count("event=pop3.sendfile") == before


def test_sendfile_remainder_when_the_client_reads_slowly(server: KinmailServer) -> None:
    """The socket takes only part of a large message at once while the client is not reading: the rest is
    read and queued, and everything still arrives in order."""
    user = USERS.take()
    data = big_message("slow reader", 40000, None)
    drop_into_maildir(server, user, data)
    wait_for_count(server, user, 1)
    retr_raw(server, user, [1])  # decides (and keeps in the store) that the message can go out as it is
    before = len(server.log())
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # before connecting: a small window
    sock.settimeout(30)
    sock.connect(("127.0.0.1", server.port("pop3")))
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(f"USER {user}\r\nPASS {USERS.password(user)}\r\n".encode())
    reader.readline()
    assert reader.readline().startswith(b"+OK")
    sock.sendall(b"RETR 1\r\nNOOP\r\n")
    deadline = time.monotonic() + 30
    while "event=pop3.sendfile_full" not in server.log()[before:]:  # the socket is full; we do not read yet
        assert time.monotonic() < deadline, "the socket never filled up"
        time.sleep(0.02)
    line = server.log()[before:].split("event=pop3.sendfile_full")[1].split("\n", 1)[0]
    fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
    assert 0 < int(fields["offset"]) < int(fields["size"]), line
    assert reader.readline().startswith(b"+OK")
    body = []
    while (got := reader.readline()) != b".\r\n":
        assert got, "connection closed inside the message"
        body.append(got)
    assert b"".join(body) == data
    assert reader.readline().startswith(b"+OK")  # the NOOP after it
    sock.sendall(b"QUIT\r\n")
    assert reader.readline().startswith(b"+OK")
    reader.close()
    sock.close()


def test_listings_built_once_follow_dele_and_rset() -> None:
    session = transaction_session(3)
    first = session.handle_line(b"LIST\r\n")
    assert first == [pop3.Send(b"+OK 3 messages\r\n1 100\r\n2 101\r\n3 102\r\n.\r\n")]
    assert session.handle_line(b"LIST\r\n") == first
    assert session.handle_line(b"STAT\r\n") == [pop3.Send(b"+OK 3 303\r\n")]
    session.handle_line(b"DELE 2\r\n")
    assert session.handle_line(b"LIST\r\n") == [pop3.Send(b"+OK 2 messages\r\n1 100\r\n3 102\r\n.\r\n")]
    assert session.handle_line(b"UIDL\r\n") == [pop3.Send(b"+OK\r\n1 uidl0\r\n3 uidl2\r\n.\r\n")]
    assert session.handle_line(b"STAT\r\n") == [pop3.Send(b"+OK 2 202\r\n")]
    session.handle_line(b"RSET\r\n")
    assert session.handle_line(b"LIST\r\n") == first
    assert session.handle_line(b"STAT\r\n") == [pop3.Send(b"+OK 3 303\r\n")]
