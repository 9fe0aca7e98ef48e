"""The POP3 service: listeners on `listen.pop3` (with STLS) and `listen.pop3s` (implicit TLS).

`kinmail serve` calls `create(rt)`; each accepted connection is served by a
`kinmail.pop3server.protocol.Pop3Protocol`.
The maildrop locks (RFC 1939 §8, one POP3 session per user) live here, in memory. Keeps nothing on disk.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from kinmail.core.listen import start_stream_servers
from kinmail.core.log import get_logger
from kinmail.pop3server.maildrop import MaildropLocks
from kinmail.pop3server.protocol import Pop3Protocol

if TYPE_CHECKING:
    from kinmail.runtime import Runtime

log = get_logger(__name__)


class Pop3Service:
    """Binds the POP3 listeners and tracks live connections so that `stop` can end them."""

    name = "pop3"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.locks = MaildropLocks()
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool) -> None:
        """Take the accepted transport over with a Pop3Protocol and wait until the connection is gone."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        transport = writer.transport
        peer = transport.get_extra_info("peername")
        remote_ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        try:
            protocol = Pop3Protocol(self.rt, self.locks, tls=tls, remote_ip=remote_ip)
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            await protocol.closed
        except asyncio.CancelledError:
            transport.abort()  # the server is stopping; ending the handler normally keeps asyncio quiet
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(reader, writer, tls=False)

    async def _implicit_tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(reader, writer, tls=True)

    async def start(self) -> None:
        listen = self.rt.config.listen
        self._servers = await start_stream_servers(listen.pop3, self._plain)
        if listen.pop3s:
            if self.rt.ssl_context is None:
                log.warning("pop3.no_tls", reason="no certificate; pop3s listeners not started")
            else:
                self._servers += await start_stream_servers(
                    listen.pop3s, self._implicit_tls, ssl_context=self.rt.ssl_context
                )
        log.info("pop3.listening", pop3=",".join(listen.pop3), pop3s=",".join(listen.pop3s))

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1)
        self._servers = []


def create(rt: Runtime) -> Pop3Service | None:
    """The POP3 service, or None when neither `listen.pop3` nor `listen.pop3s` lists an address."""
    if not rt.config.listen.pop3 and not rt.config.listen.pop3s:
        return None
    return Pop3Service(rt)
