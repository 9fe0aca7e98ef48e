"""Outbound mail end to end: real clients (smtplib, swaks, msmtp) submit to a real `kinmail serve` over
STARTTLS (587) and implicit TLS (465); the server finds the remote MX through a DNS server the test runs
(tests/dnsserver.py) and delivers to a fake MX (tests/fakemx.py, aiosmtpd on 127.0.0.2) at
`[delivery] remote_smtp_port`.

Checked: delivery, DKIM signatures that verify against the records `kinmail dns` printed, no trace of the
submitting client (its 127.0.0.x address or HELO) in the delivered headers, a 4xx and then success when the
queue's test clock (KINMAIL_TEST_CLOCK) moves past the retry time or on `kinmail queue flush`, a DSN (multipart/report) in the sender's
INBOX for a 5xx and for a null-MX domain, and a relayhost with AUTH.
"""

from __future__ import annotations

import email
import email.policy
import os
import smtplib
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import dns.rdatatype
import dns.rrset
import pytest

from kinmail.dns.resolver import Resolver
from kinmail.mailauth.dkim import verify_message
from kinmail.mailauth.dkimkeys import create_keys
from tests.dnsserver import DnsServer
from tests.fakemx import FakeMX, Received, pick_port
from tests.serverctl import USERS, KinmailServer

MX_ADDRESS = "127.0.0.2"
CLIENT_ADDRESS = "127.0.0.9"  # the submitting client connects from here; it must not leak into headers
CLIENT_HELO = "alices-laptop.home.invalid"
ALICE = "alice@example.test"
SERVICES = ("smtp", "submission", "submissions", "imap")


def _tls_client() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def zone_rrsets(text: str) -> list[dns.rrset.RRset]:
    out = []
    for line in text.splitlines():
        if line.strip() and not line.startswith(";"):
            name, ttl, klass, rtype, value = line.split(None, 4)
            out.append(dns.rrset.from_text(name, int(ttl), klass, rtype, value))
    return out


class Env:
    """The module's shared world: DNS, the fake MX, the server, the test clock."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dns = DnsServer().start()
        self.port = pick_port(MX_ADDRESS)
        self.mx = FakeMX(MX_ADDRESS, self.port).start()
        self.clock_file = root / "clock"
        self.clock_file.write_text("0")
        self.server = KinmailServer(
            root / "kinmail",
            services=SERVICES,
            sections={
                "dns": {"nameservers": [self.dns.address], "timeout": 5.0},
                "delivery": {"remote_smtp_port": self.port},
            },
        )
        for domain in self.server.domains:  # what `kinmail init` / `kinmail domain add` do
            create_keys(self.server.root / "dkim", domain)
        self.dns.set("remote.test", "MX", ["10 mx1.remote.test."])
        self.dns.set("mx1.remote.test", "A", [MX_ADDRESS])
        self.dns.set("nullmx.test", "MX", ["0 ."])
        self.published: dict[str, list[str]] = {}

    def start(self) -> None:
        os.environ["KINMAIL_TEST_CLOCK"] = str(self.clock_file)
        try:
            self.server.start()
        finally:
            del os.environ["KINMAIL_TEST_CLOCK"]

    def advance_clock(self, seconds: float) -> None:
        offset = float(self.clock_file.read_text() or 0) + seconds
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(str(offset))
        tmp.replace(self.clock_file)

    def publish_dns_from_kinmail(self) -> None:
        """Publish what `kinmail dns --zone` prints, as a domain owner would."""
        result = self.server.kinmail("dns", "--zone")
        assert result.returncode == 0, result.stderr
        for rrset in zone_rrsets(result.stdout):
            if rrset.rdtype == dns.rdatatype.TXT:
                values = [b"".join(rd.strings).decode() for rd in rrset]
                self.dns.set(rrset.name.to_text(), "TXT", values)
                self.published[rrset.name.to_text().rstrip(".")] = values

    def close(self) -> None:
        self.server.stop()
        self.mx.stop()
        self.dns.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    world = Env(tmp_path_factory.mktemp("outbound"))
    try:
        world.start()
        world.publish_dns_from_kinmail()
        yield world
    finally:
        world.close()


@pytest.fixture(autouse=True)
def _reset_mx(env: Env) -> None:
    env.mx.reset()


def make_message(subject: str, to: str, sender: str = ALICE) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Alice <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["X-Originating-IP"] = f"[{CLIENT_ADDRESS}]"
    msg.set_content(f"{subject}\n\nA line of text.\n")
    return msg


def submit_smtplib(env: Env, msg: EmailMessage, rcpts: list[str], *, implicit_tls: bool = False) -> None:
    if implicit_tls:
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            "127.0.0.1",
            env.server.port("submissions"),
            local_hostname=CLIENT_HELO,
            source_address=(CLIENT_ADDRESS, 0),
            context=_tls_client(),
            timeout=30,
        )
    else:
        client = smtplib.SMTP(
            "127.0.0.1",
            env.server.port("submission"),
            local_hostname=CLIENT_HELO,
            source_address=(CLIENT_ADDRESS, 0),
            timeout=30,
        )
        client.starttls(context=_tls_client())
    with client:
        client.login(ALICE, USERS[ALICE])
        client.send_message(msg, from_addr=ALICE, to_addrs=rcpts)


def headers_of(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[:end]


def arrived(env: Env, subject: str) -> Received:
    env.mx.wait_until(lambda: any(subject.encode() in m.data for m in env.mx.messages), what=subject)
    return next(m for m in env.mx.messages if subject.encode() in m.data)


def inbox_messages(env: Env, address: str) -> list[email.message.EmailMessage]:
    out = []
    maildir = env.server.maildir(address)
    for sub in ("new", "cur"):
        folder = maildir / sub
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
                assert isinstance(parsed, email.message.EmailMessage)
                out.append(parsed)
    return out


def wait_for_dsn(env: Env, about: str) -> email.message.EmailMessage:
    def find() -> email.message.EmailMessage | None:
        for msg in inbox_messages(env, ALICE):
            if msg.get_content_type() == "multipart/report" and about in msg.as_string():
                return msg
        return None

    wait_until(lambda: find() is not None, f"a DSN about {about} in {ALICE}'s INBOX")
    found = find()
    assert found is not None
    return found


# --- delivery, DKIM, privacy ---------------------------------------------------------------------------
async def test_smtplib_starttls_delivery_signed_and_private(env: Env) -> None:
    submit_smtplib(
        env, make_message("e2e starttls", "Someone <someone@remote.test>"), ["someone@remote.test"]
    )
    got = arrived(env, "e2e starttls")
    assert got.mail_from == ALICE
    assert got.rcpt_tos == ["someone@remote.test"]
    assert got.tls is True  # our server used STARTTLS to the MX
    assert got.helo == "mail.example.test"
    head = headers_of(got.data)
    assert CLIENT_ADDRESS.encode() not in got.data
    assert CLIENT_HELO.encode() not in got.data
    assert b"X-Originating-IP" not in head
    # Both signatures verify against the records `kinmail dns` printed (published in the test DNS).
    results = await verify_message(got.data, Resolver([env.dns.address], 5.0))
    assert [(r.domain, r.algorithm, r.ok) for r in results] == [
        ("example.test", "rsa-sha256", True),
        ("example.test", "ed25519-sha256", True),
    ]
    selectors = {f"{r.selector}._domainkey.example.test" for r in results}
    assert selectors <= set(env.published)


async def test_smtplib_implicit_tls_delivery(env: Env) -> None:
    submit_smtplib(env, make_message("e2e implicit", "x@remote.test"), ["x@remote.test"], implicit_tls=True)
    got = arrived(env, "e2e implicit")
    assert CLIENT_ADDRESS.encode() not in got.data
    results = await verify_message(got.data, Resolver([env.dns.address], 5.0))
    assert [r.ok for r in results] == [True, True]


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_swaks_submits(env: Env, mode: str) -> None:
    subject = f"e2e swaks {mode}"
    port = env.server.port("submission" if mode == "starttls" else "submissions")
    tls = ["--tls"] if mode == "starttls" else ["--tls-on-connect"]
    result = subprocess.run(
        [
            "swaks",
            "--server", f"127.0.0.1:{port}",
            *tls,
            "--local-interface", CLIENT_ADDRESS,
            "--helo", CLIENT_HELO,
            "--auth", "PLAIN",
            "--auth-user", ALICE,
            "--auth-password", USERS[ALICE],
            "--from", ALICE,
            "--to", "swaks@remote.test",
            "--header", f"Subject: {subject}",
            "--header", f"From: {ALICE}",
            "--body", "sent by swaks",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    got = arrived(env, subject)
    assert got.rcpt_tos == ["swaks@remote.test"]
    assert CLIENT_ADDRESS.encode() not in got.data and CLIENT_HELO.encode() not in got.data


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_msmtp_submits(env: Env, mode: str, tmp_path: Path) -> None:
    subject = f"e2e msmtp {mode}"
    port = env.server.port("submission" if mode == "starttls" else "submissions")
    config = tmp_path / "msmtprc"
    config.write_text(
        "defaults\n"
        "auth on\n"
        "tls on\n"
        "tls_certcheck off\n"
        f"tls_starttls {'on' if mode == 'starttls' else 'off'}\n"
        f"source_ip {CLIENT_ADDRESS}\n"
        f"domain {CLIENT_HELO}\n"
        "account kinmail\n"
        "host 127.0.0.1\n"
        f"port {port}\n"
        f"from {ALICE}\n"
        f"user {ALICE}\n"
        f"password {USERS[ALICE]}\n"
        "account default : kinmail\n"
    )
    config.chmod(0o600)
    message = f"From: {ALICE}\nTo: msmtp@remote.test\nSubject: {subject}\n\nsent by msmtp\n"
    result = subprocess.run(
        ["msmtp", "-C", str(config), "msmtp@remote.test"],
        input=message,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    got = arrived(env, subject)
    assert got.rcpt_tos == ["msmtp@remote.test"]
    assert CLIENT_ADDRESS.encode() not in got.data and CLIENT_HELO.encode() not in got.data


def test_one_connection_carries_several_messages(env: Env) -> None:
    for n in range(3):
        submit_smtplib(env, make_message(f"e2e reuse {n}", f"r{n}@remote.test"), [f"r{n}@remote.test"])
        arrived(env, f"e2e reuse {n}")
        # The transport logs its result after the connection went back to its cache.
        wait_until(
            lambda n=n: f"rcpt=r{n}@remote.test status=delivered" in env.server.log(), f"result for r{n}"
        )
    assert len(env.mx.messages) == 3
    assert env.mx.sessions == 1  # the cached connection carried all three (RSET between)


# --- retries and bounces -------------------------------------------------------------------------------
def test_temporary_failure_then_success_after_the_retry_time(env: Env) -> None:
    env.mx.fail_next("data", "451 4.3.0 greylisted, try again later")
    submit_smtplib(env, make_message("e2e retry", "retry@remote.test"), ["retry@remote.test"])
    env.mx.wait_until(lambda: env.mx.transactions >= 1, what="the first attempt")
    assert env.mx.messages == []
    # No sleeping: move the queue's clock past the first backoff (minimal_backoff_time, 5 minutes).
    env.advance_clock(6 * 60)
    got = arrived(env, "e2e retry")
    assert got.rcpt_tos == ["retry@remote.test"]
    assert env.mx.transactions == 2


def test_temporary_failure_then_success_after_queue_flush(env: Env) -> None:
    env.mx.fail_next("rcpt", "450 4.2.1 mailbox busy")
    submit_smtplib(env, make_message("e2e flush", "flush@remote.test"), ["flush@remote.test"])
    env.mx.wait_until(lambda: env.mx.transactions >= 1, what="the first attempt")
    wait_until(lambda: "rcpt=flush@remote.test status=temporary" in env.server.log(), "the deferral")
    result = env.server.kinmail("queue", "flush")
    assert result.returncode == 0, result.stderr
    got = arrived(env, "e2e flush")
    assert got.rcpt_tos == ["flush@remote.test"]


def test_permanent_failure_bounces_to_the_sender_inbox(env: Env) -> None:
    env.mx.rcpt_replies["nobody@remote.test"] = "550 5.1.1 no such user here"
    submit_smtplib(
        env,
        make_message("e2e bounce", "nobody@remote.test, ok@remote.test"),
        ["nobody@remote.test", "ok@remote.test"],
    )
    got = arrived(env, "e2e bounce")
    assert got.rcpt_tos == ["ok@remote.test"]
    dsn = wait_for_dsn(env, "nobody@remote.test")
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "5.1.1" in text and "nobody@remote.test" in text
    assert "ok@remote.test" not in text


def test_null_mx_bounces_at_once(env: Env) -> None:
    submit_smtplib(env, make_message("e2e nullmx", "x@nullmx.test"), ["x@nullmx.test"])
    dsn = wait_for_dsn(env, "x@nullmx.test")
    assert dsn.get_param("report-type") == "delivery-status"
    assert "5.1.10" in dsn.as_string()
    assert env.mx.transactions == 0


# --- relayhost -----------------------------------------------------------------------------------------
def test_relayhost_with_auth(tmp_path: Path, env: Env) -> None:
    relay_address = "127.0.0.6"
    port = pick_port(relay_address)
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "relay_passwd").write_text(f"[{relay_address}]:{port} smarthost-user:smarthost-pw\n")
    server = KinmailServer(
        tmp_path / "srv",
        services=("submission",),
        sections={
            "dns": {"nameservers": [env.dns.address], "timeout": 5.0},
            "delivery": {
                "relayhost": f"[{relay_address}]:{port}",
                "relayhost_credentials": "texthash:relay_passwd",
                "remote_smtp_port": env.port,
            },
        },
    )
    with FakeMX(relay_address, port, users={"smarthost-user": "smarthost-pw"}) as relay, server:
        client = smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=30)
        with client:
            client.starttls(context=_tls_client())
            client.login(ALICE, USERS[ALICE])
            client.send_message(make_message("e2e relayhost", "someone@remote.test"))
        [got] = relay.wait_for(1)
        assert got.auth_user == "smarthost-user"
        assert got.tls is True
        assert got.rcpt_tos == ["someone@remote.test"]
    assert env.mx.messages == []  # the MX of remote.test was not used
