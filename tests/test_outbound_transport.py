"""The remote transport on its own: a real DNS server (tests/dnsserver.py) and fake remote MXes
(tests/fakemx.py, aiosmtpd on 127.0.0.x) on the wire; the transport is given a config and directory loaded
from files, as `kinmail serve` would load them. End-to-end tests through submission are in
test_outbound_e2e.py."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kinmail.config.directory import Directory
from kinmail.config.load import load_config
from kinmail.smtpclient.transport import DeliveryStatus, RemoteTransport
from tests.dnsserver import DnsServer
from tests.fakemx import FakeMX, pick_port

MX_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
MESSAGE = (
    b"From: alice@example.test\r\nTo: someone@remote.test\r\nSubject: hello\r\n"
    b"Message-ID: <t1@example.test>\r\n\r\nHello there.\r\n.leading dot\r\n"
)


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture(scope="module")
def mx_port() -> int:
    return pick_port(*MX_HOSTS)


@pytest.fixture(scope="module")
def primary(mx_port: int) -> Iterator[FakeMX]:
    with FakeMX(MX_HOSTS[0], mx_port) as mx:
        yield mx


@pytest.fixture(scope="module")
def secondary(mx_port: int) -> Iterator[FakeMX]:
    with FakeMX(MX_HOSTS[1], mx_port, tls=False) as mx:
        yield mx


@pytest.fixture(autouse=True)
def _fresh(primary: FakeMX, secondary: FakeMX) -> None:
    for mx in (primary, secondary):
        mx.reset()


def make_rt(tmp_path: Path, dns_server: DnsServer, port: int, **delivery: Any) -> Any:
    lines = [
        'hostname = "mail.example.test"',
        'data_dir = "data"',
        'domains = ["example.test"]',
        "[delivery]",
        f"remote_smtp_port = {port}",
        *(f'{k} = "{v}"' for k, v in delivery.items()),
        "[dns]",
        f'nameservers = ["{dns_server.address}"]',
        "timeout = 5.0",
    ]
    (tmp_path / "kinmail.toml").write_text("\n".join(lines) + "\n")
    (tmp_path / "users").write_text("")
    loaded = load_config(tmp_path / "kinmail.toml")
    return types.SimpleNamespace(config=loaded.config, loaded=loaded, directory=Directory.load(loaded))


@pytest.fixture
async def transport(tmp_path: Path, dns_server: DnsServer, mx_port: int) -> AsyncIterator[RemoteTransport]:
    rt = make_rt(tmp_path, dns_server, mx_port)
    transport = RemoteTransport(rt)
    yield transport
    await transport.aclose()


def message_file(tmp_path: Path, data: bytes = MESSAGE) -> Path:
    path = tmp_path / "message.eml"
    path.write_bytes(data)
    return path


async def test_delivers_to_the_mx_over_starttls(
    transport: RemoteTransport, dns_server: DnsServer, primary: FakeMX, tmp_path: Path
) -> None:
    dns_server.set("remote.test", "MX", ["10 mx1.remote.test."])
    dns_server.set("mx1.remote.test", "A", [MX_HOSTS[0]])
    results = await transport.deliver(
        "alice@example.test", ["someone@remote.test"], message_file(tmp_path), queue_id="Q1"
    )
    assert [(r.rcpt, r.status, r.code) for r in results] == [
        ("someone@remote.test", DeliveryStatus.DELIVERED, 250)
    ]
    assert results[0].remote_host == "mx1.remote.test"
    [got] = primary.messages
    assert got.mail_from == "alice@example.test"
    assert got.rcpt_tos == ["someone@remote.test"]
    assert got.tls is True
    assert got.helo == "mail.example.test"
    assert got.data.replace(b"\r\n", b"\n") == MESSAGE.replace(b"\r\n", b"\n")


async def test_mx_preference_order_and_fallback_when_the_best_is_down(
    transport: RemoteTransport, dns_server: DnsServer, primary: FakeMX, secondary: FakeMX, tmp_path: Path
) -> None:
    # 127.0.0.4 listens nowhere: the preferred MX is down, the next one gets the mail.
    dns_server.set(
        "fallback.test", "MX", ["5 down.fallback.test.", "20 mx2.fallback.test.", "30 mx1.fallback.test."]
    )
    dns_server.set("down.fallback.test", "A", [MX_HOSTS[2]])
    dns_server.set("mx2.fallback.test", "A", [MX_HOSTS[1]])
    dns_server.set("mx1.fallback.test", "A", [MX_HOSTS[0]])
    results = await transport.deliver(
        "alice@example.test", ["x@fallback.test"], message_file(tmp_path), queue_id="Q2"
    )
    assert results[0].status == DeliveryStatus.DELIVERED
    assert results[0].remote_host == "mx2.fallback.test"
    assert len(secondary.messages) == 1 and primary.messages == []
    assert secondary.messages[0].tls is False  # no STARTTLS offered: plain text, as Postfix's "may"


async def test_implicit_mx_uses_the_address_records(
    transport: RemoteTransport, dns_server: DnsServer, primary: FakeMX, tmp_path: Path
) -> None:
    dns_server.set("bare.test", "A", [MX_HOSTS[0]])
    results = await transport.deliver(
        "alice@example.test", ["x@bare.test"], message_file(tmp_path), queue_id="Q3"
    )
    assert results[0].status == DeliveryStatus.DELIVERED
    assert primary.messages[0].rcpt_tos == ["x@bare.test"]


async def test_null_mx_fails_permanently_without_connecting(
    transport: RemoteTransport, dns_server: DnsServer, primary: FakeMX, tmp_path: Path
) -> None:
    dns_server.set("nomail.test", "MX", ["0 ."])
    dns_server.set("nomail.test", "A", [MX_HOSTS[0]])
    results = await transport.deliver(
        "alice@example.test", ["x@nomail.test"], message_file(tmp_path), queue_id="Q4"
    )
    assert results[0].status == DeliveryStatus.PERMANENT
    assert results[0].code == 556 and results[0].text.startswith("5.1.10 ")
    assert primary.sessions == 0


async def test_unknown_domain_bounces_and_dns_failure_defers(
    transport: RemoteTransport, dns_server: DnsServer, tmp_path: Path
) -> None:
    [gone] = await transport.deliver(
        "alice@example.test", ["x@gone.test"], message_file(tmp_path), queue_id="Q5"
    )
    assert gone.status == DeliveryStatus.PERMANENT and gone.text.startswith("5.1.2 ")
    dns_server.servfail("broken.test")
    [broken] = await transport.deliver(
        "alice@example.test", ["x@broken.test"], message_file(tmp_path), queue_id="Q6"
    )
    assert broken.status == DeliveryStatus.TEMPORARY and broken.text.startswith("4.4.3 ")


async def test_per_recipient_results(
    transport: RemoteTransport, dns_server: DnsServer, primary: FakeMX, tmp_path: Path
) -> None:
    dns_server.set("mixed.test", "MX", ["10 mx1.mixed.test."])
    dns_server.set("mx1.mixed.test", "A", [MX_HOSTS[0]])
    primary.rcpt_replies["nobody@mixed.test"] = "550 5.1.1 no such user here"
    primary.rcpt_replies["full@mixed.test"] = "452 4.2.2 mailbox full"
    rcpts = ["a@mixed.test", "nobody@mixed.test", "full@mixed.test", "b@mixed.test"]
    results = await transport.deliver("alice@example.test", rcpts, message_file(tmp_path), queue_id="Q7")
    assert [(r.rcpt, r.status.value, r.code) for r in results] == [
        ("a@mixed.test", "delivered", 250),
        ("nobody@mixed.test", "permanent", 550),
        ("full@mixed.test", "temporary", 452),
        ("b@mixed.test", "delivered", 250),
    ]
    assert results[1].text == "5.1.1 no such user here"
    assert primary.messages[0].rcpt_tos == ["a@mixed.test", "b@mixed.test"]


async def test_data_replies_4xx_temporary_5xx_permanent(
    transport: RemoteTransport, dns_server: DnsServer, primary: FakeMX, tmp_path: Path
) -> None:
    dns_server.set("data.test", "MX", ["10 mx1.data.test."])
    dns_server.set("mx1.data.test", "A", [MX_HOSTS[0]])
    primary.fail_next("data", "451 4.3.0 try again later")
    [first] = await transport.deliver(
        "alice@example.test", ["x@data.test"], message_file(tmp_path), queue_id="Q8"
    )
    assert (first.status, first.code, first.text) == (DeliveryStatus.TEMPORARY, 451, "4.3.0 try again later")
    primary.fail_next("data", "554 5.7.1 content rejected")
    [second] = await transport.deliver(
        "alice@example.test", ["x@data.test"], message_file(tmp_path), queue_id="Q9"
    )
    assert (second.status, second.code) == (DeliveryStatus.PERMANENT, 554)
    [third] = await transport.deliver(
        "alice@example.test", ["x@data.test"], message_file(tmp_path), queue_id="QA"
    )
    assert third.status == DeliveryStatus.DELIVERED
    primary.fail_next("mail", "550 5.7.1 sender refused")
    [fourth] = await transport.deliver(
        "alice@example.test", ["x@data.test"], message_file(tmp_path), queue_id="QB"
    )
    assert (fourth.status, fourth.code) == (DeliveryStatus.PERMANENT, 550)


async def test_one_connection_carries_several_messages(
    transport: RemoteTransport, dns_server: DnsServer, primary: FakeMX, tmp_path: Path
) -> None:
    dns_server.set("reuse.test", "MX", ["10 mx1.reuse.test."])
    dns_server.set("mx1.reuse.test", "A", [MX_HOSTS[0]])
    for n in range(3):
        [result] = await transport.deliver(
            "alice@example.test", [f"r{n}@reuse.test"], message_file(tmp_path), queue_id=f"QR{n}"
        )
        assert result.status == DeliveryStatus.DELIVERED
    assert len(primary.messages) == 3
    assert primary.sessions == 1
    assert transport.pool.reused == 2


async def test_unreachable_host_is_temporary(
    transport: RemoteTransport, dns_server: DnsServer, tmp_path: Path
) -> None:
    dns_server.set("down.test", "MX", ["10 mx.down.test."])
    dns_server.set("mx.down.test", "A", [MX_HOSTS[2]])
    [result] = await transport.deliver(
        "alice@example.test", ["x@down.test"], message_file(tmp_path), queue_id="QC"
    )
    assert result.status == DeliveryStatus.TEMPORARY
    assert result.text.startswith("4.4.1 ")


async def test_own_domains_are_never_sent_out(
    transport: RemoteTransport, dns_server: DnsServer, primary: FakeMX, tmp_path: Path
) -> None:
    dns_server.set("example.test", "MX", ["10 mx1.remote.test."])
    [result] = await transport.deliver(
        "bob@example.test", ["alice@example.test"], message_file(tmp_path), queue_id="QD"
    )
    assert result.status == DeliveryStatus.TEMPORARY
    assert primary.sessions == 0


async def test_utf8_address_goes_with_smtputf8(
    transport: RemoteTransport, dns_server: DnsServer, primary: FakeMX, tmp_path: Path
) -> None:
    dns_server.set("utf8.test", "MX", ["10 mx1.utf8.test."])
    dns_server.set("mx1.utf8.test", "A", [MX_HOSTS[0]])
    [result] = await transport.deliver(
        "alice@example.test", ["jörg@utf8.test"], message_file(tmp_path), queue_id="QE"
    )
    assert result.status == DeliveryStatus.DELIVERED
    assert "SMTPUTF8" in primary.messages[0].mail_options


async def test_relayhost_with_auth_and_no_mx_lookup(tmp_path: Path, dns_server: DnsServer) -> None:
    port = pick_port("127.0.0.5")
    (tmp_path / "relay_passwd").write_text(f"[127.0.0.5]:{port} relayuser:relay-pw-1\n")
    rt = make_rt(
        tmp_path,
        dns_server,
        25,
        relayhost=f"[127.0.0.5]:{port}",
        relayhost_credentials="texthash:relay_passwd",
    )
    transport = RemoteTransport(rt)
    queries_before = len(dns_server.queries)
    with FakeMX("127.0.0.5", port, users={"relayuser": "relay-pw-1"}) as relay:
        try:
            [result] = await transport.deliver(
                "alice@example.test", ["x@anywhere.test"], message_file(tmp_path), queue_id="QF"
            )
        finally:
            await transport.aclose()
        assert result.status == DeliveryStatus.DELIVERED
        [got] = relay.messages
        assert got.auth_user == "relayuser" and got.tls is True
    assert dns_server.queries[queries_before:] == []


async def test_relayhost_with_wrong_password_is_temporary(tmp_path: Path, dns_server: DnsServer) -> None:
    port = pick_port("127.0.0.5")
    (tmp_path / "relay_passwd").write_text(f"[127.0.0.5]:{port} relayuser:wrong\n")
    rt = make_rt(
        tmp_path,
        dns_server,
        25,
        relayhost=f"[127.0.0.5]:{port}",
        relayhost_credentials="texthash:relay_passwd",
    )
    transport = RemoteTransport(rt)
    with FakeMX("127.0.0.5", port, users={"relayuser": "relay-pw-1"}) as relay:
        try:
            [result] = await transport.deliver(
                "alice@example.test", ["x@anywhere.test"], message_file(tmp_path), queue_id="QG"
            )
        finally:
            await transport.aclose()
        assert result.status == DeliveryStatus.TEMPORARY
        assert "authentication" in result.text
        assert relay.messages == []


async def test_recipients_of_two_domains_each_go_to_their_own_mx(
    transport: RemoteTransport, dns_server: DnsServer, primary: FakeMX, secondary: FakeMX, tmp_path: Path
) -> None:
    dns_server.set("one.test", "MX", ["10 mx.one.test."])
    dns_server.set("mx.one.test", "A", [MX_HOSTS[0]])
    dns_server.set("two.test", "MX", ["10 mx.two.test."])
    dns_server.set("mx.two.test", "A", [MX_HOSTS[1]])
    results = await transport.deliver(
        "alice@example.test", ["a@one.test", "b@two.test"], message_file(tmp_path), queue_id="QH"
    )
    assert [(r.rcpt, r.status.value, r.remote_host) for r in results] == [
        ("a@one.test", "delivered", "mx.one.test"),
        ("b@two.test", "delivered", "mx.two.test"),
    ]
    assert primary.messages[0].rcpt_tos == ["a@one.test"]
    assert secondary.messages[0].rcpt_tos == ["b@two.test"]


async def test_ipv6_only_mx(tmp_path: Path, dns_server: DnsServer) -> None:
    port = pick_port("::1")
    dns_server.set("v6.test", "MX", ["10 mx.v6.test."])
    dns_server.set("mx.v6.test", "AAAA", ["::1"])
    transport = RemoteTransport(make_rt(tmp_path, dns_server, port))
    with FakeMX("::1", port) as mx:
        try:
            [result] = await transport.deliver(
                "alice@example.test", ["x@v6.test"], message_file(tmp_path), queue_id="QI"
            )
        finally:
            await transport.aclose()
        assert result.status == DeliveryStatus.DELIVERED
        assert mx.messages[0].tls is True


async def test_concurrent_deliveries_share_the_connection_cache(
    transport: RemoteTransport, dns_server: DnsServer, primary: FakeMX, tmp_path: Path
) -> None:
    dns_server.set("busy.test", "MX", ["10 mx1.busy.test."])
    dns_server.set("mx1.busy.test", "A", [MX_HOSTS[0]])
    path = message_file(tmp_path)

    async def one(n: int) -> DeliveryStatus:
        [result] = await transport.deliver("alice@example.test", [f"c{n}@busy.test"], path, queue_id=f"QC{n}")
        return result.status

    first = await asyncio.gather(*(one(n) for n in range(8)))
    opened = primary.sessions
    second = await asyncio.gather(*(one(n) for n in range(8, 16)))
    assert set(first) | set(second) == {DeliveryStatus.DELIVERED}
    assert len(primary.messages) == 16
    assert 1 <= opened <= 8
    assert primary.sessions == opened  # the second wave used only cached connections
    assert transport.pool.idle_count() == opened


async def test_relayhost_we_cannot_log_in_to_defers_instead_of_bouncing(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    port = pick_port("127.0.0.5")
    (tmp_path / "relay_passwd").write_text(f"[127.0.0.5]:{port} relayuser:relay-pw-1\n")
    rt = make_rt(
        tmp_path,
        dns_server,
        25,
        relayhost=f"[127.0.0.5]:{port}",
        relayhost_credentials="texthash:relay_passwd",
    )
    transport = RemoteTransport(rt)
    # No TLS on the relay, so it never offers AUTH, and answers MAIL with 530 5.7.0.
    with FakeMX("127.0.0.5", port, tls=False, users={"relayuser": "relay-pw-1"}) as relay:
        try:
            [result] = await transport.deliver(
                "alice@example.test", ["x@anywhere.test"], message_file(tmp_path), queue_id="QJ"
            )
        finally:
            await transport.aclose()
        assert result.status == DeliveryStatus.TEMPORARY
        assert result.text.startswith("4.7.0 not authenticated")
        assert relay.messages == []
