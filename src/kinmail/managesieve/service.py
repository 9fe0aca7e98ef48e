"""The ManageSieve service: listeners on `listen.managesieve` (STARTTLS on the same port, RFC 5804 §2.2).

`kinmail serve` calls `create(rt)`; each accepted connection runs a `kinmail.managesieve.session.Connection`.
Keeps nothing on disk itself (scripts go through `kinmail.sieve.storage.ScriptStore`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from kinmail.core.listen import start_stream_servers
from kinmail.core.log import get_logger
from kinmail.managesieve.session import Connection

if TYPE_CHECKING:
    from kinmail.runtime import Runtime

log = get_logger(__name__)


class ManageSieveService:
    """Binds the ManageSieve listeners and tracks live connections so that `stop` can end them."""

    name = "managesieve"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await Connection(self.rt, reader, writer, tls=False).run()
        except asyncio.CancelledError:
            pass  # the server is stopping; ending the handler normally keeps asyncio from logging it
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def start(self) -> None:
        self._servers = await start_stream_servers(self.rt.config.listen.managesieve, self._serve)
        log.info("managesieve.listening", addresses=",".join(self.rt.config.listen.managesieve))

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1)
        self._servers = []


def create(rt: Runtime) -> ManageSieveService | None:
    """The ManageSieve service, or None when `listen.managesieve` is empty."""
    if not rt.config.listen.managesieve:
        return None
    return ManageSieveService(rt)
