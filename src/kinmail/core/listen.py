"""Listening sockets for the services: "host:port" parsing and asyncio stream servers.

Every service (SMTP, IMAP, POP3, ManageSieve, HTTP) binds through `start_stream_servers` so that address
syntax, IPv6 handling and errors ("address in use") are the same everywhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable

from kinmail.core.errors import KinmailError

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def peer_ip(transport: asyncio.BaseTransport | asyncio.StreamWriter) -> str:
    """The client's IP address as text ("unknown" when the socket has none); an IPv4 client reaching an IPv6
    listener ("::ffff:192.0.2.1") is shown as its IPv4 address, so that logs, throttling and mynetworks see one form."""
    peer = transport.get_extra_info("peername")
    if not isinstance(peer, tuple) or not peer:
        return "unknown"
    address = str(peer[0])
    return address[7:] if address.startswith("::ffff:") else address


def is_loopback(address: str) -> bool:
    """Whether `address` (an IP, possibly with an IPv6 %scope) is a loopback address."""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def parse_hostport(text: str) -> tuple[str, int]:
    """Split "host:port", "[v6]:port" or ":port" (all addresses); raise ValueError with a plain reason."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{text!r} is not [address]:port")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r} has no :port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: port must be a number from 1 to 65535")
    return host, int(port)


async def start_stream_servers(
    addresses: list[str],
    handler: StreamHandler,
    *,
    ssl_context: ssl.SSLContext | None = None,
    limit: int = 2**16,
) -> list[asyncio.Server]:
    """Bind every address in `addresses`; "[::]" listens on IPv6 only, as Postfix's inet_protocols=all does
    together with "0.0.0.0" — list both to get both."""
    servers: list[asyncio.Server] = []
    try:
        for address in addresses:
            host, port = parse_hostport(address)
            family = socket.AF_INET6 if ":" in host else socket.AF_UNSPEC
            try:
                server = await asyncio.start_server(
                    handler,
                    host=host or None,
                    port=port,
                    family=family,
                    ssl=ssl_context,
                    limit=limit,
                    reuse_address=True,
                    backlog=1024,
                )
            except OSError as exc:
                raise KinmailError(f"cannot listen on {address}: {exc.strerror or exc}") from exc
            servers.append(server)
    except BaseException:
        for server in servers:
            server.close()
        raise
    return servers
