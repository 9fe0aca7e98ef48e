"""Local delivery through the wire: aliases (several targets, catch-all, user+tag), Return-Path and
Delivered-To, one copy per mailbox, a DSN for a permanent local failure, TLS details in Received."""

from __future__ import annotations

import email
import email.policy
import smtplib
import ssl
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.serverctl import KinmailServer

ALIASES = """\
postmaster@example.test alice@example.test
team@example.test alice@example.test, bob@example.test
@example.net bob@example.test
"""


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    root = tmp_path_factory.mktemp("delivery")
    with KinmailServer(root, aliases=ALIASES, sections={"smtpd": {"pregreet_wait": 0}}) as server:
        yield server


def send(server: KinmailServer, sender: str, rcpts: list[str], message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=15) as client:
        client.ehlo("client.example")
        assert client.sendmail(sender, rcpts, message) == {}


def messages_with(folder: Path, needle: bytes, count: int = 1, timeout: float = 20.0) -> list[bytes]:
    """Wait until `count` messages containing `needle` are in the Maildir; return them."""
    deadline = time.monotonic() + timeout
    found: list[bytes] = []
    while time.monotonic() < deadline:
        found = [
            p.read_bytes()
            for sub in ("new", "cur")
            for p in (folder / sub).glob("*")
            if needle in p.read_bytes()
        ]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"found {len(found)} of {count} messages with {needle!r} in {folder}")


def settle(server: KinmailServer) -> None:
    """Wait until the queue is empty (every message delivered or bounced)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not list((server.data_dir / "queue").glob("*.json")):
            return
        time.sleep(0.05)
    raise AssertionError("the queue did not drain")


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_delivery_adds_return_path_and_delivered_to(mx: KinmailServer) -> None:
    send(mx, "friend@remote.example", ["alice@example.test"], b"Subject: plain-delivery\r\n\r\nhello\r\n")
    [data] = messages_with(mx.maildir("alice@example.test"), b"plain-delivery")
    message = parse(data)
    assert message["Return-Path"] == "<friend@remote.example>"
    assert message["Delivered-To"] == "alice@example.test"
    received = message["Received"]
    assert (
        "from client.example" in received
        and "127.0.0.1" in received
        and "for <alice@example.test>" in received
    )
    assert data.endswith(b"\r\nhello\r\n")


def test_aliases_several_targets_catch_all_and_tag(mx: KinmailServer) -> None:
    send(
        mx,
        "friend@remote.example",
        ["team@example.test", "anyone@example.net", "bob+lists@example.test"],
        b"Subject: alias-fanout\r\n\r\nhi all\r\n",
    )
    settle(mx)
    alice = messages_with(mx.maildir("alice@example.test"), b"alias-fanout")
    bob = messages_with(mx.maildir("bob@example.test"), b"alias-fanout", count=2)
    assert len(alice) == 1
    # team and the catch-all both lead to bob's mailbox: one copy; the +tag address is a separate delivery.
    assert sorted(parse(m)["Delivered-To"] for m in bob) == ["bob+lists@example.test", "bob@example.test"]


def test_null_sender_message_is_delivered(mx: KinmailServer) -> None:
    send(mx, "", ["bob@example.test"], b"Subject: from-null\r\n\r\nreport\r\n")
    [data] = messages_with(mx.maildir("bob@example.test"), b"from-null")
    assert parse(data)["Return-Path"] == "<>"


def test_permanent_local_failure_bounces_with_a_dsn(mx: KinmailServer) -> None:
    # A message that has already been delivered to bob (a forwarding loop) cannot be delivered again.
    looping = b"Delivered-To: bob@example.test\r\nSubject: loop-bounce\r\nMessage-ID: <loop@x>\r\n\r\nround and round\r\n"
    send(mx, "alice@example.test", ["bob@example.test"], looping)
    [data] = messages_with(mx.maildir("alice@example.test"), b"Undelivered Mail Returned to Sender")
    report = parse(data)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["Return-Path"] == "<>"
    parts = list(report.iter_parts())
    assert parts[1].get_content_type() == "message/delivery-status"
    status = parts[1].as_bytes()
    assert b"Final-Recipient: rfc822; bob@example.test" in status
    assert b"Action: failed" in status and b"Status: 5.4.6" in status
    assert parts[2].get_content_type() == "message/rfc822"
    assert b"loop-bounce" in parts[2].as_bytes()
    settle(mx)


def test_notify_never_means_no_dsn(mx: KinmailServer) -> None:
    looping = b"Delivered-To: bob@example.test\r\nSubject: loop-notify-never\r\n\r\nx\r\n"
    with smtplib.SMTP("127.0.0.1", mx.port("smtp"), timeout=15) as client:
        client.ehlo("client.example")
        client.mail("alice@example.test")
        assert client.rcpt("bob@example.test", ["NOTIFY=NEVER"])[0] == 250
        assert client.data(looping)[0] == 250
    settle(mx)
    reports = [p.read_bytes() for p in mx.maildir("alice@example.test").glob("new/*")]
    assert not any(b"loop-notify-never" in r and b"multipart/report" in r for r in reports)


def test_dsn_honours_ret_envid_and_orcpt(mx: KinmailServer) -> None:
    looping = b"Delivered-To: bob@example.test\r\nSubject: loop-ret-hdrs\r\n\r\nsecret body text\r\n"
    with smtplib.SMTP("127.0.0.1", mx.port("smtp"), timeout=15) as client:
        client.ehlo("client.example")
        client.mail("alice@example.test", ["RET=HDRS", "ENVID=env+2B42"])
        assert client.rcpt("bob@example.test", ["ORCPT=rfc822;Bob+2Bx@example.test"])[0] == 250
        assert client.data(looping)[0] == 250
    [data] = messages_with(mx.maildir("alice@example.test"), b"Original-Envelope-Id: env+2B42")
    parts = list(parse(data).iter_parts())
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert b"loop-ret-hdrs" in data and b"secret body text" not in data
    assert b"Original-Recipient: rfc822; Bob+x@example.test" in parts[1].as_bytes()


def test_no_bounce_for_a_bounce(mx: KinmailServer) -> None:
    looping = b"Delivered-To: bob@example.test\r\nSubject: loop-from-null\r\n\r\nx\r\n"
    send(mx, "", ["bob@example.test"], looping)
    settle(mx)
    assert "loop-from-null" not in "".join(
        p.read_text(errors="replace")
        for p in (mx.data_dir / "mail").rglob("*")
        if p.is_file() and "new" in p.parts
    )
    mx.wait_log("status=bounced")  # the log line may follow the queue file's removal


def test_tls_details_in_received(mx: KinmailServer) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", mx.port("smtp"), timeout=15) as client:
        client.starttls(context=context)
        client.ehlo("tls-client.example")
        client.sendmail(
            "friend@remote.example", ["alice@example.test"], b"Subject: tls-received\r\n\r\nx\r\n"
        )
    [data] = messages_with(mx.maildir("alice@example.test"), b"tls-received")
    received = " ".join(parse(data)["Received"].split())
    assert "with ESMTPS" in received
    assert "using TLSv1.3 with cipher TLS_" in received or "using TLSv1.2 with cipher" in received
