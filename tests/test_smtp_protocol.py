"""The MX port through the wire: every restriction and reply code, open-relay tricks, smuggling, size limits,
pregreet, STARTTLS, pipelining, BDAT, access maps. One server per module; the test client (127.0.0.1) is a
stranger (not in mynetworks); 127.0.0.3 is in mynetworks and 127.0.0.2 is refused by client_access."""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverctl import KinmailServer

SENDER_MAP = (
    "inline:{ { spam@bad.example=REJECT No spam please }, later@bad.example=DEFER, "
    "held@bad.example=HOLD, { custom@bad.example=551 5.7.9 Go elsewhere } }"
)


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    root = tmp_path_factory.mktemp("mx")
    sections = {
        "smtpd": {
            "mynetworks": ["127.0.0.3/32"],
            "pregreet_wait": 0.2,
            "message_size_limit": 200000,
            "recipient_limit": 5,
            "hard_error_limit": 12,
            "timeout": 3,
            "client_access": "inline:{127.0.0.2=REJECT}",
            "sender_access": SENDER_MAP,
            "recipient_access": "inline:{ blocked@example.test=REJECT }",
        }
    }
    with KinmailServer(root, sections=sections) as server:
        yield server


def connect(server: KinmailServer, source: str = "127.0.0.1") -> smtplib.SMTP:
    client = smtplib.SMTP(timeout=10)
    client.source_address = (source, 0)
    client.connect("127.0.0.1", server.port("smtp"))
    return client


class Raw:
    """A plain socket speaking SMTP line by line, for what smtplib will not send."""

    def __init__(self, server: KinmailServer, greet: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port("smtp")), timeout=10)
        self.file = self.sock.makefile("rb")
        if greet:
            assert self.reply()[0] == 220

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                return 0, ""
            lines.append(line.decode()[4:].rstrip())
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    def cmd(self, line: str) -> tuple[int, str]:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def test_greeting_and_extensions(mx: KinmailServer) -> None:
    with connect(mx) as client:
        code, text = client.ehlo("client.example")
        assert code == 250
        for keyword in (
            "PIPELINING",
            "SIZE 200000",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "STARTTLS",
            "CHUNKING",
            "DSN",
        ):
            assert keyword.encode() in text.split(b"\n")
        assert b"AUTH" not in text  # no AUTH on the MX port
        assert client.noop() == (250, b"2.0.0 Ok")
        assert client.help().startswith(b"2.0.0")


def test_helo_required(mx: KinmailServer) -> None:
    raw = Raw(mx)
    assert raw.cmd("MAIL FROM:<a@remote.example>") == (503, "5.5.1 Send HELO/EHLO first")
    assert raw.cmd("HELO client.example")[0] == 250
    assert raw.cmd("MAIL FROM:<a@remote.example>")[0] == 250
    raw.close()


def test_forged_helo_is_refused(mx: KinmailServer) -> None:
    raw = Raw(mx)
    for name in ("mail.example.test", "example.test", "EXAMPLE.NET."):
        code, text = raw.cmd(f"EHLO {name}")
        assert (code, text[:5]) == (550, "5.7.1")
    assert raw.cmd("MAIL FROM:<a@remote.example>")[0] == 503  # still no accepted greeting
    assert raw.cmd("HELO client.example")[0] == 250
    raw.close()
    with connect(mx, "127.0.0.3") as client:  # our own networks may use our names
        assert client.ehlo("mail.example.test")[0] == 250


def test_strict_envelopes_vrfy_and_sequence(mx: KinmailServer) -> None:
    with connect(mx) as client:
        client.ehlo("client.example")
        assert client.docmd("MAIL FROM:a@remote.example")[0] == 501
        assert client.docmd("MAIL FROM:<a@remote.example> junk")[0] == 555
        assert client.docmd("RCPT TO:<alice@example.test>") == (503, b"5.5.1 Need MAIL command")
        assert client.docmd("DATA")[0] == 503
        assert client.docmd("VRFY alice@example.test")[0] == 502
        assert client.docmd("EXPN staff")[0] == 502
        assert client.docmd("FOO")[0] == 500
        assert client.docmd("MAIL FROM:<a@remote.example>")[0] == 250
        assert client.docmd("MAIL FROM:<a@remote.example>")[0] == 503
        assert client.docmd("DATA")[1].startswith(b"5.5.1")


def test_utf8_addresses_need_smtputf8(mx: KinmailServer) -> None:
    raw = Raw(mx)
    raw.cmd("EHLO client.example")
    assert raw.cmd("MAIL FROM:<a@remote.example>")[0] == 250
    code, text = raw.cmd("RCPT TO:<jörg@example.test>")
    assert (code, text[:5]) == (553, "5.6.7")
    assert raw.cmd("RSET")[0] == 250
    assert raw.cmd("MAIL FROM:<jörg@remote.example> SMTPUTF8")[0] == 250
    assert raw.cmd("RCPT TO:<jörg@example.test>")[0] == 550  # well-formed, but nobody by that name
    raw.close()


def test_unknown_local_user(mx: KinmailServer) -> None:
    with connect(mx) as client:
        client.ehlo("client.example")
        client.mail("a@remote.example")
        code, text = client.rcpt("nobody@example.test")
        assert (code, text[:5]) == (550, b"5.1.1")
        assert client.rcpt("ALICE@Example.Test")[0] == 250
        assert client.rcpt("postmaster")[0] == 250


@pytest.mark.parametrize(
    ("rcpt", "codes"),
    [
        ("victim@other.example", {554}),
        ("@example.test:victim@other.example", {554}),
        ("victim%other.example@example.test", {550}),
        ('"victim@other.example"@example.test', {550}),
        ("victim@other.example@example.test", {501}),
        ("victim!other.example@example.test", {550}),
        ("victim@[192.0.2.1]", {554}),
        ("victim@[127.0.0.1]", {554}),
        ("victim@example.test.", {501, 554}),
    ],
)
def test_no_open_relay(mx: KinmailServer, rcpt: str, codes: set[int]) -> None:
    with connect(mx) as client:
        client.ehlo("client.example")
        client.mail("a@remote.example")
        code, _ = client.docmd(f"RCPT TO:<{rcpt}>")
        assert code in codes
        # Nothing was accepted, so DATA has nothing to send to.
        assert client.docmd("DATA")[0] == 503


def test_relay_tricks_with_real_local_user_deliver_locally(mx: KinmailServer) -> None:
    with connect(mx) as client:
        client.ehlo("client.example")
        client.mail("a@remote.example")
        assert client.docmd("RCPT TO:<@other.example:alice@example.test>")[0] == 250


def test_mynetworks_may_relay(mx: KinmailServer) -> None:
    with connect(mx, "127.0.0.3") as client:
        client.ehlo("client.example")
        client.mail("a@example.test")
        assert client.rcpt("someone@other.example")[0] == 250
        client.rset()


def test_client_access_refuses_at_connect(mx: KinmailServer) -> None:
    client = smtplib.SMTP(timeout=10)
    client.source_address = ("127.0.0.2", 0)
    code, text = client.connect("127.0.0.1", mx.port("smtp"))
    assert (code, text[:5]) == (554, b"5.7.1")
    client.close()


def test_sender_and_recipient_access(mx: KinmailServer) -> None:
    with connect(mx) as client:
        client.ehlo("client.example")
        code, text = client.mail("spam@bad.example")
        assert code == 553 and b"No spam please" in text
        assert client.mail("later@bad.example")[0] == 450
        code, text = client.mail("custom@bad.example")
        assert (code, text) == (551, b"5.7.9 Go elsewhere")
        assert client.mail("fine@remote.example")[0] == 250
        assert client.rcpt("blocked@example.test")[0] == 554


def test_size_limits(mx: KinmailServer) -> None:
    with connect(mx) as client:
        client.ehlo("client.example")
        code, text = client.docmd("MAIL FROM:<a@remote.example> SIZE=300000")
        assert (code, text[:5]) == (552, b"5.3.4")
        client.mail("a@remote.example")
        client.rcpt("alice@example.test")
        body = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 250
        code, text = client.data(body)
        assert (code, text[:5]) == (552, b"5.3.4")
        assert client.noop()[0] == 250  # the session goes on


def test_recipient_limit(mx: KinmailServer) -> None:
    with connect(mx) as client:
        client.ehlo("client.example")
        client.mail("a@remote.example")
        for _ in range(5):
            assert client.rcpt("alice@example.test")[0] == 250
        code, text = client.rcpt("alice@example.test")
        assert (code, text[:5]) == (452, b"4.5.3")


def test_line_length_limit(mx: KinmailServer) -> None:
    raw = Raw(mx)
    raw.cmd("EHLO client.example")
    code, text = raw.cmd("NOOP " + "x" * 5000)
    assert (code, text[:5]) == (500, "5.5.6")
    assert raw.cmd("NOOP")[0] == 250
    raw.close()


def test_error_limit_closes(mx: KinmailServer) -> None:
    raw = Raw(mx)
    codes = [raw.cmd("BOGUS")[0] for _ in range(12)]
    assert codes[:11] == [500] * 11
    assert raw.reply()[0] == 421
    assert raw.reply() == (0, "")
    raw.close()


def test_pregreet_talker_is_dropped(mx: KinmailServer) -> None:
    raw = Raw(mx, greet=False)
    raw.send(b"EHLO spambot.example\r\n")
    code, _ = raw.reply()
    assert code == 421
    assert raw.reply() == (0, "")
    raw.close()


def test_smuggling_with_bare_lf_is_refused(mx: KinmailServer) -> None:
    raw = Raw(mx)
    raw.cmd("EHLO client.example")
    assert raw.cmd("MAIL FROM:<a@remote.example>")[0] == 250
    assert raw.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert raw.cmd("DATA")[0] == 354
    raw.send(
        b"Subject: smuggle\r\n\r\nhello\r\n\n.\r\nMAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
        b"DATA\r\nSubject: forged\r\n\r\nx\r\n.\n\r\n.\r\n"
    )
    code, text = raw.reply()
    assert (code, text[:6]) == (554, "5.6.11")
    assert raw.cmd("NOOP")[0] == 250  # exactly one reply came for all of that
    raw.close()


def test_pipelining_and_bdat(mx: KinmailServer) -> None:
    raw = Raw(mx)
    raw.cmd("EHLO client.example")
    raw.send(
        b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
    )
    assert [raw.reply()[0] for _ in range(3)] == [250, 550, 250]
    first, second = b"Subject: chunks\r\n\r\n", b"body line\r\n"
    raw.send(b"BDAT %d\r\n" % len(first) + first + b"BDAT %d LAST\r\n" % len(second) + second)
    assert raw.reply()[0] == 250
    code, text = raw.reply()
    assert code == 250 and "queued as" in text
    assert raw.cmd("DATA")[0] == 503  # the transaction is over
    raw.close()


def test_replies_to_pipelined_commands_come_in_one_write(mx: KinmailServer) -> None:
    """As Postfix answers them: held until the server has read all the client sent, then written at once (one
    segment on loopback, read by one recv), not a system call and a segment each."""
    raw = Raw(mx)
    raw.cmd("EHLO client.example")
    for _ in range(5):
        raw.send(
            b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<alice@example.test>\r\nRSET\r\n"
        )
        got = raw.sock.recv(65536)
        assert got.count(b"\r\n") == 4 and got.startswith(b"250") and got.endswith(b"\r\n"), got
    raw.close()


def test_starttls_discards_pipelined_input(mx: KinmailServer) -> None:
    sock = socket.create_connection(("127.0.0.1", mx.port("smtp")), timeout=10)
    file = sock.makefile("rb")
    assert file.readline().startswith(b"220")
    sock.sendall(b"EHLO client.example\r\n")
    while file.readline()[3:4] == b"-":
        pass
    sock.sendall(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@remote.example>\r\n")
    assert file.readline().startswith(b"220 2.0.0")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tls = context.wrap_socket(sock, server_hostname="localhost")
    tfile = tls.makefile("rb")
    tls.sendall(b"RCPT TO:<alice@example.test>\r\n")
    # Had "MAIL FROM" survived the handshake, this RCPT would be accepted.
    assert tfile.readline().startswith(b"503")
    tls.sendall(b"EHLO client.example\r\n")
    lines = []
    while True:
        line = tfile.readline()
        lines.append(line)
        if line[3:4] != b"-":
            break
    assert b"STARTTLS\r\n" not in [line[4:] for line in lines]
    tls.close()


def test_null_sender_and_quit(mx: KinmailServer) -> None:
    with connect(mx) as client:
        client.ehlo("client.example")
        assert client.mail("")[0] == 250
        assert client.rcpt("bob@example.test")[0] == 250
        code, text = client.data(b"Subject: bounce\r\n\r\nreport\r\n")
        assert code == 250 and b"queued as" in text


def test_swaks_sends_over_starttls(mx: KinmailServer, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            "swaks",
            "--server",
            "127.0.0.1",
            "--port",
            str(mx.port("smtp")),
            "--from",
            "sender@remote.example",
            "--to",
            "bob@example.test",
            "--tls",
            "--helo",
            "client.example",
            "--header",
            "Subject: via swaks",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "queued as" in result.stdout


def test_idle_sessions_do_not_disturb_others(mx: KinmailServer) -> None:
    idle = [Raw(mx) for _ in range(5)]
    with connect(mx) as client:
        client.ehlo("client.example")
        assert client.noop()[0] == 250
    for raw in idle:
        raw.close()


def test_idle_client_gets_421(mx: KinmailServer) -> None:
    raw = Raw(mx)
    code, text = raw.reply()  # nothing sent: the server gives up after [smtpd] timeout
    assert (code, text[:5]) == (421, "4.4.2")
    assert raw.reply() == (0, "")
    raw.close()


def test_a_client_that_keeps_talking_outlives_the_timeout(mx: KinmailServer) -> None:
    """The timeout counts from the last command, not from the connection: commands 1 s apart for 4.5 s (the
    timeout is 3 s) keep the session; then silence ends it."""
    raw = Raw(mx)
    assert raw.cmd("EHLO client.example")[0] == 250
    for _ in range(5):
        time.sleep(0.9)
        assert raw.cmd("NOOP")[0] == 250
    started = time.monotonic()
    code, text = raw.reply()
    assert (code, text[:5]) == (421, "4.4.2")
    assert 2.5 < time.monotonic() - started < 6
    raw.close()


@pytest.mark.parametrize(
    "junk",
    [
        b"\x00\xff\xfe garbage\r\n",
        b"MAIL FROM:<\xc3\x28@x.example>\r\n",
        b"RCPT TO:<<<>>>\r\n",
        b"EHLO " + b"a" * 3000 + b"\r\n",
        b"BDAT x\r\n",
        b"AUTH PLAIN ====\r\n",
        b"\r\n",
        b"DATA\n",
    ],
)
def test_bad_input_gets_an_error_and_the_server_lives(mx: KinmailServer, junk: bytes) -> None:
    raw = Raw(mx)
    raw.cmd("EHLO client.example")
    raw.send(junk)
    code, _ = raw.reply()
    assert 400 <= code < 600
    raw.close()
    with connect(mx) as client:
        assert client.noop()[0] == 250
