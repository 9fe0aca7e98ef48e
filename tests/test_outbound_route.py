"""Routing and session corner cases of outbound delivery: relayhost syntax, MX ordering (RFC 5321 §5.1),
our own host among the MXes, a refusing greeting, HELO fallback, a broken STARTTLS (plain-text fallback as
Postfix's "may"), and a message larger than the remote's SIZE."""

from __future__ import annotations

import random
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kinmail.config.directory import Directory
from kinmail.config.load import load_config
from kinmail.dns.resolver import MxRecord, Resolver
from kinmail.smtpclient.route import RouteError, find_hops, order_mx, parse_relayhost
from kinmail.smtpclient.transport import DeliveryStatus, DsnRequest, RemoteTransport
from tests.dnsserver import DnsServer
from tests.fakemx import FakeMX, ScriptedMX, pick_port

HOSTS = ("127.0.0.12", "127.0.0.13")
MESSAGE = b"From: alice@example.test\r\nTo: x@remote.test\r\nSubject: corner\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def make_rt(tmp_path: Path, dns_server: DnsServer, port: int) -> Any:
    (tmp_path / "kinmail.toml").write_text(
        'hostname = "mail.example.test"\ndata_dir = "data"\ndomains = ["example.test"]\n'
        f"[delivery]\nremote_smtp_port = {port}\n"
        f'[dns]\nnameservers = ["{dns_server.address}"]\ntimeout = 5.0\n'
    )
    (tmp_path / "users").write_text("")
    loaded = load_config(tmp_path / "kinmail.toml")
    return types.SimpleNamespace(config=loaded.config, loaded=loaded, directory=Directory.load(loaded))


def test_parse_relayhost() -> None:
    r = parse_relayhost("[smtp.provider.test]:587")
    assert r is not None and (r.host, r.port, r.bracketed) == ("smtp.provider.test", 587, True)
    r = parse_relayhost("[192.0.2.1]")
    assert r is not None and (r.host, r.port, r.bracketed) == ("192.0.2.1", 25, True)
    r = parse_relayhost("relay.provider.test:2525")
    assert r is not None and (r.host, r.port, r.bracketed) == ("relay.provider.test", 2525, False)
    assert parse_relayhost("  ") is None
    for bad in ("[host", "[host]x", "host:port", "[host]:0", ":25"):
        with pytest.raises(ValueError):
            parse_relayhost(bad)


@settings(deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 1000)), min_size=1, max_size=12, unique_by=lambda t: t[1]
    )
)
def test_order_mx_sorts_by_preference_and_keeps_every_host(pairs: list[tuple[int, int]]) -> None:
    records = [MxRecord(pref, f"mx{n}.test") for pref, n in pairs]
    ordered = order_mx(records, random.Random(1))
    assert sorted(ordered) == sorted(records)
    assert [r.preference for r in ordered] == sorted(r.preference for r in records)


def test_order_mx_shuffles_equal_preferences() -> None:
    records = [MxRecord(10, f"mx{n}.test") for n in range(4)]
    firsts = {order_mx(records, random.Random(seed))[0].exchange for seed in range(40)}
    assert len(firsts) > 1


async def test_our_own_host_among_the_mx_hosts(dns_server: DnsServer) -> None:
    dns_server.set("ours.test", "MX", ["10 better.ours.test.", "20 mail.example.test."])
    dns_server.set("better.ours.test", "A", ["192.0.2.7"])
    dns_server.set("mail.example.test", "A", ["192.0.2.8"])
    resolver = Resolver([dns_server.address], 5.0)
    hops = await find_hops(resolver, "ours.test", port=25, relayhost="", our_hostname="mail.example.test")
    assert [h.name for h in hops] == ["better.ours.test"]
    dns_server.set("loop.test", "MX", ["10 mail.example.test."])
    with pytest.raises(RouteError) as info:
        await find_hops(resolver, "loop.test", port=25, relayhost="", our_hostname="mail.example.test")
    assert info.value.permanent and info.value.text.startswith("5.4.6 ")


async def test_bad_relayhost_defers_instead_of_bouncing(dns_server: DnsServer) -> None:
    resolver = Resolver([dns_server.address], 5.0)
    for relayhost in ("[nowhere.relay.test]:587", "nowhere.relay.test", "[broken"):
        with pytest.raises(RouteError) as info:
            await find_hops(
                resolver, "x.test", port=25, relayhost=relayhost, our_hostname="mail.example.test"
            )
        assert not info.value.permanent


async def test_refusing_greeting_moves_to_the_next_mx(tmp_path: Path, dns_server: DnsServer) -> None:
    port = pick_port(*HOSTS)
    dns_server.set("greet.test", "MX", ["10 a.greet.test.", "20 b.greet.test."])
    dns_server.set("a.greet.test", "A", [HOSTS[0]])
    dns_server.set("b.greet.test", "A", [HOSTS[1]])
    transport = RemoteTransport(make_rt(tmp_path, dns_server, port))
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    async with (
        ScriptedMX(HOSTS[0], port, greeting="554 5.7.1 go away") as refusing,
        ScriptedMX(HOSTS[1], port, ehlo="502 5.5.1 EHLO not implemented") as old_fashioned,
    ):
        [result] = await transport.deliver(
            "alice@example.test", ["x@greet.test"], tmp_path / "m.eml", queue_id="R1"
        )
        await transport.aclose()
    assert result.status == DeliveryStatus.DELIVERED and result.remote_host == "b.greet.test"
    assert refusing.connections == 1 and refusing.messages == []
    assert [c.split(" ")[0] for c in old_fashioned.commands[:2]] == ["EHLO", "HELO"]
    assert old_fashioned.messages and old_fashioned.messages[0].endswith(b"body\r\n")


async def test_all_hosts_refusing_is_temporary(tmp_path: Path, dns_server: DnsServer) -> None:
    port = pick_port(HOSTS[0])
    dns_server.set("grumpy.test", "MX", ["10 a.grumpy.test."])
    dns_server.set("a.grumpy.test", "A", [HOSTS[0]])
    transport = RemoteTransport(make_rt(tmp_path, dns_server, port))
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    async with ScriptedMX(HOSTS[0], port, greeting="421 4.3.2 busy, later"):
        [result] = await transport.deliver(
            "alice@example.test", ["x@grumpy.test"], tmp_path / "m.eml", queue_id="R2"
        )
        await transport.aclose()
    assert result.status == DeliveryStatus.TEMPORARY and result.code == 421


async def test_broken_starttls_falls_back_to_plain_text(tmp_path: Path, dns_server: DnsServer) -> None:
    port = pick_port(HOSTS[1])
    dns_server.set("notls.test", "MX", ["10 a.notls.test."])
    dns_server.set("a.notls.test", "A", [HOSTS[1]])
    transport = RemoteTransport(make_rt(tmp_path, dns_server, port))
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    async with ScriptedMX(HOSTS[1], port, broken_starttls=True) as mx:
        [result] = await transport.deliver(
            "alice@example.test", ["x@notls.test"], tmp_path / "m.eml", queue_id="R3"
        )
        await transport.aclose()
    assert result.status == DeliveryStatus.DELIVERED
    assert mx.connections == 2
    assert mx.commands.count("STARTTLS") == 1 and len(mx.messages) == 1


async def test_message_over_the_remote_size_limit_bounces(tmp_path: Path, dns_server: DnsServer) -> None:
    port = pick_port(HOSTS[0])
    dns_server.set("small.test", "MX", ["10 a.small.test."])
    dns_server.set("a.small.test", "A", [HOSTS[0]])
    transport = RemoteTransport(make_rt(tmp_path, dns_server, port))
    (tmp_path / "big.eml").write_bytes(MESSAGE + b"x" * 5000 + b"\r\n")
    with FakeMX(HOSTS[0], port, size_limit=1000) as mx:
        [result] = await transport.deliver(
            "alice@example.test", ["x@small.test"], tmp_path / "big.eml", queue_id="R4"
        )
        await transport.aclose()
    assert (result.status, result.code) == (DeliveryStatus.PERMANENT, 552)
    assert result.text.startswith("5.3.4 ")
    assert mx.messages == []


@settings(deadline=None)
@given(st.text(max_size=40))
def test_parse_relayhost_only_raises_value_error(text: str) -> None:
    try:
        parse_relayhost(text)
    except ValueError:
        pass


def test_reply_texts_always_carry_an_enhanced_code() -> None:
    from kinmail.smtpclient.session import SessionFailure, with_enhanced

    assert with_enhanced(550, "5.1.1 <x@y>: no such\n user") == "5.1.1 <x@y>: no such user"
    assert with_enhanced(550, "no such user") == "5.0.0 no such user"
    assert with_enhanced(451, "later") == "4.0.0 later"
    assert SessionFailure("connect", 0, "refused", "h").reply() == (451, "4.4.1 refused")
    assert SessionFailure("data", 0, "reset", "h").reply() == (451, "4.4.2 reset")
    assert SessionFailure("greeting", 554, "5.7.1 go away", "h").reply() == (554, "5.7.1 go away")


@pytest.mark.parametrize("remote_dsn", [True, False])
async def test_dsn_parameters_are_passed_on_when_the_next_hop_supports_dsn(
    tmp_path: Path, dns_server: DnsServer, remote_dsn: bool
) -> None:
    port = pick_port(HOSTS[0])
    dns_server.set("dsn.test", "MX", ["10 a.dsn.test."])
    dns_server.set("a.dsn.test", "A", [HOSTS[0]])
    transport = RemoteTransport(make_rt(tmp_path, dns_server, port))
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    request = DsnRequest(
        ret="HDRS",
        envid="env id+1",
        notify={"x@dsn.test": "SUCCESS,FAILURE"},
        orcpt={"x@dsn.test": "rfc822; x+tag@dsn.test"},
    )
    async with ScriptedMX(HOSTS[0], port, dsn=remote_dsn) as mx:
        results = await transport.deliver(
            "alice@example.test", ["x@dsn.test", "y@dsn.test"], tmp_path / "m.eml", queue_id="R5", dsn=request
        )
        await transport.aclose()
    assert [r.status for r in results] == [DeliveryStatus.DELIVERED] * 2
    assert all(r.dsn_passed is remote_dsn for r in results)
    mail = next(c for c in mx.commands if c.startswith("MAIL"))
    rcpts = [c for c in mx.commands if c.startswith("RCPT")]
    if remote_dsn:
        assert mail == "MAIL FROM:<alice@example.test> RET=HDRS ENVID=env+20id+2B1"
        assert rcpts == [
            "RCPT TO:<x@dsn.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+2Btag@dsn.test",
            "RCPT TO:<y@dsn.test>",
        ]
    else:
        assert mail == "MAIL FROM:<alice@example.test>"
        assert rcpts == ["RCPT TO:<x@dsn.test>", "RCPT TO:<y@dsn.test>"]


async def test_too_many_recipients_go_in_further_transactions(tmp_path: Path, dns_server: DnsServer) -> None:
    port = pick_port(HOSTS[1])
    dns_server.set("few.test", "MX", ["10 a.few.test."])
    dns_server.set("a.few.test", "A", [HOSTS[1]])
    transport = RemoteTransport(make_rt(tmp_path, dns_server, port))
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    rcpts = [f"r{n}@few.test" for n in range(5)]
    async with ScriptedMX(HOSTS[1], port, max_rcpts=2) as mx:
        results = await transport.deliver("alice@example.test", rcpts, tmp_path / "m.eml", queue_id="R6")
        await transport.aclose()
    assert [r.status for r in results] == [DeliveryStatus.DELIVERED] * 5
    assert mx.transactions == [rcpts[0:2], rcpts[2:4], rcpts[4:5]]
    assert mx.connections == 1 and len(mx.messages) == 3
