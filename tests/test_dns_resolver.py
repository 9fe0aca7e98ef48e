"""The resolver (kinmail.dns.resolver) against the test DNS server: answers, NXDOMAIN vs NODATA, SERVFAIL and
timeouts as temporary errors, the TTL cache, TCP fallback for big answers, `[dns] nameservers` parsing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kinmail.config.schema import Dns
from kinmail.dns.resolver import (
    DnsNotFound,
    DnsTemporaryError,
    MxRecord,
    Resolver,
    parse_nameserver,
    resolver_for,
)
from tests.dnsserver import DnsServer


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def resolver(server: DnsServer) -> Resolver:
    return Resolver([server.address], timeout=5.0)


async def test_mx_a_aaaa_txt_ptr(dns_server: DnsServer) -> None:
    dns_server.set("r1.test", "MX", ["20 b.r1.test.", "10 a.r1.test."])
    dns_server.set("a.r1.test", "A", ["192.0.2.10", "192.0.2.11"])
    dns_server.set("a.r1.test", "AAAA", ["2001:db8::10"])
    dns_server.set("r1.test", "TXT", ["v=spf1 mx -all"])
    dns_server.set("10.2.0.192.in-addr.arpa", "PTR", ["a.r1.test."])
    res = resolver(dns_server)
    assert sorted(await res.mx("R1.test.")) == [MxRecord(10, "a.r1.test"), MxRecord(20, "b.r1.test")]
    assert sorted(await res.addresses("a.r1.test")) == ["192.0.2.10", "192.0.2.11", "2001:db8::10"]
    assert await res.txt("r1.test") == [b"v=spf1 mx -all"]
    assert await res.ptr("192.0.2.10") == ["a.r1.test"]


async def test_null_mx_has_an_empty_exchange(dns_server: DnsServer) -> None:
    dns_server.set("nullmx.test", "MX", ["0 ."])
    assert await resolver(dns_server).mx("nullmx.test") == [MxRecord(0, "")]


async def test_nxdomain_raises_and_nodata_is_empty(dns_server: DnsServer) -> None:
    dns_server.set("exists.test", "A", ["192.0.2.1"])
    res = resolver(dns_server)
    assert await res.mx("exists.test") == []
    with pytest.raises(DnsNotFound):
        await res.mx("does-not-exist.test")
    with pytest.raises(DnsNotFound):
        await res.addresses("does-not-exist.test")
    assert await res.addresses("exists.test") == ["192.0.2.1"]


async def test_impossible_names_are_not_found(dns_server: DnsServer) -> None:
    res = resolver(dns_server)
    for name in ("a..b.test", "x" * 64 + ".test", ("y" * 60 + ".") * 5 + "test"):
        with pytest.raises(DnsNotFound):
            await res.mx(name)


async def test_servfail_and_silence_are_temporary(dns_server: DnsServer) -> None:
    dns_server.servfail("sick.test")
    with pytest.raises(DnsTemporaryError):
        await resolver(dns_server).mx("sick.test")
    dns_server.servfail("sick.test", on=False)
    # Port 9 (discard) answers nothing: a timeout, i.e. try later.
    with pytest.raises(DnsTemporaryError):
        await Resolver(["127.0.0.1:9"], timeout=0.3).mx("anything.test")


async def test_answers_are_cached_for_their_ttl(dns_server: DnsServer) -> None:
    dns_server.set("cached.test", "A", ["192.0.2.1"], ttl=300)
    dns_server.set("uncached.test", "A", ["192.0.2.1"], ttl=0)
    res = resolver(dns_server)
    assert await res.addresses("cached.test") == ["192.0.2.1"]
    assert await res.addresses("uncached.test") == ["192.0.2.1"]
    dns_server.set("cached.test", "A", ["192.0.2.2"], ttl=300)
    dns_server.set("uncached.test", "A", ["192.0.2.2"], ttl=0)
    assert await res.addresses("cached.test") == ["192.0.2.1"]
    assert await res.addresses("uncached.test") == ["192.0.2.2"]
    res.clear_cache()
    assert await res.addresses("cached.test") == ["192.0.2.2"]


async def test_concurrent_identical_queries_share_one_request(dns_server: DnsServer) -> None:
    dns_server.set("busy.test", "TXT", ["hello"])
    res = resolver(dns_server)
    before = dns_server.queries.count(("busy.test", "TXT"))
    results = await asyncio.gather(*(res.txt("busy.test") for _ in range(10)))
    assert results == [[b"hello"]] * 10
    assert dns_server.queries.count(("busy.test", "TXT")) - before == 1


async def test_long_txt_records_and_tcp_fallback(dns_server: DnsServer) -> None:
    long_value = "v=DKIM1; k=rsa; p=" + "A" * 600
    dns_server.set("long.test", "TXT", [long_value])
    many = [f"record-{n}-" + "x" * 200 for n in range(12)]  # about 2.5 KB: truncated over UDP
    dns_server.set("big.test", "TXT", many)
    res = resolver(dns_server)
    assert await res.txt("long.test") == [long_value.encode()]
    tcp_before = dns_server.tcp_queries
    assert sorted(await res.txt("big.test")) == sorted(v.encode() for v in many)
    assert dns_server.tcp_queries == tcp_before + 1


def test_resolver_for_is_shared_per_section() -> None:
    a = resolver_for(Dns(nameservers=["127.0.0.1:5353"], timeout=1.0))
    b = resolver_for(Dns(nameservers=["127.0.0.1:5353"], timeout=1.0))
    c = resolver_for(Dns(nameservers=["127.0.0.1:5354"], timeout=1.0))
    assert a is b and a is not c


def test_parse_nameserver() -> None:
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("192.0.2.1") == ("192.0.2.1", 53)
    assert parse_nameserver("[::1]:5300") == ("::1", 5300)
    assert parse_nameserver("::1") == ("::1", 53)
    for bad in ("localhost:53", "127.0.0.1:0", "127.0.0.1:99999", "[::1", ""):
        with pytest.raises(ValueError):
            parse_nameserver(bad)


@settings(deadline=None)
@given(st.ip_addresses(), st.integers(min_value=1, max_value=65535))
def test_parse_nameserver_round_trips(address: object, port: int) -> None:
    text = f"[{address}]:{port}" if ":" in str(address) else f"{address}:{port}"
    assert parse_nameserver(text) == (str(address), port)
