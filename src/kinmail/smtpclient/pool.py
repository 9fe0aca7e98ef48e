"""A cache of idle outbound SMTP connections, so that several messages to one host share a session.

Owned by a `RemoteTransport`. Connections are keyed by (address, port, AUTH user); a connection taken from
the cache is RSET first (RFC 5321 §4.1.1.5) and dropped if that fails. Idle connections are closed with QUIT
after `idle_timeout` seconds, and a connection is retired after `max_uses` messages or `max_age` seconds
(Postfix's connection cache does the same with smaller limits). Nothing is kept on disk.
"""

from __future__ import annotations

import asyncio
import time

from kinmail.core.log import get_logger
from kinmail.smtpclient.session import Connection

log = get_logger(__name__)

PoolKey = tuple[str, int, str]


class ConnectionPool:
    def __init__(self, *, idle_timeout: float = 10.0, max_uses: int = 1000, max_age: float = 300.0) -> None:
        self.idle_timeout = idle_timeout
        self.max_uses = max_uses
        self.max_age = max_age
        self._idle: dict[PoolKey, list[Connection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.TimerHandle | None = None
        self.reused = 0

    def _expired(self, conn: Connection, now: float) -> bool:
        return (
            not conn.usable
            or conn.uses >= self.max_uses
            or now - conn.opened > self.max_age
            or now - conn.last_used > self.idle_timeout
        )

    async def take(self, key: PoolKey) -> Connection | None:
        """An idle connection for `key`, RSET and ready; None when there is none."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if self._expired(conn, time.monotonic()):
                self._retire(conn)
                continue
            try:
                ready = await conn.reset()
            except BaseException:
                conn.close()
                raise
            if ready:
                self.reused += 1
                log.debug("smtpclient.reuse", cid=conn.cid, relay=conn.label, uses=conn.uses)
                return conn
            conn.close()
        return None

    def give_back(self, key: PoolKey, conn: Connection) -> None:
        """Keep `conn` for the next message to the same host, or close it when it is spent."""
        if self._expired(conn, time.monotonic()):
            self._retire(conn)
            return
        self._idle.setdefault(key, []).append(conn)
        self._schedule_reap()

    def _retire(self, conn: Connection) -> None:
        if conn.usable:
            task = asyncio.get_running_loop().create_task(conn.quit())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            conn.close()

    def _schedule_reap(self) -> None:
        if self._reaper is None:
            loop = asyncio.get_running_loop()
            self._reaper = loop.call_later(self.idle_timeout / 2, self._reap)

    def _reap(self) -> None:
        self._reaper = None
        now = time.monotonic()
        for key in list(self._idle):
            keep = []
            for conn in self._idle[key]:
                if self._expired(conn, now):
                    self._retire(conn)
                else:
                    keep.append(conn)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle:
            self._schedule_reap()

    def idle_count(self) -> int:
        return sum(len(conns) for conns in self._idle.values())

    async def close(self) -> None:
        """QUIT every idle connection (at shutdown)."""
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        conns = [conn for conns in self._idle.values() for conn in conns]
        self._idle.clear()
        if conns:
            await asyncio.gather(*(conn.quit() for conn in conns), return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
