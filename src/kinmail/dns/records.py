"""The DNS records a domain should publish for kinmail, as values (`kinmail dns`, later the admin pages and
the DNS self-check of `kinmail report` use them).

For each domain: MX (our host name), SPF (RFC 7208: `v=spf1 mx -all`), one DKIM key record per selector
(RFC 6376 §3.6.2, RFC 8463), DMARC (RFC 7489: `p=quarantine`, aggregate reports to postmaster), TLS reporting
(RFC 8460), an MTA-STS id record (RFC 8461, with its policy host as a hint), client autoconfiguration (the
`autoconfig`/`autodiscover` names and RFC 6186 SRV records), and a PTR hint for the server's address
(forward-confirmed reverse DNS is what big providers check first). `check_records` compares them with what
DNS answers now (`kinmail dns --check`). Reads the DKIM key files; writes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import dns.reversename

from kinmail.dns.resolver import DnsError, DnsNotFound, Resolver
from kinmail.mailauth.dkimkeys import load_keys

DEFAULT_TTL = 3600


@dataclass(frozen=True, slots=True)
class Record:
    """One record to publish (`hint=False`) or a piece of advice (`hint=True`, shown as a zone comment)."""

    name: str  # absolute, without the final dot
    rtype: str
    value: str  # presentation value; TXT values unquoted
    purpose: str
    hint: bool = False

    def zone_value(self) -> str:
        if self.rtype == "TXT":
            return quote_txt(self.value)
        return self.value

    def zone_line(self, ttl: int = DEFAULT_TTL) -> str:
        line = f"{self.name}. {ttl} IN {self.rtype} {self.zone_value()}"
        return f"; {line}" if self.hint else line


def quote_txt(value: str) -> str:
    """A TXT value as zone-file strings of at most 255 bytes each (RFC 1035 §3.3.14)."""
    raw = value.encode()
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return " ".join('"' + c.decode().replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def _absolute(host: str) -> str:
    return host.rstrip(".").lower() + "."


def domain_records(domain: str, hostname: str, keys_dir: Path) -> list[Record]:
    """Everything `domain` should publish when `hostname` is our mail server."""
    domain = domain.rstrip(".").lower()
    host = _absolute(hostname)
    records = [
        Record(domain, "MX", f"10 {host}", "mail for the domain comes to this server"),
        Record(domain, "TXT", "v=spf1 mx -all", "SPF: only the MX hosts send mail for the domain"),
    ]
    for key in load_keys(keys_dir, domain):
        records.append(Record(key.record_name, "TXT", key.record, f"DKIM key ({key.algorithm.value})"))
    records += [
        Record(
            f"_dmarc.{domain}",
            "TXT",
            f"v=DMARC1; p=quarantine; adkim=r; aspf=r; rua=mailto:postmaster@{domain}",
            "DMARC: unauthenticated mail claiming the domain goes to spam; daily reports to postmaster",
        ),
        Record(
            f"_smtp._tls.{domain}",
            "TXT",
            f"v=TLSRPTv1; rua=mailto:postmaster@{domain}",
            "TLS reporting (RFC 8460): senders report TLS problems to postmaster",
        ),
        Record(
            f"_mta-sts.{domain}",
            "TXT",
            f"v=STSv1; id={time.strftime('%Y%m%d', time.gmtime())}01",
            "MTA-STS (RFC 8461): publish together with the policy at "
            f"https://mta-sts.{domain}/.well-known/mta-sts.txt (change id= when the policy changes)",
            hint=True,
        ),
        Record(
            f"mta-sts.{domain}",
            "CNAME",
            host,
            "MTA-STS policy host; needs a certificate valid for this name",
            hint=True,
        ),
        Record(f"autoconfig.{domain}", "CNAME", host, "mail client autoconfiguration (Thunderbird)"),
        Record(f"autodiscover.{domain}", "CNAME", host, "mail client autoconfiguration (Outlook)"),
        Record(f"_submissions._tcp.{domain}", "SRV", f"0 1 465 {host}", "RFC 8314: submission over TLS"),
        Record(f"_submission._tcp.{domain}", "SRV", f"0 1 587 {host}", "RFC 6186: submission with STARTTLS"),
        Record(f"_imaps._tcp.{domain}", "SRV", f"0 1 993 {host}", "RFC 6186: IMAP over TLS"),
        Record(f"_pop3s._tcp.{domain}", "SRV", f"10 1 995 {host}", "RFC 6186: POP3 over TLS"),
    ]
    return records


def server_records(hostname: str, addresses: list[str]) -> list[Record]:
    """A/AAAA of the server's own name and the PTR each of its addresses needs (set by the address's owner,
    usually the hosting provider). `addresses` are what the name resolves to now (may be empty)."""
    host = hostname.rstrip(".").lower()
    records: list[Record] = []
    if not addresses:
        records.append(
            Record(host, "A", "<the server's public IPv4 address>", "the server's own name", hint=True)
        )
        records.append(
            Record(
                "<reversed address>.in-addr.arpa",
                "PTR",
                _absolute(host),
                f"reverse DNS of the server's address must name {host}: ask the address's provider",
                hint=True,
            )
        )
        return records
    for address in addresses:
        rtype = "AAAA" if ":" in address else "A"
        records.append(Record(host, rtype, address, "the server's own name"))
        records.append(
            Record(
                dns.reversename.from_address(address).to_text(omit_final_dot=True),
                "PTR",
                _absolute(host),
                f"reverse DNS of {address} must name {host}: set by the address's provider",
                hint=True,
            )
        )
    return records


class CheckStatus(StrEnum):
    OK = "ok"
    MISSING = "missing"
    DIFFERENT = "different"
    UNKNOWN = "unknown"  # the lookup failed (timeout, SERVFAIL): try again later


@dataclass(frozen=True, slots=True)
class CheckResult:
    record: Record
    status: CheckStatus
    found: tuple[str, ...] = ()


def _normal(rtype: str, value: str) -> str:
    value = " ".join(value.split())
    if rtype in ("MX", "CNAME", "SRV", "PTR", "NS"):
        return value.lower().rstrip(".")
    return value


async def check_records(resolver: Resolver, records: list[Record]) -> list[CheckResult]:
    """Compare each record to publish with what DNS answers now. Hints are skipped, except the PTR of a
    known address (not ours to publish, but worth checking)."""
    results: list[CheckResult] = []
    for record in records:
        if record.hint and not (record.rtype == "PTR" and not record.name.startswith("<")):
            continue
        try:
            if record.rtype == "TXT":
                found = tuple(v.decode("utf-8", "replace") for v in await resolver.txt(record.name))
            else:
                found = tuple(r.to_text() for r in await resolver.query(record.name, record.rtype))
        except DnsNotFound:
            results.append(CheckResult(record, CheckStatus.MISSING))
            continue
        except DnsError:
            results.append(CheckResult(record, CheckStatus.UNKNOWN))
            continue
        if not found:
            status = CheckStatus.MISSING
        elif _normal(record.rtype, record.value) in {_normal(record.rtype, v) for v in found}:
            status = CheckStatus.OK
        else:
            status = CheckStatus.DIFFERENT
        results.append(CheckResult(record, status, found))
    return results
