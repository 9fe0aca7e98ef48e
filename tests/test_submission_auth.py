"""Submission on 587 (STARTTLS) and 465 (implicit TLS): AUTH only under TLS, sender ownership, private headers,
Message-ID/Date added, per-user limits; through smtplib, swaks and msmtp."""

from __future__ import annotations

import email
import email.policy
import smtplib
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from kinmail.mailauth.dkimkeys import create_keys
from tests.serverctl import USERS, KinmailServer

ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"
PASSWORDS = {**USERS, CAROL: "carol-secret-3"}
ALIASES = "postmaster@example.test alice@example.test\nsales@example.test alice@example.test\n"


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.fixture(scope="module")
def sub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    root = tmp_path_factory.mktemp("submission")
    sections = {
        "smtpd": {
            "user_messages_per_hour": 6,
            "user_recipients_per_message": 4,
            "mynetworks": ["192.0.2.0/24"],
        },
        "delivery": {"minimal_backoff_time": "1h"},
    }
    create_keys(root / "dkim", "example.test")
    with KinmailServer(root, sections=sections, aliases=ALIASES, users=PASSWORDS) as server:
        yield server


def starttls_client(server: KinmailServer) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=15)
    client.ehlo("laptop.home.example")
    client.starttls(context=tls_context())
    client.ehlo("laptop.home.example")
    return client


def wait_for_files(folder: Path, count: int = 1, timeout: float = 20.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = sorted(p for sub in ("new", "cur") for p in (folder / sub).glob("*") if p.is_file())
        if len(files) >= count:
            return files
        time.sleep(0.05)
    raise AssertionError(f"{count} message(s) not delivered into {folder}")


def find_message(folder: Path, needle: bytes) -> bytes:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for sub in ("new", "cur"):
            for path in (folder / sub).glob("*"):
                data = path.read_bytes()
                if needle in data:
                    return data
        time.sleep(0.05)
    raise AssertionError(f"no message with {needle!r} in {folder}")


def test_auth_not_offered_nor_accepted_before_tls(sub: KinmailServer) -> None:
    with smtplib.SMTP("127.0.0.1", sub.port("submission"), timeout=15) as client:
        _code, text = client.ehlo("laptop.home.example")
        assert b"STARTTLS" in text and b"AUTH" not in text
        assert client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1zZWNyZXQtMQ==")[0] == 530
        assert client.docmd("MAIL FROM:<alice@example.test>")[0] == 530


def test_mail_needs_auth_after_tls(sub: KinmailServer) -> None:
    with starttls_client(sub) as client:
        assert b"PLAIN" in client.ehlo_resp and b"LOGIN" in client.ehlo_resp
        code, text = client.mail(ALICE)
        assert (code, text[:5]) == (530, b"5.7.0")


def test_bad_password_is_refused(sub: KinmailServer) -> None:
    with starttls_client(sub) as client, pytest.raises(smtplib.SMTPAuthenticationError) as info:
        client.login(ALICE, "wrong password")
    assert info.value.smtp_code == 535


def test_auth_login_and_plain(sub: KinmailServer) -> None:
    with starttls_client(sub) as client:
        client.user, client.password = ALICE, USERS[ALICE]
        assert client.auth("LOGIN", client.auth_login, initial_response_ok=False)[0] == 235
    with starttls_client(sub) as client:
        client.user, client.password = ALICE, USERS[ALICE]
        assert client.auth("PLAIN", client.auth_plain)[0] == 235
        assert client.docmd("AUTH PLAIN")[0] == 503  # once is enough


def test_sender_must_be_owned(sub: KinmailServer) -> None:
    with starttls_client(sub) as client:
        client.login(ALICE, USERS[ALICE])
        code, text = client.mail(BOB)
        assert (code, text[:5]) == (553, b"5.7.1")
        code, text = client.mail("ceo@other.example")
        assert code == 553
        assert client.mail("sales@example.test")[0] == 250  # an alias of alice's
        client.rset()
        # From: must be hers as well.
        client.mail(ALICE)
        client.rcpt(BOB)
        code, text = client.data(b"From: Bob <bob@example.test>\r\nSubject: forged\r\n\r\nhi\r\n")
        assert (code, text[:5]) == (553, b"5.7.1")


def test_submission_is_private_and_completed(sub: KinmailServer) -> None:
    message = (
        b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: private-check\r\n"
        b"X-Originating-IP: [198.51.100.7]\r\nX-Forwarded-For: 198.51.100.7\r\n\r\nhello bob\r\n"
    )
    with starttls_client(sub) as client:
        client.login(ALICE, USERS[ALICE])
        assert client.sendmail(ALICE, [BOB], message) == {}
    data = find_message(sub.maildir(BOB), b"private-check")
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"127.0.0.1" not in data and b"laptop.home.example" not in data
    assert b"198.51.100.7" not in data
    assert b"X-Originating-IP" not in head
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["Message-ID"] and parsed["Date"]
    received = parsed.get_all("Received")
    assert received and "ESMTPSA" in received[0] and "TLS" in received[0]
    assert parsed["Return-Path"] == "<alice@example.test>"
    assert parsed["Delivered-To"] == BOB
    assert parsed["DKIM-Signature"] and "d=example.test" in parsed["DKIM-Signature"]
    records = {p.stem: p.read_text().strip() for p in (sub.root / "dkim").rglob("*.txt")}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        selector = name.decode().split("._domainkey.")[0]
        return records.get(selector, "").encode()

    assert dkim.verify(data, dnsfunc=dnsfunc)


def test_implicit_tls_on_465(sub: KinmailServer) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", sub.port("submissions"), context=tls_context(), timeout=15) as client:
        _code, text = client.ehlo("laptop.home.example")
        assert b"AUTH PLAIN LOGIN" in text and b"STARTTLS" not in text
        client.login(ALICE, USERS[ALICE])
        refused = client.sendmail(ALICE, [BOB], b"From: alice@example.test\r\nSubject: via-465\r\n\r\nhi\r\n")
        assert refused == {}
    find_message(sub.maildir(BOB), b"via-465")


def test_recipients_per_message_limit(sub: KinmailServer) -> None:
    with starttls_client(sub) as client:
        client.login(ALICE, USERS[ALICE])
        client.mail(ALICE)
        for _ in range(4):
            assert client.rcpt(BOB)[0] == 250
        code, text = client.rcpt(BOB)
        assert (code, text[:5]) == (452, b"4.5.3")


def test_messages_per_hour_limit(sub: KinmailServer) -> None:
    with starttls_client(sub) as client:
        client.login(CAROL, PASSWORDS[CAROL])
        for n in range(6):
            client.sendmail(
                CAROL, [ALICE], f"From: carol@example.test\r\nSubject: rate {n}\r\n\r\nx\r\n".encode()
            )
        code, text = client.mail(CAROL)
        assert (code, text[:5]) == (450, b"4.7.1")


def test_swaks_and_msmtp_submit(sub: KinmailServer, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            "swaks",
            "--server",
            "127.0.0.1",
            "--port",
            str(sub.port("submission")),
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            ALICE,
            "--auth-password",
            USERS[ALICE],
            "--from",
            ALICE,
            "--to",
            BOB,
            "--header",
            "Subject: swaks-submission",
            "--h-From",
            "alice@example.test",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    find_message(sub.maildir(BOB), b"swaks-submission")
    config = tmp_path / "msmtprc"
    config.write_text(
        f"account default\nhost 127.0.0.1\nport {sub.port('submissions')}\ntls on\ntls_starttls off\n"
        f"tls_certcheck off\nauth login\nuser {ALICE}\npassword {USERS[ALICE]}\nfrom {ALICE}\n"
    )
    config.chmod(0o600)
    result = subprocess.run(
        ["msmtp", "-C", str(config), BOB],
        input=b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: msmtp-submission\r\n\r\nhi\r\n",
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    find_message(sub.maildir(BOB), b"msmtp-submission")
