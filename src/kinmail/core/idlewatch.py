"""An idle timeout for a connection: one timer per connection that cancels the connection's task once a read
has waited `timeout` seconds for the client.

Cheaper than a timeout around every read (`asyncio.wait_for` makes a task and a timer per read, `asyncio.timeout`
a timer): the timer is made once and, when it comes due while the connection is busy or has been waiting less
than `timeout`, set again for the moment the current wait would run out. Used by the SMTP and IMAP sessions on
the event loop that runs them. Keeps nothing on disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class IdleWatch:
    """`begin()` before awaiting the client, `end()` after (or `wait(read)`); a wait of `timeout` seconds cancels the task, and
    `fired()` in the `except CancelledError` tells that cancellation from any other (and undoes it)."""

    def __init__(self, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._timeout = timeout
        self._since: float | None = None
        self._timed_out = False
        self._handle: asyncio.TimerHandle | None = (
            self._loop.call_later(timeout, self._look) if timeout > 0 else None
        )

    def begin(self) -> None:
        self._since = self._loop.time()

    def end(self) -> None:
        self._since = None

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """Await the client (a read) between `begin()` and `end()`."""
        self.begin()
        try:
            return await awaitable
        finally:
            self.end()

    def fired(self) -> bool:
        """Whether the CancelledError being handled came from this watch; if so it no longer counts as a
        cancellation of the task."""
        if not self._timed_out:
            return False
        self._timed_out = False
        if self._task is not None:
            self._task.uncancel()
        return True

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _look(self) -> None:
        since = self._since
        now = self._loop.time()
        if since is not None and now - since >= self._timeout:
            self._timed_out = True
            self._handle = None
            if self._task is not None:
                self._task.cancel()
            return
        self._handle = self._loop.call_at((since if since is not None else now) + self._timeout, self._look)
