"""The listener side of a connection-oriented service (IMAP, POP3, ManageSieve): bind its plain and
implicit-TLS addresses, keep track of live connections, and end them when the server stops.

A service subclasses `StreamService`, names its listen lists and implements `handle`; `kinmail serve` calls
`start` and `stop`. Keeps nothing on disk.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from kinmail.core.listen import start_stream_servers
from kinmail.core.log import get_logger

if TYPE_CHECKING:
    from kinmail.runtime import Runtime

log = get_logger(__name__)


class StreamService:
    """One protocol's listeners: `plain_key` (STARTTLS offered on them) and `tls_key` (implicit TLS), both
    names of lists in `[listen]`. Live connections are tracked so that `stop` can end them within a second."""

    name = ""
    plain_key = ""
    tls_key = ""
    read_limit = 2**16

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool) -> None:
        """Serve one connection until it ends."""
        raise NotImplementedError

    def _addresses(self, key: str) -> list[str]:
        addresses: list[str] = getattr(self.rt.config.listen, key) if key else []
        return addresses

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self.handle(reader, writer, tls=tls)
        except asyncio.CancelledError:
            writer.transport.abort()  # the server is stopping; ending normally keeps asyncio from logging it
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(reader, writer, tls=False)

    async def _implicit_tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(reader, writer, tls=True)

    def enabled(self) -> bool:
        return bool(self._addresses(self.plain_key) or self._addresses(self.tls_key))

    async def start(self) -> None:
        plain, tls = self._addresses(self.plain_key), self._addresses(self.tls_key)
        self._servers = await start_stream_servers(plain, self._plain, limit=self.read_limit)
        if tls:
            if self.rt.ssl_context is None:
                log.warning(
                    f"{self.name}.no_tls", reason=f"no certificate; {self.tls_key} listeners not started"
                )
            else:
                self._servers += await start_stream_servers(
                    tls, self._implicit_tls, ssl_context=self.rt.ssl_context, limit=self.read_limit
                )
        fields = {self.plain_key: ",".join(plain)}
        if self.tls_key:
            fields[self.tls_key] = ",".join(tls)
        log.info(f"{self.name}.listening", **fields)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1)
        self._servers = []
