"""IMAP APPEND: the store's steps run on the event loop, only the file writes and the waits for the disk in a
thread.

An APPEND of small messages is checked and its files named on the event loop, with the user's lock if it is
free that instant (`kinmail.store.splitappend.prepare`). One thread (`Settler`) then takes every append waiting
at that moment, writes their files to tmp/, syncs them, renames them into their folders and syncs the
directories (`settle`); back on the loop, the UIDs are given and the index commits (`record`) before the tagged
OK. Under load the syncs of many appends are shared, and the loop never waits for the kernel to create a file.
A step whose user's lock is taken (a delivery, another process) runs in a store thread, which waits for it; big
messages are stored whole in a store thread. Keeps nothing on disk of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kinmail.core.log import get_logger
from kinmail.imapserver.session import Holder, blocking, quick
from kinmail.store.mailbox import Mailbox, NewMessage, Staged
from kinmail.store.splitappend import close_files, discard, prepare, record, settle

log = get_logger(__name__)

QUICK_APPEND_BYTES = 256 * 1024
"""Appends of up to this many bytes go through the three steps; bigger ones are stored whole in a store thread."""


@dataclass
class _Waiting:
    staged: Staged
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


class Settler:
    """The thread that settles appends (`splitappend.settle`): each time it is free, every append waiting then,
    together — under load one sync of many files and one of their directories, and one thread's system calls
    instead of several threads' competing for the interpreter lock."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: list[_Waiting] = []
        self._thread: threading.Thread | None = None
        self._idle = False

    async def settle(self, staged: Staged) -> None:
        """Wait until the staged files are durable in their folder; raises the error that kept them from it.
        When the caller is cancelled, the thread takes the files back once it is done with them."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._cond:
            self._waiting.append(_Waiting(staged, future, loop))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="imap-settle", daemon=True)
                self._thread.start()
            elif self._idle:
                self._cond.notify()
        await future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                batch, self._waiting = self._waiting, []
            try:
                errors = settle([waiting.staged for waiting in batch])
            except Exception as exc:  # not expected: settle returns each append's error
                log.exception("imap.settle_failed")
                errors = [exc] * len(batch)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Waiting, BaseException | None]]] = {}
            for waiting, error in zip(batch, errors, strict=True):
                by_loop.setdefault(waiting.loop, []).append((waiting, error))
            for loop, done in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_resolve, done)
                except RuntimeError:
                    # that loop was closed meanwhile (a server stopping): no one will record them
                    for waiting, _error in done:
                        discard(waiting.staged.box, waiting.staged)


def _resolve(done: list[tuple[_Waiting, BaseException | None]]) -> None:
    for waiting, error in done:
        if waiting.future.done():  # cancelled: the server is stopping
            discard(waiting.staged.box, waiting.staged)
        elif error is not None:
            waiting.future.set_exception(error)
        else:
            waiting.future.set_result(None)


SETTLER = Settler()


async def store_append(
    holder: Holder, opener: Callable[[], Mailbox], messages: Sequence[NewMessage]
) -> tuple[Mailbox, list[int]]:
    """Open the folder (`opener`) and store the messages durably, all or none: the folder and their UIDs.
    Raises what the store raised (NoSuchFolder, QuotaExceeded, StoreError, ...)."""
    if sum(len(data) for data, _flags, _date in messages) > QUICK_APPEND_BYTES:
        box = await blocking(opener)
        return box, await blocking(box.append_each, messages)
    staged = await quick(holder, _open_and_prepare, opener, messages)
    box = staged.box
    try:
        await SETTLER.settle(staged)
    except asyncio.CancelledError:
        raise  # the settling thread takes the files back
    except BaseException:
        discard(box, staged)
        raise
    close_files(staged)
    try:
        return box, await quick(holder, record, box, staged)
    except asyncio.CancelledError:
        raise  # the server is stopping while a store thread records them: they are stored, or found by a scan
    except BaseException:
        discard(box, staged)
        raise


def _open_and_prepare(opener: Callable[[], Mailbox], messages: Sequence[NewMessage]) -> Staged:
    return prepare(opener(), messages)
