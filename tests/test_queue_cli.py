"""`kinmail queue list|show|hold|release|delete|flush` on the live spool, and retries moved on by the test clock:
a temporary failure of the local transport (`mailbox_command` exiting 75) is retried after the backoff."""

from __future__ import annotations

import os
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverctl import KinmailServer

COMMAND = (
    'if [ -e "$FAILFLAG" ]; then echo "disk on fire" >&2; exit 75; fi; '
    'if [ -e "$FAILFLAG.$USER" ]; then echo "still broken" >&2; exit 75; fi; '
    'cat > "$HOME/got.$RECIPIENT.$$"; env > "$HOME/env.$RECIPIENT"'
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    root = tmp_path_factory.mktemp("queuecli")
    clock = root / "clock"
    clock.write_text("0")
    flag = root / "fail"
    sections = {
        "smtpd": {"pregreet_wait": 0, "sender_access": "inline:{held@remote.example=HOLD}"},
        "delivery": {
            "mailbox_command": COMMAND.replace("$FAILFLAG", str(flag)),
            "minimal_backoff_time": "10m",
            "maximal_backoff_time": "1h",
            "delay_warning_time": "30m",
            "maximal_queue_lifetime": "3h",
        },
    }
    srv = KinmailServer(root, sections=sections)
    saved = os.environ.get("KINMAIL_TEST_CLOCK")
    os.environ["KINMAIL_TEST_CLOCK"] = str(clock)
    try:
        srv.start()
    finally:
        if saved is None:
            os.environ.pop("KINMAIL_TEST_CLOCK", None)
        else:
            os.environ["KINMAIL_TEST_CLOCK"] = saved
    try:
        yield srv
    finally:
        srv.stop()


def send(server: KinmailServer, sender: str, rcpt: str, subject: str) -> str:
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=15) as client:
        client.ehlo("client.example")
        client.mail(sender)
        client.rcpt(rcpt)
        code, text = client.data(f"Subject: {subject}\r\n\r\nbody\r\n".encode())
        assert code == 250
        return text.decode().rsplit(" ", 1)[1]


def delivered_files(server: KinmailServer, address: str) -> list[Path]:
    return sorted(server.maildir(address).glob(f"got.{address}.*"))


def wait_until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_hold_list_show_release(server: KinmailServer) -> None:
    queue_id = send(server, "held@remote.example", "alice@example.test", "held-message")
    listing = server.kinmail("queue", "list")
    assert listing.returncode == 0 and queue_id in listing.stdout and "held" in listing.stdout
    shown = server.kinmail("queue", "show", queue_id)
    assert (
        shown.returncode == 0
        and "held@remote.example" in shown.stdout
        and "Subject: held-message" in shown.stdout
    )
    before = len(delivered_files(server, "alice@example.test"))
    assert server.kinmail("queue", "release", queue_id).returncode == 0
    wait_until(lambda: len(delivered_files(server, "alice@example.test")) > before)
    wait_until(lambda: queue_id not in server.kinmail("queue", "list").stdout)


def test_hold_and_delete(server: KinmailServer) -> None:
    queue_id = send(server, "held@remote.example", "bob@example.test", "to-delete")
    assert server.kinmail("queue", "delete", queue_id).returncode == 0
    assert queue_id not in server.kinmail("queue", "list").stdout
    missing = server.kinmail("queue", "delete", queue_id)
    assert missing.returncode == 1 and "no such message" in missing.stderr
    assert not any(b"to-delete" in p.read_bytes() for p in server.maildir("bob@example.test").glob("got.*"))


def test_mailbox_command_environment(server: KinmailServer) -> None:
    send(server, "friend@remote.example", "bob+news@example.test", "env-check")
    env_file = server.maildir("bob@example.test") / "env.bob+news@example.test"
    wait_until(env_file.exists)
    wait_until(lambda: "ORIGINAL_RECIPIENT" in env_file.read_text())
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert env["SENDER"] == "friend@remote.example"
    assert env["RECIPIENT"] == "bob+news@example.test"
    assert env["USER"] == "bob" and env["EXTENSION"] == "news" and env["DOMAIN"] == "example.test"
    assert env["LOCAL"] == "bob+news"
    assert env["ORIGINAL_RECIPIENT"] == "bob+news@example.test"
    assert env["HOME"] == str(server.maildir("bob@example.test"))


def test_temporary_failure_retries_after_backoff(server: KinmailServer) -> None:
    flag = server.root / "fail"
    clock = server.root / "clock"
    flag.write_text("")
    try:
        queue_id = send(server, "friend@remote.example", "alice@example.test", "retry-me")
        wait_until(lambda: "deferred" in server.kinmail("queue", "list").stdout)
        shown = server.kinmail("queue", "show", queue_id).stdout
        assert "disk on fire" in shown
    finally:
        flag.unlink()
    before = len(delivered_files(server, "alice@example.test"))
    clock.write_text(str(11 * 60))
    wait_until(lambda: len(delivered_files(server, "alice@example.test")) > before)
    wait_until(lambda: queue_id not in server.kinmail("queue", "list").stdout)


def test_flush_retries_now(server: KinmailServer) -> None:
    flag = server.root / "fail"
    flag.write_text("")
    try:
        queue_id = send(server, "friend@remote.example", "bob@example.test", "flush-me")
        wait_until(lambda: "deferred" in server.kinmail("queue", "list").stdout)
    finally:
        flag.unlink()
    result = server.kinmail("queue", "flush")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: queue_id not in server.kinmail("queue", "list").stdout)
    assert any(b"flush-me" in p.read_bytes() for p in delivered_files(server, "bob@example.test"))


def test_queue_commands_without_a_server(tmp_path: Path) -> None:
    srv = KinmailServer(tmp_path / "offline")
    assert "empty" in srv.kinmail("queue", "list").stdout
    result = srv.kinmail("queue", "hold", "NOSUCHID")
    assert result.returncode == 1 and "no such message" in result.stderr


def test_delay_warning_then_expiry_bounce(server: KinmailServer) -> None:
    flag = server.root / "fail.bob"
    clock = server.root / "clock"
    flag.write_text("")
    try:
        queue_id = send(server, "alice@example.test", "bob@example.test", "never-arrives")
        wait_until(lambda: "deferred" in server.kinmail("queue", "show", queue_id).stdout)

        def alice_got(text: bytes) -> bool:
            return any(text in p.read_bytes() for p in delivered_files(server, "alice@example.test"))

        assert not alice_got(b"Delayed Mail")
        clock.write_text(str(float(clock.read_text()) + 31 * 60))
        server.kinmail("queue", "flush")
        wait_until(lambda: alice_got(b"Delayed Mail (still being retried)"))
        assert queue_id in server.kinmail("queue", "list").stdout
        clock.write_text(str(float(clock.read_text()) + 4 * 3600))
        wait_until(lambda: alice_got(b"Undelivered Mail Returned to Sender"))
        wait_until(lambda: queue_id not in server.kinmail("queue", "list").stdout)
        bounce = next(
            p.read_bytes()
            for p in delivered_files(server, "alice@example.test")
            if b"Undelivered Mail" in p.read_bytes()
        )
        assert b"Status: 4.4.7" in bounce and b"Action: failed" in bounce and b"still broken" in bounce
    finally:
        flag.unlink()
