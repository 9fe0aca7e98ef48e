"""The POP3 service: listeners on `listen.pop3` (with STLS) and `listen.pop3s` (implicit TLS).

`kinmail serve` calls `create(rt)`; each accepted connection is served by a
`kinmail.pop3server.protocol.Pop3Protocol`.
The maildrop locks (RFC 1939 §8, one POP3 session per user) live here, in memory. Keeps nothing on disk.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from kinmail.core.listen import peer_ip
from kinmail.core.log import get_logger
from kinmail.core.service import StreamService
from kinmail.pop3server.maildrop import MaildropLocks
from kinmail.pop3server.protocol import Pop3Protocol

if TYPE_CHECKING:
    from kinmail.runtime import Runtime

log = get_logger(__name__)


class Pop3Service(StreamService):
    """The POP3 listeners, and the maildrop locks shared by their sessions."""

    name = "pop3"
    plain_key = "pop3"
    tls_key = "pop3s"

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        self.locks = MaildropLocks()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool) -> None:
        """Take the accepted transport over with a Pop3Protocol and wait until the connection is gone."""
        transport = writer.transport
        protocol = Pop3Protocol(self.rt, self.locks, tls=tls, remote_ip=peer_ip(transport))
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        await protocol.closed


def create(rt: Runtime) -> Pop3Service | None:
    """The POP3 service, or None when neither `listen.pop3` nor `listen.pop3s` lists an address."""
    service = Pop3Service(rt)
    return service if service.enabled() else None
