"""DKIM keys and signatures (kinmail.mailauth): keys on disk, both signatures verify with dkimpy against the
published records (served by the test DNS server), relaxed/relaxed, From oversigned, tampering detected."""

from __future__ import annotations

import re
import stat
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kinmail.dns.resolver import Resolver
from kinmail.mailauth.dkim import headers_to_sign, sign_message, verify_message
from kinmail.mailauth.dkimkeys import Algorithm, create_keys, load_keys
from tests.dnsserver import DnsServer

MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: bob@remote.test\r\n"
    b"Subject: a  subject\r\n  folded over two lines\r\n"
    b"Date: Wed, 25 Nov 2026 14:00:00 +0000\r\n"
    b"Message-ID: <m1@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Bob,\r\n\r\nthis is the body.  \r\n\r\n\r\n"
)


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("kinmail")
    create_keys(folder / "dkim", "example.test")
    return folder


@pytest.fixture(scope="module")
def rt(config_dir: Path) -> Any:
    return types.SimpleNamespace(loaded=types.SimpleNamespace(dir=config_dir))


@pytest.fixture(scope="module")
def records(config_dir: Path) -> dict[str, bytes]:
    return {f"{k.record_name}.": k.record.encode() for k in load_keys(config_dir / "dkim", "example.test")}


@pytest.fixture(scope="module")
def dns_server(records: dict[str, bytes]) -> Iterator[DnsServer]:
    with DnsServer() as server:
        for name, value in records.items():
            server.set(name, "TXT", [value.decode()])
        yield server


def dkimpy_verify(data: bytes, records: dict[str, bytes], index: int) -> bool:
    def dnsfunc(name: Any, timeout: float = 5) -> bytes | None:
        return records.get(name.decode() if isinstance(name, bytes) else name)

    return bool(dkim.DKIM(data).verify(idx=index, dnsfunc=dnsfunc))


def signature_tags(data: bytes, index: int) -> dict[str, str]:
    headers, _ = dkim.rfc822_parse(data)
    values = [v for n, v in headers if n.lower() == b"dkim-signature"]
    raw = re.sub(rb"\s+", b"", values[index]).decode()
    return dict(part.split("=", 1) for part in raw.split(";") if part)


def test_keys_on_disk(config_dir: Path) -> None:
    folder = config_dir / "dkim" / "example.test"
    keys = load_keys(config_dir / "dkim", "example.test")
    assert [k.algorithm for k in keys] == [Algorithm.RSA_SHA256, Algorithm.ED25519_SHA256]
    assert keys[0].selector.startswith("rsa") and keys[1].selector.startswith("ed")
    for key in keys:
        mode = stat.S_IMODE((folder / f"{key.selector}.key").stat().st_mode)
        assert mode == 0o600
    assert keys[0].record.startswith("v=DKIM1; k=rsa; p=MIIB")  # a 2048-bit key's DER starts so
    assert keys[1].record.startswith("v=DKIM1; k=ed25519; p=")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    create_keys(config_dir / "dkim", "example.test")  # never replaces existing keys
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_both_signatures_verify_with_dkimpy(rt: Any, records: dict[str, bytes]) -> None:
    signed = sign_message(rt, MESSAGE, "example.test")
    assert signed.endswith(MESSAGE)
    assert dkimpy_verify(signed, records, 0)
    assert dkimpy_verify(signed, records, 1)
    rsa_tags, ed_tags = signature_tags(signed, 0), signature_tags(signed, 1)
    assert (rsa_tags["a"], ed_tags["a"]) == ("rsa-sha256", "ed25519-sha256")
    assert rsa_tags["c"] == ed_tags["c"] == "relaxed/relaxed"
    assert rsa_tags["d"] == "example.test"
    signed_names = rsa_tags["h"].split(":")
    assert signed_names.count("from") == 2  # oversigned: one more than present
    for name in ("to", "subject", "date", "message-id", "mime-version", "content-type"):
        assert name in signed_names


async def test_verify_message_through_our_resolver(rt: Any, dns_server: DnsServer) -> None:
    resolver = Resolver([dns_server.address], timeout=5.0)
    signed = sign_message(rt, MESSAGE, "example.test")
    results = await verify_message(signed, resolver)
    assert [(r.algorithm, r.ok) for r in results] == [("rsa-sha256", True), ("ed25519-sha256", True)]
    assert await verify_message(MESSAGE, resolver) == []


async def test_tampering_breaks_the_signatures(rt: Any, dns_server: DnsServer) -> None:
    resolver = Resolver([dns_server.address], timeout=5.0)
    signed = sign_message(rt, MESSAGE, "example.test")
    for tampered in (
        signed.replace(b"this is the body", b"this is a body"),
        signed.replace(b"Subject: a  subject", b"Subject: a subjekt"),
        b"From: mallory@evil.test\r\n" + signed,  # a second From: the oversigned From catches it
        signed.replace(b"\r\n\r\nHello", b"\r\nReply-To: mallory@evil.test\r\n\r\nHello"),
    ):
        assert [r.ok for r in await verify_message(tampered, resolver)] == [False, False]


async def test_relaxed_canonicalisation_survives_refolding(rt: Any, dns_server: DnsServer) -> None:
    resolver = Resolver([dns_server.address], timeout=5.0)
    signed = sign_message(rt, MESSAGE, "example.test")
    refolded = signed.replace(b"Subject: a  subject\r\n  folded", b"Subject:   a subject folded").replace(
        b"body.  \r\n", b"body.\r\n"
    )
    assert [r.ok for r in await verify_message(refolded, resolver)] == [True, True]


async def test_unpublished_key_fails(rt: Any) -> None:
    empty = DnsServer().start()
    try:
        results = await verify_message(
            sign_message(rt, MESSAGE, "example.test"), Resolver([empty.address], 5.0)
        )
    finally:
        empty.stop()
    assert [r.ok for r in results] == [False, False]


async def test_dns_failure_is_a_temporary_error(
    rt: Any, dns_server: DnsServer, records: dict[str, bytes]
) -> None:
    signed = sign_message(rt, MESSAGE, "example.test")
    for name in records:
        dns_server.servfail(name)
    try:
        results = await verify_message(signed, Resolver([dns_server.address], 5.0))
    finally:
        for name in records:
            dns_server.servfail(name, on=False)
    assert [r.ok for r in results] == [False, False]
    assert all(r.reason.startswith("temperror") for r in results)


def test_domain_without_keys_is_unchanged(rt: Any) -> None:
    assert sign_message(rt, MESSAGE, "example.net") == MESSAGE
    assert sign_message(rt, MESSAGE, "../etc") == MESSAGE


def test_lf_message_keeps_its_line_ends(rt: Any, records: dict[str, bytes]) -> None:
    lf = MESSAGE.replace(b"\r\n", b"\n")
    signed = sign_message(rt, lf, "example.test")
    assert b"\r" not in signed and signed.endswith(lf)
    assert dkimpy_verify(signed.replace(b"\n", b"\r\n"), records, 0)


def test_headers_to_sign_counts_and_oversigns() -> None:
    headers = [(b"From", b" a"), (b"To", b" b"), (b"Received", b" x"), (b"To", b" c"), (b"X-Other", b" y")]
    include = headers_to_sign(headers)
    assert include.count(b"from") == 2
    assert include.count(b"to") == 3
    assert include.count(b"subject") == 1 and include.count(b"reply-to") == 1
    assert b"received" not in include and b"x-other" not in include
    assert include.count(b"references") == 0


_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=_text, body=st.lists(_text, max_size=8), extra=st.booleans())
def test_any_message_signs_and_verifies(
    rt: Any, records: dict[str, bytes], subject: str, body: list[str], extra: bool
) -> None:
    header = b"From: a@example.test\r\nTo: b@remote.test\r\nSubject: " + subject.encode() + b"\r\n"
    if extra:
        header += b"Cc: c@remote.test\r\nIn-Reply-To: <x@y>\r\n"
    data = header + b"\r\n" + "\r\n".join(body).encode() + b"\r\n"
    signed = sign_message(rt, data, "example.test")
    assert dkimpy_verify(signed, records, 0)
    assert dkimpy_verify(signed, records, 1)


_junk_tags = st.lists(
    st.tuples(
        st.sampled_from(["v", "a", "b", "bh", "c", "d", "h", "i", "l", "q", "s", "t", "x", "z"]), _text
    ),
    max_size=10,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tags=_junk_tags, body=st.binary(max_size=200), key=_text)
async def test_malformed_signatures_never_raise(
    rt: Any, dns_server: DnsServer, tags: list[tuple[str, str]], body: bytes, key: str
) -> None:
    dns_server.set("sel._domainkey.junk.test", "TXT", [key or "v=DKIM1; p="])
    value = "; ".join(f"{k}={v}" for k, v in tags)
    data = f"DKIM-Signature: {value}\r\nDKIM-Signature: v=1; d=junk.test; s=sel; b=; bh=\r\n".encode()
    data += b"From: a@junk.test\r\n\r\n" + body
    results = await verify_message(data, Resolver([dns_server.address], 5.0))
    assert len(results) in (1, 2) and not any(r.ok for r in results)
