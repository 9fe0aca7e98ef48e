"""An asyncio DNS resolver on dnspython with a small TTL cache.

Used by outbound delivery (MX, A/AAAA), DKIM verification (TXT) and later SPF, DMARC, DNSBL and iprev.
`resolver_for(rt.config.dns)` returns the resolver for the current `[dns]` section (one per distinct
section, so a reload that changes `nameservers` takes effect at the next lookup). `[dns] nameservers` lists
"host:port" resolvers (tests point it at their own server); empty means the system's `/etc/resolv.conf`.

Every lookup raises `DnsNotFound` when the name does not exist (NXDOMAIN), returns an empty list when the
name exists without records of that type (NODATA), and raises `DnsTemporaryError` on a timeout or a server
failure — callers turn that into a 4xx, never a bounce. Answers are cached for their TTL (at most an hour);
negative answers for the SOA minimum (RFC 2308 §5), at most five minutes. Nothing is kept on disk.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from kinmail.core.log import get_logger

if TYPE_CHECKING:
    from kinmail.config.schema import Dns

log = get_logger(__name__)

MAX_TTL = 3600
MAX_NEGATIVE_TTL = 300
CACHE_SIZE = 10000


class DnsError(Exception):
    """A lookup that gave no usable answer."""


class DnsNotFound(DnsError):
    """The name does not exist (NXDOMAIN)."""


class DnsTemporaryError(DnsError):
    """Timeout, SERVFAIL, refused or no reachable server: try again later."""


@dataclass(frozen=True, slots=True, order=True)
class MxRecord:
    """One MX record; `exchange` has no trailing dot and is "" for a null MX (RFC 7505 §3)."""

    preference: int
    exchange: str


def parse_nameserver(text: str) -> tuple[str, int]:
    """ "127.0.0.1:5353", "[::1]:53", "::1" or "192.0.2.1" → (address, port); raises ValueError."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]")
        if not sep or (port and not port.startswith(":")):
            raise ValueError(f"{text!r} is not [address]:port")
        port = port.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    ipaddress.ip_address(host)
    number = int(port) if port else 53
    if not 0 < number < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return host, number


class Resolver:
    """Async lookups with a TTL cache; concurrent identical queries share one request."""

    def __init__(self, nameservers: list[str] | tuple[str, ...] = (), timeout: float = 5.0) -> None:
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*parse_nameserver(ns)) for ns in nameservers
            ]
        else:
            try:
                resolver = dns.asyncresolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = ["127.0.0.1"]
        resolver.timeout = timeout
        resolver.lifetime = timeout
        self._resolver = resolver
        self._cache: dict[tuple[str, int], tuple[float, list[Any] | None]] = {}
        self._inflight: dict[tuple[str, int], asyncio.Future[list[Any] | None]] = {}

    # --- generic -----------------------------------------------------------------------------------------
    async def query(self, name: str, rdtype: str | int) -> list[Any]:
        """The rdata of `name`'s records of `rdtype` (dnspython objects), cached."""
        qname = name.rstrip(".").lower() + "."
        qtype = dns.rdatatype.RdataType.make(rdtype)
        key = (qname, int(qtype))
        entry = self._cache.get(key)
        if entry is not None and entry[0] > time.monotonic():
            return _result(entry[1], name)
        pending = self._inflight.get(key)
        if pending is not None and pending.get_loop() is asyncio.get_running_loop():
            return _result(await asyncio.shield(pending), name)
        future: asyncio.Future[list[Any] | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            answer = await self._lookup(qname, qtype)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked as retrieved, so a future nobody waited for does not warn
            raise
        else:
            future.set_result(answer)
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]
        return _result(answer, name)

    async def _lookup(self, qname: str, qtype: dns.rdatatype.RdataType) -> list[Any] | None:
        key = (qname, int(qtype))
        started = time.monotonic()
        try:
            answer = await self._resolver.resolve(qname, qtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            responses: dict[dns.name.Name, dns.message.Message] = exc.responses()  # type: ignore[no-untyped-call]
            self._store(key, None, _negative_ttl(responses.get(dns.name.from_text(qname))))
            return None
        except (dns.resolver.YXDOMAIN, dns.name.EmptyLabel, dns.name.LabelTooLong, dns.name.NameTooLong):
            return None  # a name that cannot exist is as good as NXDOMAIN (no retries for five days)
        except (dns.name.BadEscape, dns.name.IDNAException, UnicodeError):
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            log.info("dns.temporary", name=qname, type=qtype.name, reason=_short(exc))
            raise DnsTemporaryError(f"{qname} {qtype.name}: {_short(exc)}") from exc
        except dns.exception.DNSException as exc:
            log.info("dns.error", name=qname, type=qtype.name, reason=_short(exc))
            raise DnsTemporaryError(f"{qname} {qtype.name}: {_short(exc)}") from exc
        if answer.rrset is None:
            self._store(key, [], _negative_ttl(answer.response))
            return []
        records = list(answer.rrset)
        self._store(key, records, min(answer.rrset.ttl, MAX_TTL))
        log.debug(
            "dns.answer",
            name=qname,
            type=qtype.name,
            count=len(records),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return records

    def _store(self, key: tuple[str, int], value: list[Any] | None, ttl: float) -> None:
        if ttl <= 0:
            return
        now = time.monotonic()
        if len(self._cache) >= CACHE_SIZE:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= CACHE_SIZE:
                for old in list(self._cache)[: CACHE_SIZE // 2]:
                    del self._cache[old]
        self._cache[key] = (now + ttl, value)

    def clear_cache(self) -> None:
        self._cache.clear()

    # --- typed helpers -----------------------------------------------------------------------------------
    async def mx(self, domain: str) -> list[MxRecord]:
        """MX records of `domain`, unsorted; a null MX has exchange ""."""
        return [
            MxRecord(
                int(r.preference),
                "" if r.exchange == dns.name.root else r.exchange.to_text(omit_final_dot=True).lower(),
            )
            for r in await self.query(domain, "MX")
        ]

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of `host`; DnsNotFound when it has neither and does not exist."""
        results = await asyncio.gather(
            self.query(host, "A"), self.query(host, "AAAA"), return_exceptions=True
        )
        found: list[str] = []
        errors: list[BaseException] = []
        for result in results:
            if isinstance(result, BaseException):
                errors.append(result)
            else:
                found.extend(r.address for r in result)
        if found:
            return found
        for error in errors:
            if not isinstance(error, DnsNotFound):
                raise error
        if errors:
            raise errors[0]
        return []

    async def txt(self, name: str) -> list[bytes]:
        """TXT records of `name`, each record's strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
        return [b"".join(r.strings) for r in await self.query(name, "TXT")]

    async def ptr(self, ip: str) -> list[str]:
        """Host names of address `ip` (no trailing dot)."""
        name = dns.reversename.from_address(ip).to_text()
        return [r.target.to_text(omit_final_dot=True).lower() for r in await self.query(name, "PTR")]


def _result(value: list[Any] | None, name: str) -> list[Any]:
    if value is None:
        raise DnsNotFound(f"{name}: no such domain")
    return value


def _negative_ttl(response: dns.message.Message | None) -> float:
    """RFC 2308 §5: the negative TTL is the smaller of the SOA's TTL and its MINIMUM field."""
    if response is None:
        return 0
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return float(min(rrset.ttl, rrset[0].minimum, MAX_NEGATIVE_TTL))
    return 0


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


_RESOLVERS: dict[tuple[tuple[str, ...], float], Resolver] = {}


def resolver_for(section: Dns) -> Resolver:
    """The shared resolver for a `[dns]` config section (the same object while the section is unchanged)."""
    key = (tuple(section.nameservers), float(section.timeout))
    resolver = _RESOLVERS.get(key)
    if resolver is None:
        resolver = _RESOLVERS[key] = Resolver(key[0], key[1])
    return resolver
