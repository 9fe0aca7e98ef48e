"""`kinmail serve` as a whole: starts, stops on SIGTERM within 5 s, reloads on SIGHUP and `kinmail reload`,
keeps the running configuration when a reload fails, and `kinmail demo` (what `make run` starts) works."""

from __future__ import annotations

import re
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

from tests.serverctl import HOST, KinmailServer, cached_hash


def _wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _smtp_banner(port: int) -> str:
    with smtplib.SMTP(HOST, port, timeout=10) as client:
        code, _ = client.noop()
        assert code == 250
        return client.ehlo_resp.decode() if client.ehlo_resp else ""


def test_sigterm_stops_within_five_seconds(tmp_path: Path) -> None:
    server = KinmailServer(tmp_path / "k").start()
    assert server.proc is not None
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(timeout=10)
    assert time.monotonic() - started < 5
    assert code == 0
    assert "event=serve.stopped" in server.log()
    server.proc = None


def test_reload_failure_keeps_running_config_and_says_where(tmp_path: Path) -> None:
    with KinmailServer(tmp_path / "k") as server:
        good = server.config_path.read_text()
        server.config_path.write_text(good + "\n[smtpd]\nno_such_knob = 1\n")
        server.reload()
        assert _wait_for(lambda: "event=reload.failed" in server.log())
        failure = next(line for line in server.log().splitlines() if "event=reload.failed" in line)
        assert "kinmail.toml" in failure and "no_such_knob" in failure
        _smtp_banner(server.port("smtp"))  # still serving

        # A good reload picks up a new user: mail to them is accepted afterwards, refused before.
        server.config_path.write_text(good)
        with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as client:
            client.ehlo("client.example.com")
            client.mail("someone@example.com")
            code, _ = client.rcpt("carol@example.test")
            assert code == 550
        with (server.root / "users").open("a") as users:
            users.write(f"carol@example.test:{cached_hash('carol-pw')}\n")
        result = server.kinmail("reload")
        assert result.returncode == 0, result.stderr
        assert _wait_for(lambda: "event=reload.done" in server.log())
        with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as client:
            client.ehlo("client.example.com")
            client.mail("someone@example.com")
            code, _ = client.rcpt("carol@example.test")
            assert code == 250


def test_reload_without_a_running_server_is_a_clear_error(tmp_path: Path) -> None:
    server = KinmailServer(tmp_path / "k")
    result = server.kinmail("reload")
    assert result.returncode == 1
    assert "no running server" in result.stderr
    assert "Traceback" not in result.stderr


def test_logs_are_logfmt_with_connection_ids(tmp_path: Path) -> None:
    with KinmailServer(tmp_path / "k") as server:
        _smtp_banner(server.port("smtp"))
        assert _wait_for(lambda: re.search(r"cid=\w+", server.log()) is not None)
        for line in server.log().splitlines():
            if line.startswith("ts="):
                assert re.match(r"ts=\S+ level=\w+ event=\S+", line), line
        assert (server.data_dir / "log" / "mail.log").exists()


def test_demo_serves_and_prints_how_to_log_in(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kinmail", "demo", "--dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if "event=serve.ready" in line:
                break
        text = "".join(output)
        assert "event=serve.ready" in text, text
        password = re.search(r"password\s+(\S+)", text)
        assert password is not None
        with smtplib.SMTP(HOST, 2525, timeout=10) as client:
            client.ehlo("client.example.com")
            client.mail("friend@example.com")
            assert client.rcpt("demo@example.test")[0] == 250
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert (tmp_path / "demo" / "kinmail.toml").exists()
