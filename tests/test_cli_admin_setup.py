"""`kinmail init` and `kinmail check` through subprocesses, as an admin runs them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

from kinmail.config.load import load_config
from kinmail.config.reference import sections, top_level_keys


def kinmail(config: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kinmail", "--config", str(config), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def test_init_writes_a_working_commented_setup(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "kinmail.toml"
    result = kinmail(
        config, "init", "--hostname", "mail.example.org", "--domain", "example.org", "--domain", "Example.NET"
    )
    assert result.returncode == 0, result.stderr
    folder = config.parent
    text = config.read_text()
    # Every key of the schema is shown; the ones init was given are set, the rest commented out.
    keys = [name for name, _ in top_level_keys()] + [
        f"{s}.{k}" for s, m in sections() for k in m.model_fields
    ]
    for key in keys:
        name = key.rpartition(".")[2]
        assert f"#{name} = " in text or f"\n{name} = " in text, key
    data = tomllib.loads(text)
    assert data["hostname"] == "mail.example.org"
    assert data["domains"] == ["example.org", "example.net"]
    assert data["data_dir"] == "data"
    assert set(data) == {"hostname", "data_dir", "domains", *(name for name, _ in sections())}
    assert all(data[name] == {} for name, _ in sections())
    loaded = load_config(config)
    assert loaded.data_dir == folder / "data"

    assert stat.S_IMODE((folder / "users").stat().st_mode) == 0o600
    assert all(line.startswith("#") for line in (folder / "users").read_text().splitlines())
    assert all(line.startswith("#") for line in (folder / "aliases").read_text().splitlines())
    assert all(line.startswith("#") for line in (folder / "sieve" / "global.sieve").read_text().splitlines())
    for sub in ("queue", "mail", "index", "sieve", "state", "log"):
        assert (folder / "data" / sub).is_dir()
    assert b"BEGIN CERTIFICATE" in (folder / "tls" / "cert.pem").read_bytes()
    assert stat.S_IMODE((folder / "tls" / "key.pem").stat().st_mode) == 0o600
    assert (folder / "dkim" / "example.org" / "selectors").exists()
    assert (folder / "dkim" / "example.net" / "selectors").exists()

    check = kinmail(config, "check")
    assert check.returncode == 0, check.stderr
    assert (
        check.stdout.count("\n") == 1 and "fine" in check.stdout and "2 domain(s), 0 user(s)" in check.stdout
    )

    again = kinmail(config, "init")
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_init_refuses_bad_names_and_unwritable_folders(tmp_path: Path) -> None:
    result = kinmail(
        tmp_path / "kinmail.toml", "init", "--hostname", "mail.example.org", "--domain", "not a domain"
    )
    assert result.returncode == 1
    assert result.stderr == "kinmail: --domain: 'not a domain' is not a domain name\n"
    assert not (tmp_path / "kinmail.toml").exists()
    # A folder that cannot be made (a file stands where it should be) is one line too, not a traceback.
    (tmp_path / "plain-file").write_text("")
    result = kinmail(
        tmp_path / "plain-file" / "etc" / "kinmail.toml", "init", "--hostname", "mail.example.org"
    )
    assert result.returncode == 1
    assert result.stderr == f"kinmail: cannot write {tmp_path / 'plain-file' / 'etc'}: Not a directory\n"


def test_check_reports_every_config_error_at_once(tmp_path: Path) -> None:
    config = tmp_path / "kinmail.toml"
    (tmp_path / "users").write_text("")
    config.write_text(
        """hostname = "mail.example.org"
domains = ["example.org"]
data_dir = "data"
colour = "blue"
[smtpd]
helo_required = "yes"
mynetworks = ["10.0.0.1/8"]
[listen]
smtp = ["localhost"]
"""
    )
    result = kinmail(config, "check")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[-1] == "4 problem(s) found"
    assert sorted(lines[:-1]) == [
        "kinmail.toml:colour: unknown key",
        "kinmail.toml:listen.smtp: item 1: 'localhost' has no :port",
        "kinmail.toml:smtpd.helo_required: expected true or false, got a string",
        "kinmail.toml:smtpd.mynetworks: item 1: '10.0.0.1/8' has host bits set; did you mean '10.0.0.0/8'?",
    ]
    # Users and aliases are checked too when the mistakes are elsewhere in kinmail.toml.
    (tmp_path / "users").write_text("alice@example.org:{PLAIN}pw\nbob@example.com:{PLAIN}pw\n")
    (tmp_path / "aliases").write_text("team@example.org nobody@example.org\n")
    result = kinmail(config, "check")
    lines = result.stderr.splitlines()
    assert lines[-1] == "6 problem(s) found"
    assert "users:2: domain 'example.com' of bob@example.com is not in domains" in lines
    assert "aliases:1: target nobody@example.org points nowhere (no such user or alias)" in lines
    config.write_text('hostname = "mail.example.org"\ndomains = ["example.org",\n')
    result = kinmail(config, "check")
    assert result.returncode == 1 and result.stderr.startswith("kinmail.toml:2: ")


def test_check_reports_users_aliases_maps_tls_and_sieve_problems_together(tmp_path: Path) -> None:
    config = tmp_path / "kinmail.toml"
    assert (
        kinmail(config, "init", "--hostname", "mail.example.org", "--domain", "example.org").returncode == 0
    )
    text = config.read_text().replace('#client_access = ""', 'client_access = "cidr:client.cidr"')
    config.write_text(text)
    (tmp_path / "client.cidr").write_text("192.0.2.0/24 REJECT\n10.1.1.1/8 OK\n")
    (tmp_path / "users").write_text(
        "alice@example.org:{PLAIN}pw\nbob@example.com:{PLAIN}pw\nalice@example.org:{PLAIN}x\n"
    )
    (tmp_path / "aliases").write_text(
        "postmaster@example.org alice@example.org\nsales@example.org nobody@example.org\n"
    )
    (tmp_path / "sieve" / "global.sieve").write_text(
        'require ["fileinto"];\nif header :contains "Subject" "x" {\n  fileinto "Junk"\n}\n'
    )
    (tmp_path / "tls" / "cert.pem").write_text("not a certificate\n")
    result = kinmail(config, "check")
    assert result.returncode == 1, result.stdout
    lines = result.stderr.splitlines()
    assert lines[-1] == f"{len(lines) - 1} problem(s) found"
    problems = "\n".join(lines[:-1])
    assert "users:2: domain 'example.com' of bob@example.com is not in domains" in problems
    assert "users:3: duplicate user alice@example.org (first on line 1)" in problems
    assert "aliases:2: target nobody@example.org points nowhere (no such user or alias)" in problems
    assert "client.cidr:2: non-null host address bits in '10.1.1.1/8'" in problems
    assert "kinmail.toml:tls.cert: " in problems
    assert "global.sieve:4:" in problems  # the missing ';' after fileinto
    assert "Traceback" not in result.stderr


def test_check_without_a_config_file(tmp_path: Path) -> None:
    result = kinmail(tmp_path / "nope.toml", "check")
    assert result.returncode == 1
    assert "nope.toml: cannot read: No such file or directory" in result.stderr
    assert os.listdir(tmp_path) == []


def test_check_names_an_expired_certificate(tmp_path: Path) -> None:
    from kinmail.core.tlscert import make_self_signed

    config = tmp_path / "kinmail.toml"
    assert (
        kinmail(config, "init", "--hostname", "mail.example.org", "--domain", "example.org").returncode == 0
    )
    make_self_signed("mail.example.org", tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem", days=0)
    result = kinmail(config, "check")
    assert result.returncode == 1
    assert result.stderr.startswith(f"kinmail.toml:tls.cert: {tmp_path / 'tls' / 'cert.pem'} expired on ")
