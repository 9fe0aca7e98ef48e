"""Value checks for the `kinmail.toml` schema, as annotated string types (`HostPort`, `Network`, `DomainName`...).

Each check raises ValueError with a plain reason; `kinmail.config.load` shows it as
`kinmail.toml:section.key: reason`. The values stay plain `str` for the code that reads them. Imported by
`kinmail.config.schema` only. Keeps nothing on disk.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator

from kinmail.core.listen import parse_hostport

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$)(?:{_LABEL}\.)*{_LABEL}$")
_DURATION = re.compile(r"^\d+[smhdw]?$")


def check_host(host: str) -> None:
    if not host:
        return
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not _DOMAIN.match(host.lower()):
        raise ValueError(f"{host!r} is neither an IP address nor a host name")


def host_port(value: str) -> str:
    """ "host:port", "[v6]:port" or ":port"."""
    host, _port = parse_hostport(value)
    if host and ":" in host and not value.strip().startswith("["):
        raise ValueError(f"{value!r}: write IPv6 addresses in brackets, as [::1]:25")
    check_host(host)
    return value.strip()


def nameserver(value: str) -> str:
    """An IP address, optionally with a port ("192.0.2.53", "127.0.0.1:5353", "[::1]:53")."""
    text = value.strip()
    try:
        ipaddress.ip_address(text.strip("[]"))
        return text
    except ValueError:
        pass
    try:
        host, _port = parse_hostport(text)
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: a name server must be an IP address, optionally with :port") from None
    return text


def network(value: str) -> str:
    """A CIDR network as Postfix's mynetworks writes it: "10.0.0.0/8", "[::1]/128", or one address."""
    text = value.strip()
    address, slash, prefix = text.partition("/")
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    try:
        ipaddress.ip_network(f"{address}/{prefix}" if slash else address, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
            raise ValueError(f"{value!r} has host bits set; did you mean {str(fixed)!r}?") from None
        raise ValueError(f"{value!r} is not a network such as 192.168.0.0/16 or [2001:db8::]/32") from None
    return text


def domain_name(value: str) -> str:
    """A host or domain name; an internationalised one is kept as its A-label (xn--...)."""
    text = value.strip().rstrip(".").lower()
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{value!r} is not a domain name") from None
    if not _DOMAIN.match(text):
        raise ValueError(f"{value!r} is not a domain name")
    return text


def duration(value: str) -> str:
    """ "30s", "5m", "4h", "5d", "1w" or a number of seconds."""
    if not _DURATION.match(value.strip()):
        raise ValueError(f"{value!r} is not a duration such as 30s, 5m, 4h, 5d")
    return value.strip()


def relayhost(value: str) -> str:
    """ "", "host", "host:port", "[host]" or "[host]:port" (brackets: no MX lookup, as in Postfix)."""
    text = value.strip()
    if not text:
        return text
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not re.fullmatch(r":\d{1,5}", rest)):
            raise ValueError(f"{value!r} is not [host] or [host]:port")
    else:
        host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
        if port and not port.isdigit():
            raise ValueError(f"{value!r}: port must be a number")
    check_host(host)
    return text


def one_of(*choices: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of " + ", ".join(f'"{c}"' for c in choices))
        return value

    return AfterValidator(check)


def unique_domains(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice")
        seen.add(value)
    return values


def delimiter(value: str) -> str:
    if any(c.isspace() or c in '@"<>,' for c in value) or len(value) > 4:
        raise ValueError(f"{value!r}: use one or a few characters such as + or -, not @, quotes or spaces")
    return value


def url(value: str) -> str:
    if value and not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


def listeners_distinct(listen: dict[str, list[str]]) -> None:
    """The same host:port may not be given to two services (or twice to one)."""
    seen: dict[tuple[str, int], str] = {}
    for service, addresses in listen.items():
        for address in addresses:
            host, port = parse_hostport(address)
            key = (host.lower(), port)
            if key in seen:
                raise ValueError(f"{address} is given to both {seen[key]} and {service}")
            seen[key] = service


HostPort = Annotated[str, AfterValidator(host_port)]
NameServer = Annotated[str, AfterValidator(nameserver)]
Network = Annotated[str, AfterValidator(network)]
DomainName = Annotated[str, AfterValidator(domain_name)]
Duration = Annotated[str, AfterValidator(duration)]
RelayHost = Annotated[str, AfterValidator(relayhost)]
Delimiter = Annotated[str, AfterValidator(delimiter)]
Url = Annotated[str, AfterValidator(url)]
PlaintextAuth = Annotated[str, one_of("never", "loopback", "always")]
LogLevel = Annotated[str, one_of("trace", "debug", "info", "warning", "error")]
Domains = Annotated[list[DomainName], AfterValidator(unique_domains)]
