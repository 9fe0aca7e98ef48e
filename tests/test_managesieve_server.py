"""ManageSieve (RFC 5804) through the wire against a real `kinmail serve`: sievelib's client for the whole
script life cycle, raw sockets for literals, limits, SASL continuation, STARTTLS and bad input."""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Iterator

import pytest
from sievelib.managesieve import Client

from tests.serverctl import KinmailServer
from tests.test_pop3_helpers import Pop3Users, running_server

USERS = Pop3Users("sieve", 10)
MAX_SIZE = 2048
MAX_SCRIPTS = 3
GOOD = 'require "fileinto";\r\nif header :contains "subject" "list" {\r\n  fileinto "Lists";\r\n}\r\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    sections = {"sieve": {"max_script_size": MAX_SIZE, "max_scripts": MAX_SCRIPTS}}
    with running_server(tmp_path_factory.mktemp("msieve"), users=USERS.all(), sections=sections) as srv:
        yield srv


@pytest.fixture
def tls_trust(server: KinmailServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """sievelib builds its TLS context with ssl.create_default_context(); make it trust our certificate."""
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: real(cafile=str(server.cert_path)))


def connect(server: KinmailServer, user: str) -> Client:
    client = Client("127.0.0.1", server.port("managesieve"), srvhostname="localhost")
    assert client.connect(user, USERS.password(user), starttls=True, authmech="PLAIN"), client.errmsg
    return client


def test_script_life_cycle_with_sievelib(server: KinmailServer, tls_trust: None) -> None:
    user = USERS.take()
    client = connect(server, user)
    assert client.get_implementation() == "kinmail"
    extensions = client.get_sieve_capabilities()
    assert {"fileinto", "vacation", "imap4flags", "variables", "body"} <= set(extensions)
    assert client.havespace("filters", 100)
    assert client.checkscript(GOOD)
    assert client.putscript("filters", GOOD)
    assert client.putscript("other", "keep;\r\n")
    assert client.listscripts() == (None, ["filters", "other"])
    assert client.setactive("filters")
    assert client.listscripts() == ("filters", ["other"])
    assert client.getscript("filters").replace("\n", "\r\n").rstrip() == GOOD.rstrip()
    assert not client.deletescript("filters")
    assert client.errcode == b"ACTIVE"
    assert client.renamescript("filters", "main")
    assert client.listscripts() == ("main", ["other"])
    assert not client.renamescript("other", "main")
    assert client.errcode == b"ALREADYEXISTS"
    assert not client.getscript("missing")
    assert client.errcode == b"NONEXISTENT"
    assert client.setactive("")
    assert client.deletescript("main")
    assert client.listscripts() == (None, ["other"])
    client.logout()
    active = server.data_dir / "sieve" / "example.test" / user.split("@")[0]
    assert (active / "other.sieve").read_bytes() == b"keep;\r\n"


def test_compile_errors_name_the_line(server: KinmailServer, tls_trust: None) -> None:
    user = USERS.take()
    client = connect(server, user)
    bad = 'require "fileinto";\r\nkeep;\r\nfileinto "x"\r\nstop;\r\n'
    assert not client.putscript("broken", bad)
    assert client.errmsg.startswith(b"3:1: ")
    assert not client.checkscript("keep;\r\nif true {\r\n  bogus;\r\n}\r\nfoo;\r\n")
    errors = client.errmsg.split(b"\n")  # every error, each with its line, sent as a literal
    assert errors[0].startswith(b"3:3: ") and errors[1].startswith(b"5:1: ")
    assert client.listscripts() == (None, [])
    client.logout()


def test_wrong_password_is_refused(server: KinmailServer, tls_trust: None) -> None:
    user = USERS.take()
    client = Client("127.0.0.1", server.port("managesieve"), srvhostname="localhost")
    assert not client.connect(user, "not-the-password", starttls=True, authmech="PLAIN")


class Raw:
    def __init__(self, server: KinmailServer) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port("managesieve")), timeout=30)
        self.file = self.sock.makefile("rb")
        self.greeting = self.until_status()

    def line(self) -> bytes:
        return self.file.readline()

    def until_status(self) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            assert line, "connection closed"
            lines.append(line)
            if line.startswith((b"OK", b"NO", b"BYE")):
                return lines

    def send(self, data: bytes) -> list[bytes]:
        self.sock.sendall(data)
        return self.until_status()

    def login(self, user: str) -> None:
        token = base64.b64encode(f"\0{user}\0{USERS.password(user)}".encode())
        assert self.send(b'AUTHENTICATE "PLAIN" "' + token + b'"\r\n')[-1].startswith(b"OK")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_greeting_capabilities(server: KinmailServer) -> None:
    raw = Raw(server)
    caps = b"".join(raw.greeting)
    assert b'"IMPLEMENTATION" "kinmail"' in caps
    assert b'"SASL" "PLAIN"' in caps  # from loopback
    assert b'"STARTTLS"' in caps
    assert b'"VERSION" "1.0"' in caps
    assert b'"MAXREDIRECTS"' in caps
    assert b'"SIEVE" "' in caps and b"fileinto" in caps
    assert raw.send(b"LOGOUT\r\n")[-1].startswith(b"OK")
    raw.close()


def test_literals_sync_and_non_sync(server: KinmailServer) -> None:
    user = USERS.take()
    raw = Raw(server)
    raw.login(user)
    script = b"keep;\r\n"
    assert raw.send(b'PUTSCRIPT "a" {%d+}\r\n' % len(script) + script + b"\r\n")[-1].startswith(b"OK")
    assert raw.send(b"PUTSCRIPT {1}\r\nb {%d}\r\n" % len(script) + script + b"\r\n")[-1].startswith(b"OK")
    reply = raw.send(b'GETSCRIPT "b"\r\n')
    assert reply[0] in (b"{7}\r\n", b"{6}\r\n") and reply[-1].startswith(b"OK")
    assert b"".join(reply[1:-1]).replace(b"\r\n", b"\n").startswith(b"keep;\n")
    listing = raw.send(b"LISTSCRIPTS\r\n")
    assert listing[:-1] == [b'"a"\r\n', b'"b"\r\n']
    raw.close()


def test_size_and_count_limits(server: KinmailServer) -> None:
    user = USERS.take()
    raw = Raw(server)
    raw.login(user)
    assert raw.send(b'HAVESPACE "x" %d\r\n' % (MAX_SIZE + 1))[-1].startswith(b"NO (QUOTA/MAXSIZE)")
    big = b"#" + b"x" * (MAX_SIZE + 10) + b"\r\n"
    assert raw.send(b'PUTSCRIPT "big" {%d+}\r\n' % len(big) + big + b"\r\n")[-1].startswith(
        b"NO (QUOTA/MAXSIZE)"
    )
    huge = b"#" + b"y" * 200_000 + b"\r\n"
    assert raw.send(b'PUTSCRIPT "huge" {%d+}\r\n' % len(huge) + huge + b"\r\n")[-1].startswith(
        b"NO (QUOTA/MAXSIZE)"
    )
    for i in range(MAX_SCRIPTS):
        assert raw.send(b'PUTSCRIPT "s%d" "keep;"\r\n' % i)[-1].startswith(b"OK")
    assert raw.send(b'HAVESPACE "s9" 10\r\n')[-1].startswith(b"NO (QUOTA/MAXSCRIPTS)")
    assert raw.send(b'PUTSCRIPT "s9" "keep;"\r\n')[-1].startswith(b"NO (QUOTA/MAXSCRIPTS)")
    assert raw.send(b'PUTSCRIPT "s0" "discard;"\r\n')[-1].startswith(b"OK")  # replacing is allowed
    assert raw.send(b'HAVESPACE "s1" 10\r\n')[-1].startswith(b"OK")
    raw.close()


def test_sasl_continuation_noop_unauthenticate(server: KinmailServer) -> None:
    user = USERS.take()
    raw = Raw(server)
    assert raw.send(b"LISTSCRIPTS\r\n")[-1].startswith(b"NO")
    raw.sock.sendall(b'AUTHENTICATE "PLAIN"\r\n')
    assert raw.line() == b'""\r\n'
    token = base64.b64encode(f"\0{user}\0{USERS.password(user)}".encode())
    assert raw.send(b'"' + token + b'"\r\n')[-1].startswith(b"OK")
    assert raw.send(b'NOOP "tag1"\r\n')[-1] == b'OK (TAG "tag1") "Done"\r\n'
    assert raw.send(b"UNAUTHENTICATE\r\n")[-1].startswith(b"OK")
    assert raw.send(b"LISTSCRIPTS\r\n")[-1].startswith(b"NO")
    raw.sock.sendall(b'AUTHENTICATE "PLAIN"\r\n')
    assert raw.line() == b'""\r\n'
    assert raw.send(b'"*"\r\n')[-1].startswith(b"NO")
    raw.close()


def test_bad_input_gets_no_and_session_goes_on(server: KinmailServer) -> None:
    user = USERS.take()
    raw = Raw(server)
    assert raw.send(b"FROBNICATE\r\n")[-1].startswith(b"NO")
    assert raw.send(b'GETSCRIPT "unterminated\r\n')[-1].startswith(b"NO")
    assert raw.send(b"\x00\xff\r\n")[-1].startswith(b"NO")
    raw.login(user)
    assert raw.send(b'PUTSCRIPT "../escape" "keep;"\r\n')[-1].startswith(b"NO")
    assert raw.send(b'PUTSCRIPT ".hidden" "keep;"\r\n')[-1].startswith(b"NO")
    assert raw.send(b'DELETESCRIPT "none"\r\n')[-1].startswith(b"NO (NONEXISTENT)")
    assert raw.send(b'HAVESPACE "x" notanumber\r\n')[-1].startswith(b"NO")
    assert raw.send(b"CAPABILITY\r\n")[-1].startswith(b"OK")
    raw.close()


def test_starttls_resends_capabilities(server: KinmailServer) -> None:
    raw = Raw(server)
    assert raw.send(b"STARTTLS\r\n")[-1].startswith(b"OK")
    context = ssl.create_default_context(cafile=str(server.cert_path))
    tls = context.wrap_socket(raw.sock, server_hostname="localhost")
    file = tls.makefile("rb")
    lines = []
    while not (line := file.readline()).startswith(b"OK"):
        lines.append(line)
    caps = b"".join(lines)
    assert b'"STARTTLS"' not in caps and b'"SASL" "PLAIN"' in caps
    tls.sendall(b"STARTTLS\r\n")
    assert file.readline().startswith(b"NO")
    tls.close()
