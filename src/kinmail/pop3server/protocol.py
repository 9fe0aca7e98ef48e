"""One POP3 connection as an asyncio Protocol: moves bytes between the client and `kinmail.proto.pop3`.

`kinmail.pop3server.service` accepts connections through `kinmail.core.listen` and hands each transport to a
`Pop3Protocol`. Commands whose answer is at hand (listings, a message already read ahead) are answered right
in `data_received`, without a task switch; those that wait (a password check, reading a message, QUIT's
expunge, STLS) run as a task while reading from the client is paused. A large message known to need no
encoding goes out with `os.sendfile` over plain TCP. Passwords are checked by
`rt.auth.login` (which also throttles); the maildrop is read and expunged through `kinmail.store` in worker
threads. Keeps nothing on disk of its own.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from typing import TYPE_CHECKING, cast

from kinmail.core.ids import new_cid
from kinmail.core.listen import is_loopback
from kinmail.core.log import TRACE, get_logger
from kinmail.pop3server.maildrop import Maildrop, MaildropLocks
from kinmail.proto import pop3
from kinmail.proto.pop3 import Action, Close, Login, Pop3Session, Quit, Send, SendMessage, StartTls
from kinmail.store import MessageGone

if TYPE_CHECKING:
    from kinmail.runtime import Runtime

log = get_logger(__name__)

FLUSH_SIZE = 256 * 1024  # queued reply bytes written without waiting for the end of the client's batch
CHUNK = 256 * 1024  # messages larger than this are read and sent in pieces
CACHED_LIMIT = 64 * 1024  # messages up to this size are sent at once when the page cache holds them
MAX_PENDING_INPUT = 256 * 1024  # unprocessed client bytes before reading from it pauses


def sendfile_and_close(sock_fd: int, file_fd: int, offset: int, end: int) -> int:
    """Send the file's bytes from `offset` up to `end` on the non-blocking socket until it would block; returns
    the number of bytes sent. Runs in a worker thread (reading the file may wait for the disk) and closes both
    descriptors, which are duplicates made for it: a task cancelled meanwhile cannot close them under it."""
    sent = 0
    try:
        while offset + sent < end:
            try:
                count = os.sendfile(sock_fd, file_fd, offset + sent, end - offset - sent)
            except BlockingIOError:
                break
            if count <= 0:
                break
            sent += count
    finally:
        os.close(sock_fd)
        os.close(file_fd)
    return sent


def pread_and_close(fd: int, size: int, offset: int) -> bytes:
    """`os.pread` in a worker thread on a duplicate descriptor made for it, which it closes."""
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


class Pop3Protocol(asyncio.Protocol):
    """A POP3 client connection from greeting to close. `closed` completes when the connection is gone."""

    def __init__(self, rt: Runtime, locks: MaildropLocks, *, tls: bool, remote_ip: str) -> None:
        self.rt = rt
        self.locks = locks
        self.cid = new_cid()
        self.remote_ip = remote_ip
        config = rt.config.pop3
        self.session = Pop3Session(
            tls=tls,
            loopback=is_loopback(remote_ip),
            tls_available=rt.ssl_context is not None,
            plaintext_policy=config.plaintext_auth_without_tls,
            max_errors=config.max_errors,
        )
        self.loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.maildrop: Maildrop | None = None
        self.lines = pop3.LineBuffer()
        self.retrieved = 0
        self._retrieved_uids: set[int] = set()  # flagged \Seen at QUIT (the UPDATE state)
        self.sent_bytes = 0
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes | bytearray] = []
        self._out_size = 0
        self._pending: list[Action] = []  # actions left over when one had to wait
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._writing_paused = False
        self._reading_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._last_read = self.loop.time()
        self._watchdog: asyncio.TimerHandle | None = None

    # --- asyncio callbacks ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        log.info("pop3.connect", cid=self.cid, ip=self.remote_ip, tls=self.session.tls)
        self._watchdog = self.loop.call_later(self.rt.config.pop3.timeout, self._check_idle)
        self._queue(self.session.greeting())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        self.lines.feed(data)
        self._pump()

    def eof_received(self) -> bool:
        self._closing = True
        return False  # close the transport

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        self._update_reading()
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionResetError("connection lost"))
            self._drain_waiter.exception()  # retrieved here: nobody may be waiting any more
        if self.maildrop is not None:
            self.locks.release(self.maildrop.user, self.cid)
            self.maildrop.close()  # its descriptor is used on the event loop only, never in worker threads
        log.info(
            "pop3.close",
            cid=self.cid,
            retrieved=self.retrieved,
            sent=self.sent_bytes,
            reason=type(exc).__name__ if exc else None,
        )
        if not self.closed.done():
            self.closed.set_result(None)

    # --- output ---------------------------------------------------------------------------------------
    def _queue(self, data: bytes | bytearray) -> None:
        self._out.append(data)
        self._out_size += len(data)
        self.sent_bytes += len(data)
        if self._out_size >= FLUSH_SIZE:
            self._flush()

    def _flush(self) -> None:
        """Write what is queued: pipelined commands (RFC 2449 §6.6) get their answers in few writes."""
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(self._out[0] if len(self._out) == 1 else b"".join(self._out))
        self._out.clear()
        self._out_size = 0

    async def _drain(self) -> None:
        self._flush()
        if self._writing_paused and not self._closing:
            self._drain_waiter = self.loop.create_future()
            await self._drain_waiter

    def _close(self) -> None:
        self._closing = True
        self._flush()
        if self._transport is not None:
            self._transport.close()  # sends what is buffered first

    def _update_reading(self) -> None:
        """Read from the client only while its commands can be handled (flow control both ways)."""
        want = not (self._task is not None or self._writing_paused or self.lines.pending > MAX_PENDING_INPUT)
        if self._transport is None or self._transport.is_closing() or want != self._reading_paused:
            return
        if want:
            self._transport.resume_reading()
        else:
            self._transport.pause_reading()
        self._reading_paused = not want

    def _check_idle(self) -> None:
        """RFC 1939 §3: the autologout timer; one timer per connection, re-armed only when it fires."""
        timeout = self.rt.config.pop3.timeout
        idle = self.loop.time() - self._last_read
        if idle < timeout or self._task is not None:
            self._watchdog = self.loop.call_later(max(timeout - idle, 1.0), self._check_idle)
            return
        log.info("pop3.timeout", cid=self.cid)
        self._queue(pop3.ERR_TIMEOUT.render())
        self._close()

    # --- commands -------------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Handle complete lines until one needs to wait; then a task carries on and pumps again after."""
        while not (self._closing or self._task is not None or self._writing_paused):
            if self._pending:
                actions, self._pending = self._pending, []
            else:
                line = self.lines.next_line()
                if line is None:
                    break
                if log.is_enabled(TRACE):
                    shown = line.split(b" ", 1)[0] if line[:4].upper() in (b"PASS", b"AUTH") else line
                    log.trace("pop3.command", cid=self.cid, line=shown.decode("utf-8", "replace").strip())
                actions = self.session.handle_line(line)
            for index, action in enumerate(actions):
                if not self._perform_now(action):
                    self._pending = actions[index + 1 :]
                    self._task = self.loop.create_task(self._perform_later(action))
                    break
        self._flush()
        self._update_reading()

    def _perform_now(self, action: Action) -> bool:
        """Carry out `action` if it needs no waiting; False when it must run as a task."""
        if isinstance(action, Send):
            self._queue(action.data)
            return True
        if isinstance(action, SendMessage) and self.maildrop is not None:
            # RETR/TOP of a message the page cache holds: answered here, no task, no thread.
            wire = self.maildrop.encoded_if_cached(action.uid, action.body_lines, CACHED_LIMIT)
            if wire is None:
                return False
            self._queue(pop3.octets(action.size))
            self._queue(wire)
            if action.body_lines is None:
                self.retrieved += 1
                self._retrieved_uids.add(action.uid)
            return True
        if isinstance(action, Close):
            log.info("pop3.too_many_errors", cid=self.cid, errors=self.session.errors)
            self._queue(action.reply.render())
            self._close()
            return True
        return False

    async def _perform_later(self, action: Action) -> None:
        try:
            if isinstance(action, Login):
                self._pending = await self._login(action) + self._pending
            elif isinstance(action, SendMessage):
                await self._send_message(action)
            elif isinstance(action, StartTls):
                await self._start_tls(action)
            elif isinstance(action, Quit):
                await self._quit(action)
        except (ConnectionError, OSError) as exc:
            log.info("pop3.disconnect", cid=self.cid, reason=type(exc).__name__)
            self._close()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pop3.crash", cid=self.cid)
            self._out.clear()
            self._queue(pop3.ERR_INTERNAL.render())
            self._close()
        finally:
            self._task = None
        if not self._closing:
            self._pump()

    async def _login(self, action: Login) -> list[Action]:
        started = time.monotonic()
        result = await self.rt.auth.login(
            action.username, action.password, remote_ip=self.remote_ip, service="pop3"
        )
        if not result.ok or result.user is None:
            status = "throttled" if result.throttled else "failed"
            log.info("pop3.login", cid=self.cid, user=action.username, status=status)
            return self.session.login_failed(result.throttled)
        user = result.user
        if not self.locks.acquire(user, self.cid):
            log.info("pop3.login", cid=self.cid, user=user, status="in-use")
            return self.session.maildrop_locked()
        try:
            local, _, domain = user.partition("@")
            maildir = self.rt.data_dir / "mail" / domain / local
            maildrop = await asyncio.to_thread(
                Maildrop, self.rt.store, maildir, user, remember_from=CACHED_LIMIT + 1
            )
            messages = await asyncio.to_thread(maildrop.load)
        except Exception:
            self.locks.release(user, self.cid)
            log.exception("pop3.maildrop_failed", cid=self.cid, user=user)
            return self.session.maildrop_failed()
        if self._closing:  # the client went away while we were loading
            self.locks.release(user, self.cid)
            maildrop.close()
            return []
        self.maildrop = maildrop
        duration = round((time.monotonic() - started) * 1000)
        log.info(
            "pop3.login", cid=self.cid, user=user, status="ok", messages=len(messages), duration_ms=duration
        )
        return self.session.login_ok(user, messages)

    async def _start_tls(self, action: StartTls) -> None:
        context = self.rt.ssl_context
        assert context is not None and self._transport is not None
        self._queue(action.reply.render())
        await self._drain()
        # RFC 2595 §4 / RFC 3207 §6: anything pipelined after STLS was sent in the clear; refuse it.
        if self.lines.pending:
            log.info("pop3.stls_pipelined", cid=self.cid)
            self._close()
            return
        try:
            transport = await self.loop.start_tls(self._transport, self, context, server_side=True)
        except Exception as exc:
            log.info("pop3.tls_failed", cid=self.cid, reason=str(exc) or type(exc).__name__)
            self._close()
            return
        if transport is None:
            self._close()
            return
        self._transport = transport
        self._reading_paused = False
        self.session.tls_started()
        log.info("pop3.starttls", cid=self.cid)

    async def _quit(self, action: Quit) -> None:
        maildrop = self.maildrop
        if maildrop is not None and (action.expunge_uids or self._retrieved_uids):
            try:
                removed = await asyncio.to_thread(
                    maildrop.update, list(action.expunge_uids), sorted(self._retrieved_uids)
                )
            except Exception:
                log.exception("pop3.expunge_failed", cid=self.cid, user=maildrop.user)
                self._queue(pop3.ERR_EXPUNGE.render())
                self._close()
                return
            log.info("pop3.update", cid=self.cid, user=maildrop.user, deleted=len(removed))
        self._queue((pop3.BYE if maildrop is None else pop3.BYE_UPDATED).render())
        self._close()

    # --- messages -------------------------------------------------------------------------------------
    async def _send_message(self, action: SendMessage) -> None:
        """RETR and TOP of messages not in the page cache (read in a worker thread) and of large ones
        (streamed in pieces)."""
        maildrop = self.maildrop
        assert maildrop is not None
        head = pop3.octets(action.size)
        try:
            if (
                action.body_lines is None
                and maildrop.as_is.get(action.uid)
                and await self._sendfile(action, head)
            ):
                pass
            elif action.size > CHUNK:
                await self._stream_message(action, head)
            else:
                wire = await asyncio.to_thread(maildrop.encoded, action.uid, action.body_lines)
                self._queue(head)
                self._queue(wire)
        except (MessageGone, FileNotFoundError):
            self._pending = self.session.message_gone() + self._pending
            return
        if action.body_lines is None:
            self.retrieved += 1
            self._retrieved_uids.add(action.uid)

    async def _sendfile(self, action: SendMessage, head: bytes) -> bool:
        """RETR of a message known to need no encoding, over plain TCP: `os.sendfile` from the file to the
        socket (no copy through Python) whenever nothing else waits to be written before it; when the socket
        is full, the next piece is read and queued as usual (flow control as for streaming), and sendfile
        takes over again once the queue is empty. False (nothing sent) when this cannot be done."""
        transport = self._transport
        maildrop = self.maildrop
        if (
            transport is None
            or maildrop is None
            or self.session.tls
            or transport.get_extra_info("sslcontext")
        ):
            return False
        sock = transport.get_extra_info("socket")
        self._flush()
        if sock is None or transport.get_write_buffer_size():
            return False
        try:
            fd = maildrop.open_fd(action.uid)  # MessageGone goes to the caller
        except FileNotFoundError:
            return False  # renamed meanwhile (a flag changed): the usual path finds it again
        offset = by_sendfile = 0
        try:
            size = os.fstat(fd).st_size
            self._queue(head)
            while offset < size:
                self._flush()
                if not transport.get_write_buffer_size():
                    # Duplicates: the socket stays this connection's even if the transport closes meanwhile.
                    sock_dup = os.dup(sock.fileno())
                    try:
                        file_dup = os.dup(fd)
                    except OSError:
                        os.close(sock_dup)
                        raise
                    count = await asyncio.to_thread(sendfile_and_close, sock_dup, file_dup, offset, size)
                    offset += count
                    by_sendfile += count
                    if offset >= size:
                        break
                    log.debug("pop3.sendfile_full", cid=self.cid, uid=action.uid, offset=offset, size=size)
                piece = await asyncio.to_thread(
                    pread_and_close, os.dup(fd), min(CHUNK, size - offset), offset
                )
                if not piece:  # Maildir files do not change; the answer cannot be completed
                    raise OSError(errno.EIO, f"message {action.uid} shrank while being sent")
                self._queue(piece)
                offset += len(piece)
                await self._drain()
        finally:
            os.close(fd)
        self.sent_bytes += by_sendfile
        log.debug("pop3.sendfile", cid=self.cid, uid=action.uid, size=size, sent=by_sendfile)
        self._queue(pop3.TERMINATOR)
        return True

    async def _stream_message(self, action: SendMessage, head: bytes) -> None:
        maildrop = self.maildrop
        assert maildrop is not None
        stream = await asyncio.to_thread(maildrop.open, action.uid)
        encoder = pop3.MessageEncoder(action.body_lines)
        read = written = 0  # the encoder only ever adds bytes: equal counts mean nothing had to change
        try:
            self._queue(head)
            while not encoder.done and (chunk := await asyncio.to_thread(stream.read, CHUNK)):
                out = encoder.feed(chunk)
                read += len(chunk)
                written += len(out)
                self._queue(out)
                await self._drain()
            tail = encoder.finish()
            self._queue(tail)
        finally:
            stream.close()
        if action.body_lines is None and action.uid not in maildrop.as_is:
            as_is = read == written and read > 0 and tail == pop3.TERMINATOR
            await asyncio.to_thread(maildrop.remember, action.uid, as_is, read)
