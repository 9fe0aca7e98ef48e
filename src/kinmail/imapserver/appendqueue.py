"""The APPENDs of all IMAP sessions, stored a batch at a time by one thread (`kinmail.store.groupappend`).

A session's APPEND waits here while the batch before it is being stored; the next batch then takes every
APPEND that arrived meanwhile, so under load the fsyncs of many appends are shared and one thread, not
several, makes their system calls. The tagged OK still comes only once the session's messages are on disk. A
job whose user's lock is taken at that moment finishes in a store thread instead (`finish_deferred`). Keeps
nothing on disk.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kinmail.core.log import get_logger
from kinmail.imapserver.session import blocking
from kinmail.store.groupappend import AppendJob, abandon, append_group, finish_deferred
from kinmail.store.mailbox import Mailbox, NewMessage

log = get_logger(__name__)


@dataclass
class _Request:
    opener: Callable[[], Mailbox]
    messages: Sequence[NewMessage]
    future: asyncio.Future[AppendJob]
    loop: asyncio.AbstractEventLoop


class AppendQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: list[_Request] = []
        self._thread: threading.Thread | None = None
        self._idle = False

    async def append(
        self, opener: Callable[[], Mailbox], messages: Sequence[NewMessage]
    ) -> tuple[Mailbox, list[int]]:
        """Open the folder (`opener`, in the queue's thread) and store the messages, all or none; their UIDs.
        Raises what the store raised (NoSuchFolder, QuotaExceeded, StoreError, ...)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppendJob] = loop.create_future()
        with self._cond:
            self._waiting.append(_Request(opener, messages, future, loop))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="imap-append", daemon=True)
                self._thread.start()
            elif self._idle:
                self._cond.notify()
        job = await future
        if job.deferred:
            job.uids = await blocking(finish_deferred, job)
        return job.mailbox, job.uids

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                batch, self._waiting = self._waiting, []
            jobs: list[tuple[_Request, AppendJob | BaseException]] = []
            for request in batch:
                try:
                    jobs.append((request, AppendJob(request.opener(), request.messages)))
                except Exception as exc:  # the folder does not exist, a bad name
                    jobs.append((request, exc))
            try:
                append_group([job for _r, job in jobs if isinstance(job, AppendJob)])
            except Exception as exc:  # not expected: append_group keeps each job's error
                log.exception("imap.append_batch_failed")
                jobs = [(r, job if isinstance(job, BaseException) else exc) for r, job in jobs]
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Request, AppendJob | BaseException]]] = {}
            for request, job in jobs:
                by_loop.setdefault(request.loop, []).append((request, job))
            for loop, done in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_resolve, done)
                except RuntimeError:  # that loop was closed meanwhile (a server shutting down)
                    pass


def _resolve(done: list[tuple[_Request, AppendJob | BaseException]]) -> None:
    for request, job in done:
        if request.future.done():  # the session went away meanwhile (no OK was sent)
            if isinstance(job, AppendJob) and job.deferred:
                abandon(job)
            continue
        if isinstance(job, BaseException):
            request.future.set_exception(job)
        elif job.error is not None:
            request.future.set_exception(job.error)
        else:
            request.future.set_result(job)


APPENDS = AppendQueue()
