"""POP3 with real outside clients against a real `kinmail serve`: curl (pop3:// with STLS, pop3s://) and
fetchmail pulling into a file through an mda, then deleting."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverctl import KinmailServer
from tests.test_pop3_helpers import Pop3Users, count_files, deliver, message, running_server, wait_for_count

USERS = Pop3Users("cli", 8)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    with running_server(tmp_path_factory.mktemp("pop3c"), users=USERS.all()) as srv:
        yield srv


def curl(server: KinmailServer, url: str, user: str, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "30", "-u", f"{user}:{USERS.password(user)}", *extra, url],
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_curl_list_retr_dele(server: KinmailServer) -> None:
    user = USERS.take()
    deliver(server, user, message("first via curl", "one\r\n"))
    deliver(server, user, message("second via curl", "two\r\n.dot line\r\n"))
    wait_for_count(server, user, 2)
    base = f"pop3://127.0.0.1:{server.port('pop3')}"
    listing = curl(server, base + "/", user)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.decode().split()
    assert lines[0::2] == ["1", "2"]
    retr = curl(server, base + "/2", user)
    assert retr.returncode == 0, retr.stderr
    assert b"Subject: second via curl" in retr.stdout
    assert b"\r\n.dot line\r\n" in retr.stdout  # unstuffed by curl
    dele = curl(server, base + "/1", user, "-X", "DELE", "-I")
    assert dele.returncode == 0, dele.stderr
    assert count_files(server, user) == 1
    listing = curl(server, base + "/", user)
    assert listing.stdout.decode().split()[0::2] == ["1"]


def test_curl_stls_and_pop3s(server: KinmailServer) -> None:
    user = USERS.take()
    deliver(server, user, message("tls via curl", "body\r\n"))
    wait_for_count(server, user, 1)
    tls = ["--cacert", str(server.cert_path)]
    port = server.port("pop3")
    stls = curl(
        server,
        f"pop3://localhost:{port}/1",
        user,
        "--ssl-reqd",
        "--resolve",
        f"localhost:{port}:127.0.0.1",
        *tls,
    )
    assert stls.returncode == 0, stls.stderr
    assert b"Subject: tls via curl" in stls.stdout
    port = server.port("pop3s")
    pops = curl(server, f"pop3s://localhost:{port}/", user, "--resolve", f"localhost:{port}:127.0.0.1", *tls)
    assert pops.returncode == 0, pops.stderr
    assert pops.stdout.decode().split()[0] == "1"


def test_curl_bad_password_fails(server: KinmailServer) -> None:
    user = USERS.take()
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "30",
            "-u",
            f"{user}:wrong",
            f"pop3://127.0.0.1:{server.port('pop3')}/",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 67  # CURLE_LOGIN_DENIED


def _fetchmail(
    tmp_path: Path, server: KinmailServer, user: str, port: int, options: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "fetched.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"set no bouncemail\n"
        f"poll 127.0.0.1 with protocol POP3 and port {port} and timeout 30:\n"
        f'  user "{user}" there with password "{USERS.password(user)}" is "nobody" here\n'
        f'  options fetchall nokeep {options} mda "cat >> {out}"\n'
    )
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    result = subprocess.run(
        ["fetchmail", "--nosyslog", "-f", str(rc), "--pidfile", str(tmp_path / "fetchmail.pid")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    return result, out


@pytest.mark.parametrize("tls", ["plain", "pop3s"])
def test_fetchmail_pulls_into_mda_and_deletes(server: KinmailServer, tmp_path: Path, tls: str) -> None:
    user = USERS.take()
    for subject in ("fetch one", "fetch two"):
        deliver(server, user, message(subject, f"{subject} body\r\n.leading dot\r\n"))
    wait_for_count(server, user, 2)
    if tls == "plain":
        result, out = _fetchmail(tmp_path, server, user, server.port("pop3"), "sslproto ''")
    else:
        result, out = _fetchmail(
            tmp_path,
            server,
            user,
            server.port("pop3s"),
            "ssl sslcertfile " + f'"{server.cert_path}" no sslcertck',
        )
    assert result.returncode == 0, result.stdout + result.stderr
    fetched = out.read_bytes()
    assert b"Subject: fetch one" in fetched and b"Subject: fetch two" in fetched
    assert b"\n.leading dot" in fetched and b"\n..leading dot" not in fetched
    assert count_files(server, user) == 0  # nokeep: deleted on the server at QUIT
