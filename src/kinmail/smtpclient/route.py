"""Where outbound mail for a domain goes: MX lookup, implicit MX, null MX and the relayhost (smarthost).

Called by `kinmail.smtpclient.transport` before each delivery attempt. `find_hops` returns the hosts to try,
in order, each with its addresses; or raises `RouteError` carrying the reply the queue should record.

- RFC 5321 §5.1: MX records sorted by preference, equal preferences in random order; no MX records means
  the domain itself is the host (implicit MX, its A/AAAA records). A name that does not exist bounces.
- RFC 7505 §4.2: a null MX ("0 .") means the domain accepts no mail: a permanent failure, 5.1.10.
- RFC 5321 §5.1: when our own host name is among the MX hosts, only more preferred hosts are tried.
- Postfix `relayhost`: "[host]:port" is used as it is (no MX lookup), "host:port" or "host" gets an MX lookup.

Nothing is kept on disk; DNS answers are cached by the resolver.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass, field

from kinmail.dns.resolver import DnsNotFound, DnsTemporaryError, MxRecord, Resolver


@dataclass(frozen=True, slots=True)
class Hop:
    """One host to try: its name (for logs, TLS SNI and Remote-MTA) and addresses, in order."""

    name: str
    port: int
    addresses: tuple[str, ...]
    relay: bool = False  # the relayhost: credentials may apply


@dataclass(slots=True)
class RouteError(Exception):
    """No host can be tried: a permanent failure (5xx) or a temporary one (4xx) with its reply."""

    code: int
    text: str  # begins with the enhanced status code (RFC 3463)
    hops_tried: list[str] = field(default_factory=list)

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True, slots=True)
class Relayhost:
    host: str
    port: int
    bracketed: bool
    spec: str


def parse_relayhost(text: str, default_port: int = 25) -> Relayhost | None:
    """Postfix syntax: "[host]:port", "[host]", "host:port" or "host"; None when empty. Raises ValueError."""
    spec = text.strip()
    if not spec:
        return None
    if spec.startswith("["):
        host, sep, rest = spec[1:].partition("]")
        if not sep or not host:
            raise ValueError(f"relayhost {spec!r}: missing ]")
        port_text = rest.removeprefix(":") if rest else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"relayhost {spec!r}: junk after ]")
        bracketed = True
    else:
        host, _, port_text = spec.partition(":")
        bracketed = False
    if port_text and (not port_text.isdigit() or not 0 < int(port_text) < 65536):
        raise ValueError(f"relayhost {spec!r}: bad port")
    if not host:
        raise ValueError(f"relayhost {spec!r}: no host")
    return Relayhost(host.lower(), int(port_text) if port_text else default_port, bracketed, spec)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def order_mx(records: list[MxRecord], rng: random.Random | None = None) -> list[MxRecord]:
    """Preference order, shuffled among equal preferences (RFC 5321 §5.1)."""
    rng = rng or random.Random()
    shuffled = list(records)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda r: r.preference)


async def _addresses(resolver: Resolver, host: str) -> tuple[str, ...]:
    if _is_ip(host):
        return (host,)
    return tuple(await resolver.addresses(host))


async def _mx_hops(
    resolver: Resolver, domain: str, port: int, our_hostname: str, *, relay: bool = False
) -> list[Hop]:
    try:
        records = await resolver.mx(domain)
    except DnsNotFound:
        raise RouteError(550, f"5.1.2 domain {domain} does not exist (DNS: NXDOMAIN)") from None
    except DnsTemporaryError as exc:
        raise RouteError(451, f"4.4.3 MX lookup for {domain} failed: {exc}") from None
    if any(r.exchange == "" for r in records):
        # RFC 7505 §3: a null MX is the only MX record; treat its presence as "no mail" either way.
        raise RouteError(556, f"5.1.10 {domain} accepts no mail (null MX, RFC 7505)")
    if not records:
        names = [domain]  # implicit MX (RFC 5321 §5.1)
    else:
        ordered = order_mx(records)
        ours = [r.preference for r in ordered if r.exchange == our_hostname.lower()]
        if ours:
            ordered = [r for r in ordered if r.preference < min(ours)]
            if not ordered:
                raise RouteError(554, f"5.4.6 mail for {domain} loops back to myself ({our_hostname})")
        names = [r.exchange for r in ordered]
    hops: list[Hop] = []
    temporary: str | None = None
    looked_up = await asyncio.gather(*(_addresses(resolver, name) for name in names), return_exceptions=True)
    for name, found in zip(names, looked_up, strict=True):
        if isinstance(found, DnsTemporaryError):
            temporary = str(found)
        elif isinstance(found, BaseException):
            if not isinstance(found, DnsNotFound):
                raise found
        elif found:
            hops.append(Hop(name, port, found, relay))
    if not hops:
        if temporary is not None:
            raise RouteError(451, f"4.4.3 address lookup for the mail hosts of {domain} failed: {temporary}")
        if not records:
            raise RouteError(550, f"5.1.2 {domain} has no MX and no address records")
        raise RouteError(451, f"4.4.3 no address found for any mail host of {domain}")
    return hops


async def find_hops(
    resolver: Resolver,
    domain: str,
    *,
    port: int,
    relayhost: str,
    our_hostname: str,
) -> list[Hop]:
    """The hosts to try for `domain`, in order; raises RouteError when there is none."""
    try:
        relay = parse_relayhost(relayhost, default_port=25)
    except ValueError as exc:
        raise RouteError(451, f"4.3.5 delivery.relayhost is not usable: {exc}") from None
    if relay is None:
        return await _mx_hops(resolver, domain, port, our_hostname)
    if relay.bracketed:
        try:
            addresses = await _addresses(resolver, relay.host)
        except DnsNotFound:
            raise RouteError(451, f"4.4.4 relayhost {relay.host} does not exist in DNS") from None
        except DnsTemporaryError as exc:
            raise RouteError(451, f"4.4.3 address lookup for relayhost {relay.host} failed: {exc}") from None
        if not addresses:
            raise RouteError(451, f"4.4.4 relayhost {relay.host} has no address")
        return [Hop(relay.host, relay.port, addresses, relay=True)]
    try:
        return await _mx_hops(resolver, relay.host, relay.port, our_hostname, relay=True)
    except RouteError as exc:
        # A broken relayhost is our configuration problem: never bounce the user's mail for it.
        if exc.permanent:
            raise RouteError(451, "4.4.4 relayhost: " + exc.text.split(" ", 1)[-1]) from None
        raise
