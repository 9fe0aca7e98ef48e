"""The SMTP service: listeners for `[listen] smtp`, `submission` and `submissions`, one task per connection.

`create(rt)` is called by `kinmail serve` after the queue service. Port 465 needs a certificate; without one it
is skipped with an error in the log. On stop the listeners close and open sessions get 421. Keeps nothing on
disk (sessions write through the queue).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from kinmail.core.listen import StreamHandler, start_stream_servers
from kinmail.core.log import get_logger
from kinmail.smtpserver.message import UserRateLimit
from kinmail.smtpserver.session import MX, SUBMISSION, SUBMISSIONS, SmtpSession

if TYPE_CHECKING:
    from kinmail.runtime import Runtime

log = get_logger(__name__)


class SmtpService:
    name = "smtp"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.servers: list[asyncio.Server] = []
        self.sessions: set[asyncio.Task[None]] = set()
        self.rate_limit = UserRateLimit()

    def _handler(self, mode: str) -> StreamHandler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self.sessions.add(task)
            try:
                await SmtpSession(self.rt, reader, writer, mode=mode, rate_limit=self.rate_limit).run()
            finally:
                if task is not None:
                    self.sessions.discard(task)

        return handle

    async def start(self) -> None:
        listen = self.rt.config.listen
        limit = 2 * 65536
        if listen.smtp:
            self.servers += await start_stream_servers(list(listen.smtp), self._handler(MX), limit=limit)
        if listen.submission:
            self.servers += await start_stream_servers(
                list(listen.submission), self._handler(SUBMISSION), limit=limit
            )
        if listen.submissions:
            if self.rt.ssl_context is None:
                log.error(
                    "smtp.no_certificate", service=SUBMISSIONS, reason="no TLS certificate: 465 not started"
                )
            else:
                self.servers += await start_stream_servers(
                    list(listen.submissions),
                    self._handler(SUBMISSIONS),
                    ssl_context=self.rt.ssl_context,
                    limit=limit,
                )
        log.info("smtp.listening", listeners=len(self.servers))

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for task in list(self.sessions):
            task.cancel()
        for task in list(self.sessions):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 1.0)


def create(rt: Runtime) -> SmtpService | None:
    listen = rt.config.listen
    if not (listen.smtp or listen.submission or listen.submissions):
        return None
    return SmtpService(rt)
