"""The durable spool: one message file and one metadata file per queued message, the only writer of `queue/`.

Layout under `data_dir/queue/`:

    tmp/            files being written (DATA streams here); anything left at start-up was never acknowledged
    QID.eml         the message as it will be delivered (our Received header first)
    QID.json        the envelope and per-recipient state (`QueuedMessage`); its presence commits the message
    control/        requests from `kinmail queue delete|hold|release` for the running server (see cli/queue_cmd.py)
    free/           files of delivered messages, kept to be written again (`FilePool`)
    .lock           held (flock) by the running server: the CLI edits the spool itself only when it gets the lock

A message is committed by fsyncing both files, renaming them into `queue/` (message first, metadata last) and
fsyncing the folder; only then does SMTP answer `250`. Commits from concurrent sessions are grouped: a commit
thread fsyncs every pending file (all at once) and the folder once per batch (group commit,
`kinmail.queue.batches`). A delivered message's files are removed in batches too (`retire`). The scheduler
(`kinmail.queue.scheduler`) is started by `kinmail.queue.service`. `Queue(rt)` is built by the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinmail.core import clock
from kinmail.core.atomic import atomic_write, fsync_dir, sync_many, write_all
from kinmail.core.errors import KinmailError
from kinmail.core.ids import new_queue_id
from kinmail.core.log import get_logger
from kinmail.core.maildate import now_rfc5322
from kinmail.queue.batches import Batches

if TYPE_CHECKING:
    from kinmail.queue.scheduler import Scheduler
    from kinmail.runtime import Runtime

log = get_logger(__name__)

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
FREE_FILES = 512


@dataclass(slots=True)
class RecipientState:
    """One envelope recipient: `status` pending/delivered/failed; `done` lists final local targets delivered."""

    address: str
    status: str = PENDING
    code: int = 0
    text: str = ""
    remote_host: str = ""
    orcpt: str = ""
    notify: str = ""
    done: list[str] = field(default_factory=list)


@dataclass(slots=True)
class QueuedMessage:
    """The metadata of one queued message (the `.json` file)."""

    queue_id: str
    sender: str
    recipients: list[RecipientState]
    arrival: float
    origin: str = "smtp"
    size: int = 0
    attempts: int = 0
    next_attempt: float = 0.0
    held: bool = False
    warned: bool = False
    envid: str = ""
    ret: str = ""
    auth_user: str = ""
    last_error: str = ""

    def to_json(self) -> bytes:
        # by hand rather than `dataclasses.asdict`, which deep-copies every value: a tenth of the CPU of
        # accepting a small message went there
        raw = {name: getattr(self, name) for name in _MESSAGE_FIELDS}
        raw["recipients"] = [{name: getattr(r, name) for name in _RECIPIENT_FIELDS} for r in self.recipients]
        return json.dumps(raw, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> QueuedMessage:
        raw: dict[str, Any] = json.loads(data)
        raw["recipients"] = [RecipientState(**r) for r in raw["recipients"]]
        return cls(**raw)

    @property
    def pending(self) -> list[RecipientState]:
        return [r for r in self.recipients if r.status == PENDING]


_MESSAGE_FIELDS = tuple(f.name for f in fields(QueuedMessage))
_RECIPIENT_FIELDS = tuple(f.name for f in fields(RecipientState))


class FilePool:
    """Files of delivered messages kept in `queue/free/` to be written again, instead of unlinking them and
    creating new ones: a busy spool then allocates and frees no inodes (on ext4 without a journal every new
    file searched past the inodes freed in the last 30 seconds, which cost a fifth of the server's CPU at a few
    hundred messages a second). A reused file is written over from its start and cut to its new length before
    anything reads it, so that blocks of the same size are written again rather than freed (freeing blocks is
    slow where the disk is mounted with `discard`); nothing of its old content is ever read. Thread-safe."""

    def __init__(self, directory: Path, limit: int = FREE_FILES) -> None:
        self.dir = directory
        self.limit = limit
        self._names: list[str] = []
        self._lock = threading.Lock()
        self._counter = 0

    def load(self) -> None:
        with self._lock:
            self._names = [n for n in os.listdir(self.dir) if not n.startswith(".")]
            self._counter = len(self._names)

    def take(self, path: Path) -> tuple[int, bool]:
        """A file at `path` open for writing from its start, and whether it is a kept one: then its old content
        runs on past what is written until the caller cuts it (`os.ftruncate`) to the length it wrote."""
        with self._lock:
            name = self._names.pop() if self._names else None
        if name is not None:
            try:
                os.rename(self.dir / name, path)
                return os.open(path, os.O_WRONLY), True
            except OSError:
                pass
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), False

    def write(self, path: Path, data: bytes) -> int:
        """A file at `path` holding exactly `data` (a kept one cut to length), still open and not yet synced."""
        fd, reused = self.take(path)
        try:
            write_all(fd, data)
            if reused:
                os.ftruncate(fd, len(data))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def give(self, path: Path) -> None:
        """`path` is no longer needed: keep the file for `take`, or remove it when enough are kept."""
        with self._lock:
            keep = len(self._names) < self.limit
            if keep:
                self._counter += 1
                name = f"f{self._counter}"
        if not keep:
            path.unlink(missing_ok=True)
            return
        try:
            os.rename(path, self.dir / name)
        except FileNotFoundError:
            return
        with self._lock:
            self._names.append(name)


class SpoolFile:
    """A message being received: bytes go straight to a file in `queue/tmp/`, never into memory."""

    def __init__(self, directory: Path, pool: FilePool | None = None) -> None:
        self.queue_id = new_queue_id()
        self.path = directory / f"{self.queue_id}.eml"
        self._pool = pool
        self._reused = False
        if pool is not None:
            fd, self._reused = pool.take(self.path)
            self._fd: int | None = fd
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.size = 0

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise KinmailError("spool file is closed")
        write_all(self._fd, data)
        self.size += len(data)

    def fileno(self) -> int:
        if self._fd is None:
            raise KinmailError("spool file is closed")
        return self._fd

    def finish(self) -> None:
        """Everything is written: a reused file is cut to the message's length (before anyone reads it)."""
        if self._reused and self._fd is not None:
            os.ftruncate(self._fd, self.size)
            self._reused = False

    def close(self) -> None:
        if self._fd is not None:
            try:
                self.finish()
            finally:
                os.close(self._fd)
                self._fd = None

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._pool is not None:
            self._pool.give(self.path)
        else:
            self.path.unlink(missing_ok=True)


@dataclass(slots=True)
class _Commit:
    spool: SpoolFile
    meta: QueuedMessage
    meta_fd: int  # the metadata, written to `tmp/QID.json` and not yet synced


def received_by_us(hostname: str, queue_id: str, note: str = "") -> bytes:
    """A Received header for mail that enters the queue without SMTP (RFC 5321 §4.4), naming the queue id."""
    date = now_rfc5322()
    extra = f" ({note})" if note else ""
    return f"Received: by {hostname} (kinmail){extra}\r\n\tid {queue_id}; {date}\r\n".encode()


class Queue:
    """The spool and its in-memory view. `enqueue` for whole messages, `open_spool` + `commit` for streams."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.dir = rt.data_dir / "queue"
        self.tmp = self.dir / "tmp"
        self.control = self.dir / "control"
        self.free = self.dir / "free"
        for path in (self.dir, self.tmp, self.control, self.free):
            path.mkdir(parents=True, exist_ok=True)
        self.pool = FilePool(self.free)
        self.messages: dict[str, QueuedMessage] = {}
        self.scheduler: Scheduler | None = None
        self._lock_fd: int | None = None
        # Commits get their own thread so that slow deliveries can never hold up a `250`. One batch at a time:
        # two at once (measured) only made the threads contend for the GIL and the disk.
        self._commit_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-commit")
        self._commits: Batches[_Commit, None] = Batches(self._commit_batch, self._commit_executor, parallel=1)
        self._retired: list[str] = []
        self._retire_task: asyncio.Task[None] | None = None
        self._retire_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-retire")

    # --- paths -------------------------------------------------------------------------------------------
    def message_path(self, queue_id: str) -> Path:
        return self.dir / f"{queue_id}.eml"

    def meta_path(self, queue_id: str) -> Path:
        return self.dir / f"{queue_id}.json"

    # --- start-up ----------------------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the spool lock (the server is the spool's single writer); KinmailError when already taken."""
        import fcntl

        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise KinmailError(f"{self.dir} is in use by another kinmail process") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> list[QueuedMessage]:
        """Read every committed message; drop unacknowledged leftovers in tmp/ and messages without metadata."""
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)
        self.pool.load()
        loaded = []
        for meta_file in sorted(self.dir.glob("*.json")):
            queue_id = meta_file.stem
            if not self.message_path(queue_id).exists():
                log.error("queue.orphan_meta", queue_id=queue_id)
                meta_file.unlink(missing_ok=True)
                continue
            try:
                meta = QueuedMessage.from_json(meta_file.read_bytes())
            except (ValueError, TypeError, KeyError) as exc:
                log.error("queue.bad_meta", queue_id=queue_id, reason=str(exc))
                continue
            self.messages[queue_id] = meta
            loaded.append(meta)
        for eml in self.dir.glob("*.eml"):
            if eml.stem not in self.messages and not self.meta_path(eml.stem).exists():
                eml.unlink(missing_ok=True)  # renamed in, but the commit never finished: never acknowledged
        return loaded

    # --- writing -----------------------------------------------------------------------------------------
    def open_spool(self) -> SpoolFile:
        """A new file in tmp/ to stream a message into; `commit` or `SpoolFile.discard` it."""
        return SpoolFile(self.tmp, self.pool)

    async def commit(
        self,
        spool: SpoolFile,
        sender: str,
        recipients: list[str] | list[RecipientState],
        *,
        origin: str,
        **extra: Any,
    ) -> str:
        """Make `spool` a queued message: fsync, rename, fsync the folder (grouped with other sessions)."""
        rcpts = [r if isinstance(r, RecipientState) else RecipientState(r) for r in recipients]
        now = clock.now()
        meta = QueuedMessage(
            queue_id=spool.queue_id,
            sender=sender,
            recipients=rcpts,
            arrival=now,
            origin=origin,
            size=spool.size,
            next_attempt=now,
            **extra,
        )
        # written here, synced by a commit thread: there every system call would wait for the GIL
        meta_fd = self.pool.write(self.tmp / f"{meta.queue_id}.json", meta.to_json())
        await self._commits.submit([_Commit(spool, meta, meta_fd)])
        self.messages[meta.queue_id] = meta
        log.info(
            "queue.enqueued",
            queue_id=meta.queue_id,
            from_=sender,
            nrcpt=len(rcpts),
            size=spool.size,
            origin=origin,
        )
        if self.scheduler is not None:
            self.scheduler.wake(meta.queue_id)
        return meta.queue_id

    async def enqueue(
        self, sender: str, recipients: list[str], data: bytes, *, origin: str, **extra: Any
    ) -> str:
        """Queue a whole message (bounces, Sieve redirects and replies, webmail); durable before it returns.

        A Received header naming the queue id is prepended (RFC 5321 §4.4)."""
        spool = self.open_spool()
        try:
            spool.write(received_by_us(self.rt.config.hostname, spool.queue_id, origin))
            spool.write(data)
        except OSError as exc:
            spool.discard()
            raise KinmailError(f"cannot write to the queue: {exc}") from exc
        return await self.commit(spool, sender, list(recipients), origin=origin, **extra)

    def _commit_batch(self, batch: list[_Commit]) -> list[None]:
        """In a worker thread: make every message of the batch durable, then one fsync of the folder.

        Each file's data is flushed (all files of the batch at once: `sync_many`, one syncfs) before it is
        renamed in; the names are made durable by one fsync of `queue/` for the whole batch. Files in `tmp/`
        need no folder fsync: after a crash they are dropped anyway."""
        started = time.monotonic()
        try:
            fds: list[int] = []
            for item in batch:
                item.spool.finish()
                fds += (item.spool.fileno(), item.meta_fd)
            sync_many(fds, one_fs=True)  # all in tmp/
        finally:
            for item in batch:
                item.spool.close()
                os.close(item.meta_fd)
        for item in batch:
            os.replace(item.spool.path, self.message_path(item.meta.queue_id))
            os.replace(self.tmp / f"{item.meta.queue_id}.json", self.meta_path(item.meta.queue_id))
        fsync_dir(self.dir)
        log.debug(
            "queue.group_commit", count=len(batch), duration_ms=round((time.monotonic() - started) * 1000, 1)
        )
        return [None] * len(batch)

    # --- updates (scheduler and control requests) --------------------------------------------------------
    def save(self, meta: QueuedMessage) -> None:
        """Rewrite the metadata of a message (durably); call from a worker thread."""
        atomic_write(self.meta_path(meta.queue_id), meta.to_json(), mode=0o600)

    def remove(self, queue_id: str) -> None:
        """Forget a finished (or deleted) message: metadata first, so a crash never leaves a message unrecorded."""
        self.messages.pop(queue_id, None)
        self.meta_path(queue_id).unlink(missing_ok=True)
        self.message_path(queue_id).unlink(missing_ok=True)

    def retire(self, queue_id: str) -> None:
        """Forget a delivered message now and remove its files soon, together with others (one worker trip a
        batch, off the event loop). Until they are gone a crash finds the message again, and the delivery
        agent's ledger sees that it was already delivered (exactly once)."""
        self.messages.pop(queue_id, None)
        self._retired.append(queue_id)
        if self._retire_task is None or self._retire_task.done():
            self._retire_task = asyncio.create_task(self._retire_loop())

    async def _retire_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._retired:
            batch, self._retired = self._retired, []
            await loop.run_in_executor(self._retire_executor, self._remove_files, batch)

    def _remove_files(self, queue_ids: list[str]) -> None:
        for queue_id in queue_ids:
            try:
                self.pool.give(self.meta_path(queue_id))  # metadata first: the message is no longer queued
                self.pool.give(self.message_path(queue_id))
            except OSError as exc:  # found again at the next start, and not delivered twice (the ledger)
                log.warning("queue.remove_failed", queue_id=queue_id, reason=str(exc))

    def read_message(self, queue_id: str) -> bytes:
        return self.message_path(queue_id).read_bytes()

    async def close(self) -> None:
        while self._commits.busy:  # commits under way finish: their sessions are owed an answer
            await asyncio.sleep(0.01)
        if self._retire_task is not None:
            with contextlib.suppress(Exception):
                await self._retire_task
        self._commit_executor.shutdown(wait=False)
        self._retire_executor.shutdown(wait=False)
        self.unlock()


def read_spool(queue_dir: Path) -> list[QueuedMessage]:
    """The committed messages of a spool, read-only (for `kinmail queue list` and `show`)."""
    out = []
    for meta_file in sorted(queue_dir.glob("*.json")):
        try:
            out.append(QueuedMessage.from_json(meta_file.read_bytes()))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return out
