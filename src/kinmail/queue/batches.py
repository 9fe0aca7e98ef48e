"""Work in batches: what callers bring while earlier batches run goes to one worker thread together. The
scheduler's local deliveries (`kinmail.delivery.local.deliver_batch`: one store commit per folder, not one
thread trip and commit per message) and the spool's commits (`Queue.commit`: the fsyncs of all sessions that
finished DATA at the same moment) use it.

While a batch is in its thread, the next one gathers; at most `parallel` batches run at once, so that one
batch's fsyncs overlap the filtering of the next without many threads taking the GIL from each other. With
`overlap_after`, a further batch starts only once every running one has taken that long: one batch at a time
while they are quick (two delivery threads to one mailbox mostly wait for each other's lock), and a second
one when a batch is held up (a user's lock taken by an index rebuild, a slow mailbox command). Each
caller gets the results of its own items, only after the whole batch is done; everything submitted runs, even
when its caller was cancelled meanwhile. Keeps nothing on disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_BATCH = 64
PARALLEL = 2


class Batches(Generic[Item, Result]):
    """Runs `run(items) -> results` (one result per item, in order) in `executor` for everything submitted
    while earlier batches were running."""

    def __init__(
        self,
        run: Callable[[list[Item]], list[Result]],
        executor: Executor,
        *,
        max_batch: int = MAX_BATCH,
        parallel: int = PARALLEL,
        overlap_after: float | None = None,
    ) -> None:
        self._run = run
        self._executor = executor
        self._max_batch = max_batch
        self._parallel = parallel
        self._overlap_after = overlap_after
        self._waiting: list[tuple[list[Item], asyncio.Future[list[Result]]]] = []
        self._running: dict[asyncio.Task[None], float] = {}  # -> when it started (loop time)
        self._recheck: asyncio.TimerHandle | None = None

    async def submit(self, items: list[Item]) -> list[Result]:
        """The results of `items`, once the batch they went into is done."""
        if not items:
            return []
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, future))
        self._start()
        return await future

    @property
    def busy(self) -> bool:
        """Something is waiting or running."""
        return bool(self._waiting or self._running)

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting and len(self._running) < self._parallel:
            if self._running and self._overlap_after is not None:
                due = max(self._running.values()) + self._overlap_after - loop.time()
                if due > 0:  # the running batches are quick so far: look again when the newest is not
                    if self._recheck is None:
                        self._recheck = loop.call_later(due, self._recheck_due)
                    return
            batch: list[tuple[list[Item], asyncio.Future[list[Result]]]] = []
            size = 0
            while self._waiting and (not batch or size + len(self._waiting[0][0]) <= self._max_batch):
                entry = self._waiting.pop(0)
                batch.append(entry)
                size += len(entry[0])
            task = asyncio.create_task(self._run_batch(batch))
            self._running[task] = loop.time()
            task.add_done_callback(self._finished)

    def _recheck_due(self) -> None:
        self._recheck = None
        self._start()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._start()

    async def _run_batch(self, batch: list[tuple[list[Item], asyncio.Future[list[Result]]]]) -> None:
        flat = [item for items, _future in batch for item in items]
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, flat)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else asyncio.CancelledError()
            for _items, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        offset = 0
        for items, future in batch:
            if not future.done():
                future.set_result(results[offset : offset + len(items)])
            offset += len(items)
