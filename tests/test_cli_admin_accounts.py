"""`kinmail domain|user|alias|map` through subprocesses: edits keep the hand-written files' comments and
order, bad input is refused with one clear line, and a running server is told to reload."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kinmail.auth.passwords import verify_password
from kinmail.config.directory import Directory
from kinmail.config.load import load_config
from tests.serverctl import KinmailServer

CONFIG = """\
# Our family mail server
hostname = "mail.example.org"   # the MX name
data_dir = "data"
domains = [
    "example.org",   # main
    # "old.example", retired
]

[smtpd]
# be strict
helo_required = true
client_access = "cidr:client.cidr"
"""

USERS = """\
# the family
alice@example.org:{PLAIN}alice-pw:quota=1G

# Dovecot line, pasted in
carol@example.org:{PLAIN}carol-pw:1000:1000::/home/carol::userdb_quota_rule=*:storage=1G
"""

ALIASES = """\
# who gets what
postmaster@example.org  alice@example.org
team@example.org        alice@example.org,
                        carol@example.org
"""


def run(config: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kinmail", "--config", str(config), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


# Runs several `kinmail` commands one after another in one Python process (each with its own argv, stdin,
# captured output and exit status), for checks whose point is the same (refusals, read-only queries): one
# interpreter start instead of one per command.
_BATCH = """
import contextlib, io, json, sys
from kinmail.cli.main import main
results = []
for argv, data in json.load(sys.stdin):
    sys.argv = ["kinmail", *argv]
    out, err = io.StringIO(), io.StringIO()
    sys.stdin = io.TextIOWrapper(io.BytesIO((data or "").encode()))
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    results.append((code, out.getvalue(), err.getvalue()))
json.dump(results, sys.__stdout__)
"""


Call = tuple[tuple[str, ...], str | None]


def call(*args: str, input: str | None = None) -> Call:
    return args, input


def run_many(config: Path, *calls: Call) -> list[subprocess.CompletedProcess[str]]:
    """Run `calls` (made by `call`) in one subprocess; their results in the same order."""
    jobs = [(["--config", str(config), *args], data) for args, data in calls]
    proc = subprocess.run(
        [sys.executable, "-c", _BATCH], input=json.dumps(jobs), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return [
        subprocess.CompletedProcess(job[0], code, out, err)
        for job, (code, out, err) in zip(jobs, json.loads(proc.stdout), strict=True)
    ]


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    (tmp_path / "kinmail.toml").write_text(CONFIG)
    (tmp_path / "users").write_text(USERS)
    (tmp_path / "users").chmod(0o600)
    (tmp_path / "aliases").write_text(ALIASES)
    (tmp_path / "client.cidr").write_text("192.0.2.0/24 REJECT\n")
    return tmp_path / "kinmail.toml"


def _refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 1, result.stdout
    assert result.stderr == f"kinmail: {message}\n"


def test_domain_add_list_remove_keeps_comments(setup: Path) -> None:
    result = run(setup, "domain", "add", "Example.NET")
    assert result.returncode == 0, result.stderr
    text = setup.read_text()
    assert text.startswith('# Our family mail server\nhostname = "mail.example.org"   # the MX name\n')
    assert 'domains = ["example.org", "example.net"]\n\n[smtpd]\n# be strict\n' in text
    assert load_config(setup).config.domains == ["example.org", "example.net"]
    assert (setup.parent / "dkim" / "example.net" / "selectors").exists()

    listing = run(setup, "domain", "list")
    assert listing.returncode == 0
    assert "example.org" in listing.stdout and "example.net" in listing.stdout

    cases = [
        (call("domain", "add", "example.net"), "example.net is already one of our domains"),
        (call("domain", "add", "bad_domain!"), "'bad_domain!' is not a domain name"),
        (call("domain", "remove", "example.org"),
         "example.org still has 2 user(s) and 2 alias(es): remove them first"),
        (call("domain", "remove", "nowhere.example"), "nowhere.example is not one of our domains"),
    ]  # fmt: skip
    for result, (_call, message) in zip(run_many(setup, *(c for c, _ in cases)), cases, strict=True):
        _refused(result, message)
    assert run(setup, "domain", "remove", "example.net").returncode == 0
    assert load_config(setup).config.domains == ["example.org"]


def test_domains_key_is_added_when_missing(tmp_path: Path) -> None:
    config = tmp_path / "kinmail.toml"
    config.write_text(
        '# nothing yet\nhostname = "mail.example.org"\n#domains = []\n\n[smtpd]\nhelo_required = true\n'
    )
    (tmp_path / "users").write_text("")
    assert run(config, "domain", "add", "example.org").returncode == 0
    assert config.read_text() == (
        '# nothing yet\nhostname = "mail.example.org"\n#domains = []\n\ndomains = ["example.org"]\n\n'
        "[smtpd]\nhelo_required = true\n"
    )


def test_user_add_passwd_quota_list_remove(setup: Path) -> None:
    users = setup.parent / "users"
    result = run(
        setup, "user", "add", "Bob@Example.org", "--password-stdin", "--quota", "2g", input="bob pässword\n"
    )
    assert result.returncode == 0, result.stderr
    text = users.read_text()
    assert text.startswith(USERS)  # comments, blank lines and other users untouched
    line = text.splitlines()[-1]
    address, stored, extra = line.split(":")
    assert address == "bob@example.org" and extra == "quota=2G"
    assert stored.startswith("{ARGON2ID}$argon2id$") and verify_password(stored, "bob pässword")
    assert stat.S_IMODE(users.stat().st_mode) == 0o600

    assert (
        run(setup, "user", "passwd", "carol@example.org", "--password-stdin", input="new-carol\n").returncode
        == 0
    )
    carol = next(line for line in users.read_text().splitlines() if line.startswith("carol@"))
    fields = carol.split(":")
    assert fields[0] == "carol@example.org" and verify_password(fields[1], "new-carol")
    assert fields[2:] == ["1000", "1000", "", "/home/carol", "", "userdb_quota_rule=*", "storage=1G"]

    assert run(setup, "user", "quota", "alice@example.org", "500M").returncode == 0
    directory = Directory.load(load_config(setup))
    alice = directory.users.get("alice@example.org")
    assert alice is not None and alice.quota == 500 * 1024**2

    listing, plain = run_many(setup, call("user", "list"), call("user", "list", "--plain"))
    assert listing.returncode == 0
    for expected in (
        "alice@example.org",
        "bob@example.org",
        "carol@example.org",
        "500M",
        "ARGON2ID",
        "postmaster@example.org",
    ):
        assert expected in listing.stdout
    assert plain.stdout == "alice@example.org\ncarol@example.org\nbob@example.org\n"

    assert run(setup, "user", "remove", "BOB@example.org").returncode == 0
    assert "bob@" not in users.read_text() and users.read_text().startswith(USERS.splitlines()[0])


def test_user_commands_refuse_bad_input_with_one_line(setup: Path) -> None:
    before = (setup.parent / "users").read_text()
    cases = [
        (call("user", "add", "not-an-address", "--password-stdin", input="x\n"),
         "'not-an-address' is not an address of the form user@domain"),
        (call("user", "add", "dan@example.com", "--password-stdin", input="x\n"),
         "unknown domain 'example.com': add it first with `kinmail domain add example.com`"),
        (call("user", "add", "ALICE@example.org", "--password-stdin", input="x\n"),
         "alice@example.org already exists (use `kinmail user passwd` to change the password)"),
        (call("user", "add", "dan@example.org", "--password-stdin", input="\n"), "the password is empty"),
        (call("user", "add", "dan@example.org", "--password-stdin", "--quota", "lots", input="x\n"),
         "'lots' is not a size such as 500M or 2G"),
        (call("user", "passwd", "nobody@example.org", "--password-stdin", input="x\n"),
         "no such user: nobody@example.org"),
        (call("user", "remove", "nobody@example.org"), "no such user: nobody@example.org"),
        (call("user", "remove", "carol@example.org"),
         "carol@example.org still receives mail for team@example.org: change those aliases first"
         " (`kinmail alias remove SOURCE TARGET`)"),
    ]  # fmt: skip
    for result, (_call, message) in zip(run_many(setup, *(c for c, _ in cases)), cases, strict=True):
        _refused(result, message)
    # Without a terminal (a real one: stdin is /dev/null here) nothing can ask for the password.
    _refused(run(setup, "user", "add", "dan@example.org"),
             "no terminal to ask for the password on: pass it with --password-stdin")  # fmt: skip
    assert (setup.parent / "users").read_text() == before


def test_alias_add_list_remove(setup: Path) -> None:
    aliases = setup.parent / "aliases"
    assert (
        run(setup, "alias", "add", "Sales@example.org", "team@example.org", "friend@far.example").returncode
        == 0
    )
    assert aliases.read_text() == ALIASES + "sales@example.org team@example.org, friend@far.example\n"
    # Adding to an existing (continued) entry rewrites just that entry, in place.
    assert run(setup, "alias", "add", "team@example.org", "boss@far.example").returncode == 0
    assert aliases.read_text() == (
        "# who gets what\npostmaster@example.org  alice@example.org\n"
        "team@example.org alice@example.org, carol@example.org, boss@far.example\n"
        "sales@example.org team@example.org, friend@far.example\n"
    )
    assert run(setup, "alias", "remove", "team@example.org", "boss@far.example").returncode == 0
    assert "team@example.org alice@example.org, carol@example.org\n" in aliases.read_text()
    _refused(run(setup, "alias", "remove", "team@example.org"),
             "refused, it would leave aliases:3: target team@example.org points nowhere (no such user or alias)")  # fmt: skip
    assert run(setup, "alias", "remove", "sales@example.org").returncode == 0
    assert run(setup, "alias", "add", "@example.org", "alice@example.org").returncode == 0
    listing = run(setup, "alias", "list")
    assert "team@example.org" in listing.stdout and "@example.org " in listing.stdout
    directory = Directory.load(load_config(setup))
    assert [r.address for r in directory.resolve("anyone@example.org") or []] == ["alice@example.org"]

    assert run(setup, "alias", "remove", "team@example.org").returncode == 0  # the catch-all takes it now
    assert run(setup, "alias", "remove", "@example.org").returncode == 0
    assert aliases.read_text() == "# who gets what\npostmaster@example.org  alice@example.org\n"

    cases = [
        (call("alias", "add", "x@example.org", "nobody@example.org"),
         "refused, it would leave aliases:3: target nobody@example.org points nowhere (no such user or alias)"),
        (call("alias", "add", "x@example.org", "x@example.org"),
         "refused, it would leave aliases:3: target x@example.org points nowhere (no such user or alias)"),
        (call("alias", "add", "x@elsewhere.example", "alice@example.org"),
         "unknown domain 'elsewhere.example': add it first with `kinmail domain add elsewhere.example`"),
        (call("alias", "add", "x@example.org", "alice"), "target 'alice' must be a full address (user@domain)"),
        (call("alias", "add", "postmaster@example.org", "alice@example.org"),
         "postmaster@example.org already goes to alice@example.org"),
        (call("alias", "remove", "nope@example.org"), "no such alias: nope@example.org"),
    ]  # fmt: skip
    for result, (_call, message) in zip(run_many(setup, *(c for c, _ in cases)), cases, strict=True):
        _refused(result, message)
    assert aliases.read_text() == "# who gets what\npostmaster@example.org  alice@example.org\n"
    Directory.load(load_config(setup))  # what was written is valid


def test_map_query_like_postmap(setup: Path, tmp_path: Path) -> None:
    (tmp_path / "virtual").write_text("@example.org catch\nuser@example.org exact\n")
    found, missing, inline, whole, exact, catch, bad = run_many(
        setup,
        call("map", "query", "cidr:client.cidr", "192.0.2.7"),
        call("map", "query", "cidr:client.cidr", "198.51.100.1"),
        call("map", "query", "inline:{ a=1, {b = two words} }", "B"),
        call("map", "query", "virtual", "user+x@example.org"),
        call("map", "query", "--address", "virtual", "user+x@example.org"),
        call("map", "query", "--address", "virtual", "other@example.org"),
        call("map", "query", "regexp:{ {/a(/ x} }", "a"),
    )
    assert (found.returncode, found.stdout) == (0, "REJECT\n")
    assert (missing.returncode, missing.stdout, missing.stderr) == (1, "", "")
    assert inline.stdout == "two words\n"
    assert whole.returncode == 1
    assert exact.stdout == "exact\n"
    assert catch.stdout == "catch\n"
    assert bad.returncode == 1 and "bad regular expression" in bad.stderr and "Traceback" not in bad.stderr
    # The same lookups in a process of their own give the same answers.
    alone = run(setup, "map", "query", "cidr:client.cidr", "192.0.2.7")
    assert (alone.returncode, alone.stdout) == (0, "REJECT\n")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    with KinmailServer(tmp_path_factory.mktemp("kinmail"), services=()) as server:
        yield server


def _wait_for(predicate, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_edits_tell_a_running_server_to_reload(running: KinmailServer) -> None:
    before = running.log().count("event=reload.done")
    result = running.kinmail("user", "add", "carol@example.test", "--password-stdin", input=b"carol-pw\n")
    assert result.returncode == 0, result.stderr
    assert "asked the running server" in result.stderr
    assert _wait_for(lambda: running.log().count("event=reload.done") == before + 1)
    assert "users=3" in running.log().splitlines()[-1] or "users=3" in running.log()
    result = running.kinmail("alias", "add", "info@example.test", "carol@example.test")
    assert result.returncode == 0, result.stderr
    assert _wait_for(lambda: running.log().count("event=reload.done") == before + 2)


def test_no_server_no_reload_message(setup: Path) -> None:
    result = run(setup, "alias", "add", "info@example.org", "alice@example.org")
    assert result.returncode == 0 and result.stderr == ""
    (setup.parent / "data" / "state").mkdir(parents=True)
    (setup.parent / "data" / "state" / "kinmail.pid").write_text("999999999\n")  # stale pid file
    result = run(setup, "alias", "remove", "info@example.org")
    assert result.returncode == 0 and result.stderr == ""
    # A stale pid file whose number another program has taken since: that program gets no SIGHUP.
    other = subprocess.Popen(["sleep", "60"])
    try:
        (setup.parent / "data" / "state" / "kinmail.pid").write_text(f"{other.pid}\n")
        result = run(setup, "alias", "add", "info@example.org", "alice@example.org")
        assert result.returncode == 0 and result.stderr == ""
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_concurrent_edits_are_not_lost(setup: Path) -> None:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kinmail",
                "--config",
                str(setup),
                "alias",
                "add",
                f"list{i}@example.org",
                "alice@example.org",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(6)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    text = (setup.parent / "aliases").read_text()
    assert text.startswith(ALIASES)
    assert all(f"list{i}@example.org alice@example.org\n" in text for i in range(6))


def _read_until(fd: int, marker: bytes, timeout: float = 30.0) -> bytes:
    import select

    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_user_add_on_a_terminal_asks_twice(setup: Path) -> None:
    import pty

    master, slave = pty.openpty()
    # A new session (no preexec_fn needed) whose first step makes the pty its controlling terminal, as a
    # login shell's would be, then runs kinmail: getpass reads from /dev/tty.
    become_tty = (
        "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            become_tty,
            "-m",
            "kinmail",
            "--config",
            str(setup),
            "user",
            "add",
            "dan@example.org",
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        assert b"Password:" in _read_until(master, b"Password:")
        os.write(master, b"first-try\n")
        assert b"Repeat for confirmation:" in _read_until(master, b"Repeat for confirmation:")
        os.write(master, b"different\n")
        assert b"do not match" in _read_until(master, b"Password:")  # asked again
        os.write(master, b"dan-secret\n")
        _read_until(master, b"Repeat for confirmation:")
        os.write(master, b"dan-secret\n")
        output = _read_until(master, b"added dan@example.org")
        assert proc.wait(timeout=60) == 0, output
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    line = (setup.parent / "users").read_text().splitlines()[-1]
    assert line.startswith("dan@example.org:{ARGON2ID}") and verify_password(line.split(":")[1], "dan-secret")
    assert b"dan-secret" not in output
