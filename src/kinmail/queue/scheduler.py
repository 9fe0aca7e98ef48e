"""The scheduler: delivers queued messages, retries with backoff, warns of delays, expires and bounces.

Started by `kinmail.queue.service`. New messages are handed over at once (`wake`); deferred ones wait until
their `next_attempt` by `kinmail.core.clock.now()` (which tests move forward). For each message the pending
recipients are resolved through `rt.directory.resolve`: local mailboxes go to `kinmail.delivery.local`
(with those of other messages ready at the same moment, in one worker-thread batch: `kinmail.queue.batches`),
remote addresses to `kinmail.smtpclient.transport.RemoteTransport`, grouped per domain.
Temporary failures retry after `[delivery] minimal_backoff_time`, doubling up to `maximal_backoff_time`; after
`delay_warning_time` the sender is warned once; after `maximal_queue_lifetime` the rest bounces. Permanent
failures produce a DSN (`kinmail.queue.dsn`) — never to the null sender. State is rewritten in the message's
`.json` file only when something stays queued; a finished message's files are removed (`Queue.retire`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from kinmail.core import clock
from kinmail.core.log import get_logger
from kinmail.delivery.local import (
    DELIVERED,
    PERMANENT,
    TEMPORARY,
    Delivery,
    DeliveryLedger,
    Outcome,
    deliver_batch,
)
from kinmail.queue.batches import Batches
from kinmail.queue.dsn import FailedRecipient, build_dsn
from kinmail.queue.spool import FAILED, PENDING, QueuedMessage, RecipientState
from kinmail.smtpclient.transport import RemoteTransport

if TYPE_CHECKING:
    from kinmail.config.directory import Recipient
    from kinmail.queue.spool import Queue
    from kinmail.runtime import Runtime

log = get_logger(__name__)
T = TypeVar("T")
_LocalWork = tuple[QueuedMessage, RecipientState, "Recipient", "DeliveryLedger | None"]

WORKERS = 64  # messages in delivery at once (local ones are batched: `kinmail.queue.batches`)
LOCAL_THREADS = 4  # local delivery batches (a second one when the first is held up) and spool updates
LOCAL_OVERLAP_AFTER = 0.1  # seconds a local batch runs before the next may start beside it
TICK = 1.0
_DELIVERED = "delivered"


def _duration(text: str, default: float) -> float:
    try:
        return clock.parse_duration(text)
    except ValueError:
        return default


class Scheduler:
    """Moves messages out of the queue; one per server."""

    def __init__(self, rt: Runtime, queue: Queue) -> None:
        self.rt = rt
        self.queue = queue
        self.ready: asyncio.Queue[str] = asyncio.Queue()
        self.in_flight: set[str] = set()
        self.queued: set[str] = set()
        self.ledger: DeliveryLedger | None = None
        self.recovered: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._transport: RemoteTransport | None = None
        self._flush = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=LOCAL_THREADS, thread_name_prefix="delivery")
        self._local: Batches[_LocalWork, tuple[RecipientState, str, Outcome]] = Batches(
            self._deliver_local_batch, self._executor, overlap_after=LOCAL_OVERLAP_AFTER
        )

    # --- life cycle --------------------------------------------------------------------------------------
    def start(self, recovered: list[QueuedMessage]) -> None:
        if recovered:
            self.recovered = {m.queue_id for m in recovered}
            # File times are wall-clock times: take the test clock's offset out of the queue's times.
            self.ledger = DeliveryLedger(min(m.arrival for m in recovered) - clock.offset())
        for meta in recovered:
            if not meta.held and meta.next_attempt <= clock.now():
                self.wake(meta.queue_id)
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(WORKERS)]
        self._tasks.append(asyncio.create_task(self._timer()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self._transport.aclose()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def wake(self, queue_id: str) -> None:
        """Deliver `queue_id` as soon as a worker is free."""
        if queue_id in self.queued or queue_id in self.in_flight:
            return
        self.queued.add(queue_id)
        self.ready.put_nowait(queue_id)

    def flush(self) -> None:
        """Retry every deferred message now (`kinmail queue flush`)."""
        for meta in list(self.queue.messages.values()):
            if not meta.held:
                meta.next_attempt = 0.0
        self._flush.set()

    async def _timer(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush.wait(), TICK)
            self._flush.clear()
            now = clock.now()
            for meta in list(self.queue.messages.values()):
                if not meta.held and meta.next_attempt <= now:
                    self.wake(meta.queue_id)

    async def _worker(self) -> None:
        while True:
            queue_id = await self.ready.get()
            self.queued.discard(queue_id)
            meta = self.queue.messages.get(queue_id)
            if meta is None or meta.held or queue_id in self.in_flight:
                continue
            self.in_flight.add(queue_id)
            try:
                await self._attempt(meta)
            except Exception:
                log.exception("queue.attempt_failed", queue_id=queue_id)
                meta.next_attempt = clock.now() + 60.0
            finally:
                self.in_flight.discard(queue_id)

    # --- one delivery attempt ----------------------------------------------------------------------------
    async def _attempt(self, meta: QueuedMessage) -> None:
        started = time.monotonic()
        local_work: list[tuple[RecipientState, Recipient]] = []
        remote: dict[str, list[tuple[RecipientState, str]]] = defaultdict(list)
        outcomes: dict[int, list[Outcome]] = defaultdict(list)
        directory = self.rt.directory
        seen: set[str] = set()
        for rcpt in meta.pending:
            targets = directory.resolve(rcpt.address)
            if targets is None:
                outcomes[id(rcpt)].append(Outcome(PERMANENT, 550, "5.1.1", "user unknown"))
                continue
            if all(target.address in rcpt.done for target in targets):
                outcomes[id(rcpt)].append(Outcome(DELIVERED))
            for target in targets:
                if target.address in rcpt.done:
                    continue
                if target.local:
                    key = f"{target.address}+{target.tag or ''}"
                    if key in seen:  # the same mailbox through two aliases gets one copy (as Postfix)
                        outcomes[id(rcpt)].append(Outcome(DELIVERED, text="duplicate"))
                        continue
                    seen.add(key)
                    local_work.append((rcpt, target))
                else:
                    remote[target.address.rpartition("@")[2]].append((rcpt, target.address))
        ledger = self.ledger if meta.queue_id in self.recovered else None
        tasks: list[Awaitable[list[tuple[RecipientState, str, Outcome]]]] = []
        if local_work:
            tasks.append(self._local.submit([(meta, rcpt, target, ledger) for rcpt, target in local_work]))
        for domain_rcpts in remote.values():
            tasks.append(self._deliver_remote(meta, domain_rcpts))
        for result in await asyncio.gather(*tasks):
            for rcpt, target_address, outcome in result:
                outcomes[id(rcpt)].append(outcome)
                if outcome.status == DELIVERED:
                    rcpt.done.append(target_address)
        for outcome_list in outcomes.values():
            for outcome in outcome_list:
                for sender, rcpts, data, origin in outcome.followups:
                    await self.queue.enqueue(sender, rcpts, data, origin=origin)
        await self._settle(meta, outcomes, started)

    def _deliver_local_batch(self, work: list[_LocalWork]) -> list[tuple[RecipientState, str, Outcome]]:
        """In a worker thread: the local deliveries of every message in the batch (`deliver_batch`)."""
        messages: dict[str, bytes | OSError] = {}
        for meta, _rcpt, _target, _ledger in work:
            if meta.queue_id not in messages:
                try:
                    messages[meta.queue_id] = self.queue.read_message(meta.queue_id)
                except OSError as exc:
                    messages[meta.queue_id] = exc
        deliveries = [
            Delivery(meta.queue_id, meta.sender, target, found, ledger)
            for meta, _rcpt, target, ledger in work
            if isinstance(found := messages[meta.queue_id], bytes)
        ]
        outcomes = iter(deliver_batch(self.rt, deliveries))
        out = []
        for meta, rcpt, target, _ledger in work:
            found = messages[meta.queue_id]
            if isinstance(found, OSError):
                outcome = Outcome(TEMPORARY, 451, "4.3.0", f"cannot read queue file: {found}")
            else:
                outcome = next(outcomes)
            if outcome.reject:
                outcome = Outcome(PERMANENT, 550, "5.7.1", outcome.reject, followups=outcome.followups)
            out.append((rcpt, target.address, outcome))
        return out

    def _remote_transport(self) -> RemoteTransport:
        if self._transport is None:
            self._transport = RemoteTransport(self.rt)
        return self._transport

    async def _deliver_remote(
        self, meta: QueuedMessage, rcpts: list[tuple[RecipientState, str]]
    ) -> list[tuple[RecipientState, str, Outcome]]:
        transport = self._remote_transport()
        addresses = [a for _, a in rcpts]
        try:
            results = await transport.deliver(
                meta.sender, addresses, self.queue.message_path(meta.queue_id), queue_id=meta.queue_id
            )
        except Exception as exc:
            log.exception("queue.remote_failed", queue_id=meta.queue_id)
            return [
                (r, a, Outcome(TEMPORARY, 451, "4.4.0", f"remote delivery failed: {exc}")) for r, a in rcpts
            ]
        by_rcpt = {res.rcpt: res for res in results}
        out = []
        for rcpt, address in rcpts:
            res = by_rcpt.get(address)
            if res is None:
                out.append(
                    (rcpt, address, Outcome(TEMPORARY, 451, "4.4.0", "no result from remote delivery"))
                )
                continue
            status = str(getattr(res.status, "value", res.status))
            enhanced, _, text = str(res.text).partition(" ")
            if not (len(enhanced) >= 5 and enhanced[1] == "."):
                enhanced, text = ("5.0.0" if res.code >= 500 else "4.0.0"), str(res.text)
            kind = DELIVERED if status == "delivered" else PERMANENT if status == "permanent" else TEMPORARY
            outcome = Outcome(kind, res.code, enhanced, text)
            rcpt.remote_host = res.remote_host or rcpt.remote_host
            out.append((rcpt, address, outcome))
        return out

    # --- after an attempt --------------------------------------------------------------------------------
    async def _settle(self, meta: QueuedMessage, outcomes: dict[int, list[Outcome]], started: float) -> None:
        config = self.rt.config.delivery
        now = clock.now()
        newly_failed: list[tuple[RecipientState, Outcome]] = []
        for rcpt in meta.pending:
            results = outcomes.get(id(rcpt), [])
            permanent = next((o for o in results if o.status == PERMANENT), None)
            temporary = next((o for o in results if o.status == TEMPORARY), None)
            if permanent is not None and temporary is None:
                rcpt.status, rcpt.code, rcpt.text = (
                    FAILED,
                    permanent.code,
                    f"{permanent.enhanced} {permanent.text}",
                )
                newly_failed.append((rcpt, permanent))
            elif temporary is not None:
                rcpt.code, rcpt.text = temporary.code, f"{temporary.enhanced} {temporary.text}"
                if permanent is not None:  # one target bounced, another is retried: report the bounce now
                    newly_failed.append((rcpt, permanent))
            elif results and all(o.status == DELIVERED for o in results):
                rcpt.status, rcpt.code, rcpt.text = _DELIVERED, 250, "2.0.0 delivered"
            self._log_rcpt(meta, rcpt, results, started)
        lifetime = _duration(config.maximal_queue_lifetime, 5 * 86400)
        if meta.pending and now - meta.arrival >= lifetime:
            for rcpt in meta.pending:
                outcome = Outcome(
                    PERMANENT, rcpt.code or 451, "4.4.7", f"message expired: {rcpt.text or 'not delivered'}"
                )
                rcpt.status = FAILED
                newly_failed.append((rcpt, outcome))
                log.info("queue.expired", queue_id=meta.queue_id, rcpt=rcpt.address, status="expired")
        if newly_failed:
            await self._bounce(meta, newly_failed)
        if meta.queue_id not in self.queue.messages:
            return  # deleted by `kinmail queue delete` during the attempt
        if not meta.pending:
            self.queue.retire(meta.queue_id)
            self.recovered.discard(meta.queue_id)
            log.info(
                "queue.removed",
                queue_id=meta.queue_id,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )
            return
        meta.attempts += 1
        minimal = _duration(config.minimal_backoff_time, 300)
        maximal = max(minimal, _duration(config.maximal_backoff_time, 3600))
        meta.next_attempt = now + min(maximal, minimal * 2 ** (meta.attempts - 1))
        meta.last_error = meta.pending[0].text
        warn_after = _duration(config.delay_warning_time, 0)
        if warn_after > 0 and not meta.warned and now - meta.arrival >= warn_after:
            meta.warned = True
            await self._warn(meta)
        await self._in_thread(self.queue.save, meta)
        log.info(
            "queue.deferred",
            queue_id=meta.queue_id,
            attempts=meta.attempts,
            next_in=round(meta.next_attempt - now),
            reason=meta.last_error,
        )

    def _log_rcpt(
        self, meta: QueuedMessage, rcpt: RecipientState, results: list[Outcome], started: float
    ) -> None:
        status = {PENDING: "deferred", FAILED: "bounced"}.get(rcpt.status, rcpt.status)
        reason = next((f"{o.enhanced} {o.text}" for o in results if o.status != DELIVERED), None)
        log.info(
            "delivery",
            queue_id=meta.queue_id,
            from_=meta.sender or "<>",
            rcpt=rcpt.address,
            status=status,
            reason=reason,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )

    def _wants_dsn(self, meta: QueuedMessage, rcpt: RecipientState, kind: str) -> bool:
        if not meta.sender:
            return False  # RFC 5321 §4.5.5: never a DSN to the null sender, so never a bounce of a bounce
        notify = rcpt.notify.upper()
        if not notify:
            return kind == "FAILURE" or kind == "DELAY"
        return "NEVER" not in notify and kind in notify

    async def _bounce(self, meta: QueuedMessage, failed: list[tuple[RecipientState, Outcome]]) -> None:
        reported = [
            FailedRecipient(
                rcpt.address,
                "failed",
                outcome.enhanced if outcome.enhanced[0] in "45" else "5.0.0",
                f"{outcome.code} {outcome.enhanced} {outcome.text}",
                rcpt.remote_host,
                rcpt.orcpt,
            )
            for rcpt, outcome in failed
            if self._wants_dsn(meta, rcpt, "FAILURE")
        ]
        if reported:
            await self._send_dsn(meta, reported, delayed=False)

    async def _warn(self, meta: QueuedMessage) -> None:
        reported = [
            FailedRecipient(
                rcpt.address,
                "delayed",
                rcpt.text.partition(" ")[0] or "4.0.0",
                rcpt.text,
                rcpt.remote_host,
                rcpt.orcpt,
            )
            for rcpt in meta.pending
            if self._wants_dsn(meta, rcpt, "DELAY")
        ]
        if reported:
            await self._send_dsn(meta, reported, delayed=True)

    async def _send_dsn(self, meta: QueuedMessage, reported: list[FailedRecipient], *, delayed: bool) -> None:
        try:
            original = await self._in_thread(self.queue.read_message, meta.queue_id)
        except OSError:
            original = b""
        dsn = build_dsn(
            hostname=self.rt.config.hostname,
            sender=meta.sender,
            queue_id=meta.queue_id,
            arrival=meta.arrival,
            recipients=reported,
            original=original,
            ret_headers_only=meta.ret.upper() == "HDRS",
            envid=meta.envid,
            delayed=delayed,
        )
        queue_id = await self.queue.enqueue("", [meta.sender], dsn, origin="bounce")
        log.info(
            "queue.dsn",
            queue_id=meta.queue_id,
            dsn_id=queue_id,
            rcpt=meta.sender,
            status="delayed" if delayed else "failed",
            nrcpt=len(reported),
        )
