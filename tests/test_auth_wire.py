"""Logins through the wire against a real `kinmail serve`: Dovecot hashes pasted into `users` work (sievelib,
imaplib, poplib), wrong passwords fail, and the throttle (shared by every protocol, loopback not exempt)
refuses a locked-out user and address (IMAP `NO [UNAVAILABLE]`, POP3 `-ERR`, ManageSieve `NO`) while another
user from another address still gets in, also after the server restarts."""

from __future__ import annotations

import base64
import imaplib
import poplib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverctl import HOST, USERS, KinmailServer

# sievelib warns that PLAIN over a plain connection sends the password in the clear: this is loopback.
pytestmark = pytest.mark.filterwarnings("ignore:Credentials are sent:UserWarning")

DATA = Path(__file__).parent / "data" / "dovecot-hashes.txt"


def _dovecot_hash(scheme: str) -> tuple[str, str]:
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            continue
        password, stored = line.split("\t")
        if stored.startswith("{" + scheme + "}") and password == "correct horse":
            return password, stored
    raise AssertionError(scheme)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    srv = KinmailServer(
        tmp_path_factory.mktemp("kinmail"),
        services=("imap", "pop3", "managesieve"),
        sections={
            "auth": {
                "throttle_free_failures": 1,
                "throttle_max_delay": 0.2,
                "throttle_lockout_failures": 3,
                "throttle_window": 600,
            }
        },
    )
    with (srv.root / "users").open("a") as users:
        for name, scheme in (("carol", "SHA512-CRYPT"), ("dave", "BLF-CRYPT"), ("erin", "SSHA512")):
            users.write(f"{name}@example.test:{_dovecot_hash(scheme)[1]}\n")
    with srv:
        yield srv


def _imap_login(port: int, user: str, password: str, source: str = HOST) -> str:
    """LOGIN from a chosen loopback address; the tagged answer line."""
    with socket.create_connection((HOST, port), timeout=20, source_address=(source, 0)) as sock:
        stream = sock.makefile("rwb")
        assert stream.readline().startswith(b"* OK")
        stream.write(f'a1 LOGIN "{user}" "{password}"\r\n'.encode())
        stream.flush()
        while True:
            line = stream.readline().decode()
            if line.startswith("a1 "):
                return line.strip()
            assert line, "connection closed"


def _sieve_login(port: int, user: str, password: str, source: str = HOST) -> str:
    """AUTHENTICATE "PLAIN" (RFC 5804 §2.1) from a chosen loopback address; the answer line."""
    with socket.create_connection((HOST, port), timeout=20, source_address=(source, 0)) as sock:
        stream = sock.makefile("rwb")
        while not stream.readline().startswith(b"OK"):
            pass
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        stream.write(f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode())
        stream.flush()
        return stream.readline().decode().strip()


def test_dovecot_hashes_log_in(server: KinmailServer) -> None:
    from sievelib.managesieve import Client

    for user in ("carol", "dave", "erin"):
        client = Client(HOST, server.port("managesieve"))
        assert client.connect(f"{user}@example.test", "correct horse", authmech="PLAIN")
        client.logout()
        client = Client(HOST, server.port("managesieve"))
        assert not client.connect(f"{user}@example.test", "correct horsE", authmech="PLAIN")
    assert "event=auth.ok user=carol@example.test ip=127.0.0.1 service=managesieve" in server.log()
    imap = imaplib.IMAP4(HOST, server.port("imap"), timeout=20)
    assert imap.login("Carol@Example.test", "correct horse")[0] == "OK"
    imap.logout()
    pop = poplib.POP3(HOST, server.port("pop3"), timeout=20)
    pop.user("dave@example.test")
    assert pop.pass_("correct horse").startswith(b"+OK")
    pop.quit()


def test_wrong_password_then_lockout_shared_by_protocols(server: KinmailServer) -> None:
    port = server.port("imap")
    alice = "alice@example.test"
    sieve = server.port("managesieve")
    assert _sieve_login(sieve, alice, USERS[alice], source="127.0.0.2").startswith("OK")
    for _ in range(3):
        answer = _imap_login(port, alice, "wrong-password", source="127.0.0.2")
        assert answer.startswith("a1 NO") and "UNAVAILABLE" not in answer
    # Locked: the right password is refused without a check, for this user from anywhere...
    assert "[UNAVAILABLE]" in _imap_login(port, alice, USERS[alice], source="127.0.0.2")
    assert "[UNAVAILABLE]" in _imap_login(port, alice, USERS[alice], source="127.0.0.3")
    pop = poplib.POP3(HOST, server.port("pop3"), timeout=20)
    pop.user(alice)
    with pytest.raises(poplib.error_proto):
        pop.pass_(USERS[alice])
    pop.close()
    # ...and for anyone from the address that failed, while another user from elsewhere still logs in.
    bob = "bob@example.test"
    assert "[UNAVAILABLE]" in _imap_login(port, bob, USERS[bob], source="127.0.0.2")
    assert _sieve_login(sieve, bob, USERS[bob], source="127.0.0.2").startswith("NO")
    assert _sieve_login(sieve, bob, USERS[bob], source="127.0.0.4").startswith("OK")
    log = server.log()
    assert "event=auth.throttled user=alice@example.test ip=127.0.0.2 service=imap" in log
    assert "wrong-password" not in log and USERS[alice] not in log

    # A restart does not wipe the record (data_dir/state/auth.sqlite): still locked, still for alice only.
    server.stop()
    server.log_path.write_text("")  # start() waits for a serve.ready line: not the one of the last run
    server.start()
    assert "[UNAVAILABLE]" in _imap_login(port, alice, USERS[alice], source="127.0.0.3")
    assert _sieve_login(sieve, bob, USERS[bob], source="127.0.0.2").startswith("NO")
    assert _sieve_login(sieve, bob, USERS[bob], source="127.0.0.4").startswith("OK")
