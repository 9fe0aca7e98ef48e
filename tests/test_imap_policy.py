"""IMAP policies against a `kinmail serve` configured strictly: no plaintext login without TLS (LOGINDISABLED,
even from loopback), login throttling ending in `NO [UNAVAILABLE]`, QUOTA from the user's quota, and the
imaptest runner's own ability to notice a wrong reply."""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imaptest import ScriptFailure, ScriptRun, load_script
from tests.serverctl import HOST, USERS, KinmailServer

ALICE = "alice@example.test"
BOB = "bob@example.test"


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    root = tmp_path_factory.mktemp("imapstrict")
    srv = KinmailServer(
        root / "kinmail",
        services=("imap", "imaps"),
        sections={
            "imap": {"plaintext_auth_without_tls": "never"},
        },
    )
    lines = (root / "kinmail" / "users").read_text().splitlines()
    (root / "kinmail" / "users").write_text(
        "".join(line + (":quota=1M" if line.startswith(BOB) else "") + "\n" for line in lines)
    )
    with srv:
        yield srv


def tls(server: KinmailServer) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.cert_path))
    ctx.check_hostname = False
    return ctx


def test_plaintext_login_is_disabled_without_tls(strict: KinmailServer) -> None:
    m = imaplib.IMAP4(HOST, strict.port("imap"))
    assert "LOGINDISABLED" in m.capabilities
    assert "AUTH=PLAIN" not in m.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        m.login(ALICE, USERS[ALICE])
    m.starttls(ssl_context=tls(strict))
    assert "LOGINDISABLED" not in m.capabilities and "AUTH=PLAIN" in m.capabilities
    assert m.login(ALICE, USERS[ALICE])[0] == "OK"
    m.logout()


def test_throttled_logins_get_unavailable(tmp_path: Path) -> None:
    strict = KinmailServer(
        tmp_path / "kinmail",
        services=("imaps",),
        sections={
            "auth": {"throttle_free_failures": 0, "throttle_max_delay": 0.0, "throttle_lockout_failures": 3}
        },
    ).start()
    try:
        answers = _failed_logins(strict)
    finally:
        strict.stop()
    assert any("AUTHENTICATIONFAILED" in a for a in answers)
    assert "UNAVAILABLE" in answers[-1]


def _failed_logins(strict: KinmailServer) -> list[str]:
    answers = []
    for _ in range(6):
        m = imaplib.IMAP4_SSL(HOST, strict.port("imaps"), ssl_context=tls(strict))
        try:
            m.login(ALICE, "not-the-password")
        except imaplib.IMAP4.error as exc:
            answers.append(str(exc))
        finally:
            m.shutdown()
    return answers


def test_quota_from_the_users_quota(strict: KinmailServer) -> None:
    m = imaplib.IMAP4_SSL(HOST, strict.port("imaps"), ssl_context=tls(strict))
    m.login(BOB, USERS[BOB])
    m.append("INBOX", None, None, b"Subject: q\r\n\r\n" + b"x" * 3000 + b"\r\n")
    typ, data = m.getquotaroot("INBOX")
    assert typ == "OK"
    flat = b" ".join(d if isinstance(d, bytes) else b" ".join(d) for d in data[1] if d)  # type: ignore[index]
    assert b"STORAGE" in flat and b" 1024)" in flat
    typ, data = m.append("INBOX", None, None, b"Subject: big\r\n\r\n" + b"y" * 1_200_000 + b"\r\n")
    assert typ == "NO" and b"OVERQUOTA" in data[0]
    m.logout()


def test_multiappend_over_quota_stores_none_of_its_messages(strict: KinmailServer) -> None:
    """RFC 3502 §3: a MULTIAPPEND is all or nothing — here the second message would pass the quota."""
    m = imaplib.IMAP4_SSL(HOST, strict.port("imaps"), ssl_context=tls(strict))
    m.login(BOB, USERS[BOB])
    m.create("Multi")
    one = b"Subject: part one\r\n\r\n" + b"x" * 400_000 + b"\r\n"
    two = b"Subject: part two\r\n\r\n" + b"y" * 700_000 + b"\r\n"

    def multiappend(tag: bytes, first: bytes, second: bytes) -> bytes:
        """The tagged reply to an APPEND of two literals (LITERAL+), sent as it is on the wire."""
        m.send(b"%s APPEND Multi {%d+}\r\n%s {%d+}\r\n%s\r\n" % (tag, len(first), first, len(second), second))
        line = m.readline()
        while not line.startswith(tag + b" "):
            line = m.readline()
        return line

    line = multiappend(b"m1", one, two)
    assert line.startswith(b"m1 NO") and b"OVERQUOTA" in line
    typ, data = m.status("Multi", "(MESSAGES)")
    assert typ == "OK" and b"MESSAGES 0" in data[0]  # type: ignore[operator]
    line = multiappend(b"m2", one, one)
    assert line.startswith(b"m2 OK") and b"APPENDUID" in line
    typ, data = m.status("Multi", "(MESSAGES)")
    assert b"MESSAGES 2" in data[0]  # type: ignore[operator]
    m.logout()


def test_runner_reports_a_wrong_reply(strict: KinmailServer, tmp_path: Path) -> None:
    """The imaptest runner must fail when the server's answer differs (else its passes mean nothing)."""
    cases = {
        "missing": 'state: auth\n\nok list "" INBOX\n* list () $sep nosuchbox\n',
        "banned": 'state: auth\n\nok list "" INBOX\n! list ($!unordered) $sep INBOX\n',
        "status": "state: auth\n\nno noop\n",
        "bound": 'state: auth\n\nok list "" INBOX\n* list () $sep $box\nok status $box (messages)\n* status $box (messages 99)\n',
    }
    (tmp_path / "default.mbox").write_text("From a@b  Fri Feb 22 17:06:23 2008\nSubject: x\n\nbody\n\n")
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        run = ScriptRun(load_script(tmp_path / name), HOST, strict.port("imap"), [(ALICE, USERS[ALICE])])
        run.conns = []
        with pytest.raises(ScriptFailure):
            _run_over_tls(run, strict)


def _run_over_tls(run: ScriptRun, server: KinmailServer) -> None:
    """The strict server refuses plaintext logins, so the runner's plain socket is upgraded first."""
    import tests.imaptest.runner as runner

    original = runner.Conn.__init__

    def init(self: runner.Conn, host: str, port: int, index: int) -> None:
        original(self, host, port, index)
        self.command("STARTTLS")
        self.sock = tls(server).wrap_socket(self.sock)
        self.buf = b""

    runner.Conn.__init__ = init  # type: ignore[method-assign]
    try:
        run.run()
    finally:
        runner.Conn.__init__ = original  # type: ignore[method-assign]
