"""`kinmail dns`: the records to publish, as a table and as zone-file lines that parse; the DKIM records it
prints are the keys messages are signed with; the server's address gets its PTR hint."""

from __future__ import annotations

import shutil
import types
from collections.abc import Iterator
from pathlib import Path

import dns.rrset
import pytest

from kinmail.dns.resolver import Resolver
from kinmail.mailauth.dkim import sign_message, verify_message
from kinmail.mailauth.dkimkeys import create_keys
from tests.dnsserver import DnsServer
from tests.serverctl import KinmailServer


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        server.set("mail.example.test", "A", ["127.0.0.1"])
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, dns_server: DnsServer) -> KinmailServer:
    root = tmp_path_factory.mktemp("dnscmd")
    srv = KinmailServer(root, sections={"dns": {"nameservers": [dns_server.address], "timeout": 5.0}})
    for domain in srv.domains:
        create_keys(root / "dkim", domain)
    return srv


def zone_records(text: str) -> list[dns.rrset.RRset]:
    records = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        name, ttl, klass, rtype, value = line.split(None, 4)
        records.append(dns.rrset.from_text(name, int(ttl), klass, rtype, value))
    return records


def test_zone_lines_parse_and_cover_every_domain(server: KinmailServer) -> None:
    result = server.kinmail("dns", "--zone")
    assert result.returncode == 0, result.stderr
    records = zone_records(result.stdout)
    by_type: dict[str, list[dns.rrset.RRset]] = {}
    for rrset in records:
        by_type.setdefault(dns.rdatatype.to_text(rrset.rdtype), []).append(rrset)
    for domain in ("example.test", "example.net"):
        mx = [r for r in by_type["MX"] if r.name.to_text() == f"{domain}."]
        assert [rd.exchange.to_text() for rd in mx[0]] == ["mail.example.test."]
        txt = {r.name.to_text(): b"".join(r[0].strings).decode() for r in by_type["TXT"]}
        assert txt[f"{domain}."] == "v=spf1 mx -all"
        assert txt[f"_dmarc.{domain}."].startswith("v=DMARC1; p=quarantine")
        assert f"rua=mailto:postmaster@{domain}" in txt[f"_dmarc.{domain}."]
        dkim_names = [n for n in txt if n.endswith(f"._domainkey.{domain}.")]
        assert len(dkim_names) == 2
        assert {txt[n].split(";")[1].strip() for n in dkim_names} == {"k=rsa", "k=ed25519"}
        assert any(r.name.to_text() == f"autoconfig.{domain}." for r in by_type["CNAME"])
    # The server's own address and the PTR it needs, found through the configured resolver.
    assert "; 1.0.0.127.in-addr.arpa. 3600 IN PTR mail.example.test." in result.stdout


async def test_printed_dkim_records_verify_signed_mail(server: KinmailServer) -> None:
    result = server.kinmail("dns", "--zone", "example.test")
    assert result.returncode == 0, result.stderr
    assert "example.net" not in result.stdout
    with DnsServer() as published:
        for rrset in zone_records(result.stdout):
            if rrset.rdtype == dns.rdatatype.TXT:
                published.set(rrset.name.to_text(), "TXT", [b"".join(rd.strings).decode() for rd in rrset])
        rt = types.SimpleNamespace(loaded=types.SimpleNamespace(dir=Path(server.root)))
        message = b"From: alice@example.test\r\nTo: x@remote.test\r\nSubject: hi\r\n\r\nbody\r\n"
        results = await verify_message(
            sign_message(rt, message, "example.test"), Resolver([published.address], 5.0)
        )
    assert [(r.algorithm, r.ok) for r in results] == [("rsa-sha256", True), ("ed25519-sha256", True)]


def test_table_output(server: KinmailServer) -> None:
    result = server.kinmail("dns", "example.net")
    assert result.returncode == 0, result.stderr
    for word in ("DNS records for example.net", "MX", "DKIM", "_dmarc.example.net.", "PTR"):
        assert word in result.stdout


def test_unknown_domain_is_a_user_error(server: KinmailServer) -> None:
    result = server.kinmail("dns", "elsewhere.test")
    assert result.returncode == 1
    assert "not one of our domains: elsewhere.test" in result.stderr
    assert "Traceback" not in result.stderr


def test_domain_without_keys_is_reported(tmp_path: Path, dns_server: DnsServer) -> None:
    srv = KinmailServer(
        tmp_path / "k", sections={"dns": {"nameservers": [dns_server.address], "timeout": 5.0}}
    )
    shutil.rmtree(srv.root / "dkim", ignore_errors=True)
    result = srv.kinmail("dns", "--zone", "example.test")
    assert result.returncode == 0
    assert "_domainkey" not in result.stdout
    assert "example.test has no DKIM keys" in result.stderr


def test_check_compares_with_what_dns_answers(server: KinmailServer, dns_server: DnsServer) -> None:
    zone = server.kinmail("dns", "--zone", "example.test")
    assert zone.returncode == 0, zone.stderr
    published: dict[tuple[str, str], list[str]] = {}
    for rrset in zone_records(zone.stdout):
        rtype = dns.rdatatype.to_text(rrset.rdtype)
        values = [b"".join(rd.strings).decode() if rtype == "TXT" else rd.to_text() for rd in rrset]
        published[(rrset.name.to_text(), rtype)] = values
    for (name, rtype), values in published.items():
        dns_server.set(name, rtype, values)
    dns_server.set("1.0.0.127.in-addr.arpa", "PTR", ["mail.example.test."])
    good = server.kinmail("dns", "--check", "example.test")
    assert good.returncode == 0, good.stderr
    assert "every record is published as it should be" in good.stdout
    dns_server.set("example.test", "TXT", ["v=spf1 a -all"])
    dns_server.remove("_dmarc.example.test")
    bad = server.kinmail("dns", "--check", "example.test")
    assert "2 record(s) missing or different" in bad.stdout
    assert "different" in bad.stdout and "missing" in bad.stdout
