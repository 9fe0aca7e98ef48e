"""A map file that changes on disk is used by a running server without a restart or reload; a change that
does not parse keeps the old table and the log says why (SMTP `sender_access` through smtplib)."""

from __future__ import annotations

import os
import smtplib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.serverctl import HOST, KinmailServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    root = tmp_path_factory.mktemp("kinmail")
    (root / "senders").write_text("# nobody is refused yet\nnobody@nowhere.invalid REJECT\n")
    srv = KinmailServer(root, services=("smtp",), sections={"smtpd": {"sender_access": "texthash:senders"}})
    with srv:
        yield srv


def _mail_from(server: KinmailServer, sender: str) -> int:
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=20) as client:
        client.ehlo("client.example.com")
        code, _ = client.mail(sender)
        if code < 400:
            code, _ = client.rcpt("alice@example.test")
        client.rset()
        return code


def _eventually(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def _rewrite(path: Path, text: str) -> None:
    old = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(old + 2 * 10**9, old + 2 * 10**9))  # a visible change even on coarse timestamps


def test_changed_map_is_used_without_restart(server: KinmailServer) -> None:
    senders = server.root / "senders"
    assert _mail_from(server, "spammer@bad.example") == 250
    _rewrite(senders, "bad.example REJECT go away\n")
    assert _eventually(lambda: _mail_from(server, "spammer@bad.example") >= 500)
    assert _mail_from(server, "friend@good.example") == 250

    # A broken edit keeps the table in use and says why.
    _rewrite(senders, "bad.example REJECT go away\nthis-line-has-no-value\n")
    assert _eventually(
        lambda: _mail_from(server, "x@y.example") > 0 and "event=map.reload_failed" in server.log()
    )
    line = next(line for line in server.log().splitlines() if "event=map.reload_failed" in line)
    assert "location=senders:2" in line and 'reason="expected format: key whitespace value"' in line
    assert _mail_from(server, "spammer@bad.example") >= 500
    assert "event=reload.done" not in server.log()  # no server reload was involved
