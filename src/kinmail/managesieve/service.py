"""The ManageSieve service: listeners on `listen.managesieve` (STARTTLS on the same port, RFC 5804 §2.2).

`kinmail serve` calls `create(rt)`; each accepted connection runs a `kinmail.managesieve.session.Connection`.
Keeps nothing on disk itself (scripts go through `kinmail.sieve.storage.ScriptStore`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from kinmail.core.log import get_logger
from kinmail.core.service import StreamService
from kinmail.managesieve.session import Connection

if TYPE_CHECKING:
    from kinmail.runtime import Runtime

log = get_logger(__name__)


class ManageSieveService(StreamService):
    """The ManageSieve listeners (STARTTLS on the same port; no implicit-TLS port is defined)."""

    name = "managesieve"
    plain_key = "managesieve"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool) -> None:
        await Connection(self.rt, reader, writer, tls=tls).run()


def create(rt: Runtime) -> ManageSieveService | None:
    """The ManageSieve service, or None when `listen.managesieve` is empty."""
    service = ManageSieveService(rt)
    return service if service.enabled() else None
