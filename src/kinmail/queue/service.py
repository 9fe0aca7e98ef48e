"""The queue service: takes the spool lock, loads the spool, runs the scheduler, answers control requests.

`create(rt)` is called by `kinmail serve` before the listeners start. `kinmail queue flush|delete|hold|release`
talk to the running server through files in `data_dir/queue/control/` and SIGUSR1 to the pid in
`data_dir/state/kinmail.pid` (see `kinmail.cli.queue_cmd`): the server is the spool's single writer, so it
carries the request out itself and answers in `NAME.done`. Keeps on disk: the spool (`kinmail.queue.spool`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from kinmail.core.atomic import atomic_write
from kinmail.core.log import get_logger
from kinmail.queue.scheduler import Scheduler
from kinmail.queue.spool import Queue

if TYPE_CHECKING:
    from kinmail.runtime import Runtime

log = get_logger(__name__)


def apply_request(queue: Queue, action: str, queue_id: str) -> str:
    """Carry out one control request on the spool (the server, or the CLI holding the lock); returns "ok" or why not."""
    if action == "flush":
        if queue.scheduler is not None:
            queue.scheduler.flush()
        return "ok"
    meta = queue.messages.get(queue_id)
    if meta is None:
        return f"no such message: {queue_id}"
    if action == "delete":
        queue.remove(queue_id)
    elif action in ("hold", "release"):
        meta.held = action == "hold"
        if action == "release":
            meta.next_attempt = 0.0
        queue.save(meta)
        if action == "release" and queue.scheduler is not None:
            queue.scheduler.wake(queue_id)
    else:
        return f"unknown action: {action}"
    log.info("queue.control", queue_id=queue_id, action=action)
    return "ok"


def process_control(queue: Queue) -> None:
    """Answer every pending request file in `queue/control/`."""
    for request in sorted(queue.control.glob("*.req")):
        try:
            body = json.loads(request.read_text())
            answer = apply_request(queue, str(body.get("action", "")), str(body.get("id", "")))
        except (OSError, ValueError, AttributeError) as exc:
            answer = f"bad request: {exc}"
        atomic_write(request.with_suffix(".done"), answer)
        request.unlink(missing_ok=True)


class QueueService:
    name = "queue"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.queue: Queue = rt.queue
        self.scheduler = Scheduler(rt, self.queue)

    async def start(self) -> None:
        self.queue.lock()
        loaded = await asyncio.to_thread(self.queue.load)
        self.queue.scheduler = self.scheduler
        self.scheduler.start(loaded)
        process_control(self.queue)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self._on_signal)
        log.info("queue.started", messages=len(loaded), path=str(self.queue.dir))

    def _on_signal(self) -> None:
        try:
            process_control(self.queue)
        except Exception:
            log.exception("queue.control_failed")
        self.scheduler.flush()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        await self.scheduler.stop()
        await self.queue.close()


def create(rt: Runtime) -> QueueService:
    return QueueService(rt)


def control_dir(data_dir: Path) -> Path:
    return data_dir / "queue" / "control"
