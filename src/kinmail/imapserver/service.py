"""The IMAP service: listeners on `listen.imap` (STARTTLS) and `listen.imaps` (implicit TLS), and the thin
asyncio layer that moves bytes between a socket and a `Session` (RFC 9051).

`kinmail serve` calls `create(rt)`. Each connection gets a `Connection`: it feeds the sans-I/O
`CommandParser`, answers literal continuations, runs commands one at a time through the session, and does the
stream-level work (STARTTLS, COMPRESS=DEFLATE RFC 4978, reading IDLE's DONE). Keeps nothing on disk.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING

from kinmail.core.idlewatch import IdleWatch
from kinmail.core.ids import new_cid
from kinmail.core.listen import is_loopback, peer_ip
from kinmail.core.log import get_logger
from kinmail.core.service import StreamService
from kinmail.imapserver import cmd_append, cmd_auth, cmd_mailbox, cmd_message, cmd_search  # noqa: F401 - register
from kinmail.imapserver.session import Session
from kinmail.proto.imap_parser import BadInput, Command, CommandParser, NeedLiteral, RawLine
from kinmail.proto.imap_response import Status, tagged, untagged

if TYPE_CHECKING:
    from kinmail.runtime import Runtime

log = get_logger(__name__)

READ_SIZE = 65536
FLUSH_AT = 256 * 1024


class Connection:
    """One client connection: socket ↔ parser ↔ session."""

    def __init__(
        self, rt: Runtime, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool
    ) -> None:
        self.rt = rt
        self.reader = reader
        self.writer = writer
        self.tls = tls
        self.cid = new_cid()
        self.remote_ip = peer_ip(writer)
        self.loopback = is_loopback(self.remote_ip)
        cfg = rt.config.imap
        self.parser = CommandParser(cfg.max_line_length, cfg.max_literal_size)
        self._out: list[bytes] = []
        self._out_size = 0
        self._inflate: zlib._Decompress | None = None
        self._deflate: zlib._Compress | None = None
        self.closed = False
        self._watch: IdleWatch | None = None

    # --- output ------------------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    async def send_big(self, data: bytes) -> None:
        self.send(data)
        if self._out_size >= FLUSH_AT:
            await self.flush()

    async def flush(self) -> None:
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.writer.write(data)
        await self.writer.drain()

    # --- input -------------------------------------------------------------------------------------------
    async def _fill(self, watched: bool = False) -> bool:
        """Read what the client sent; `watched` reads count against the idle timeout (`IdleWatch`)."""
        if watched and self._watch is not None:
            data = await self._watch.wait(self.reader.read(READ_SIZE))
        else:
            data = await self.reader.read(READ_SIZE)
        if not data:
            return False
        if self._inflate is not None:
            data = self._inflate.decompress(data)
        self.parser.feed(data)
        return True

    async def read_line(self) -> bytes | None:
        """One raw line (AUTHENTICATE responses, IDLE's DONE); None at end of stream."""
        self.parser.raw = True
        try:
            while True:
                ev = self.parser.next_event()
                if isinstance(ev, RawLine):
                    return ev.data
                if ev is not None:  # cannot happen in raw mode without pending parts
                    continue
                if not await self._fill():
                    return None
        finally:
            self.parser.raw = False

    # --- stream changes ------------------------------------------------------------------------------------
    async def start_tls(self) -> None:
        assert self.rt.ssl_context is not None
        self.parser = CommandParser(self.parser.max_line, self.parser.max_literal)  # drop injected bytes
        await self.writer.start_tls(self.rt.ssl_context)
        self.tls = True

    def start_compress(self) -> None:
        self._inflate = zlib.decompressobj(-15)
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        rest = bytes(self.parser._buf)  # data already read is compressed too
        self.parser._buf.clear()
        if rest:
            self.parser.feed(self._inflate.decompress(rest))

    @property
    def compressed(self) -> bool:
        return self._deflate is not None

    @compressed.setter
    def compressed(self, value: bool) -> None:  # the Stream protocol's attribute; set via start_compress
        raise AttributeError("use start_compress")

    # --- main loop ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        session = Session(self.rt, self)
        log.debug("imap.connect", cid=self.cid, ip=self.remote_ip, tls=self.tls)  # imap.login names the ip
        self._watch = IdleWatch(self.rt.config.imap.idle_timeout)
        try:
            session.greet()
            await self.flush()
            while not session.logged_out:
                ev = self.parser.next_event()
                if ev is None:
                    await self.flush()
                    if not await self._fill(watched=True):
                        break
                    continue
                if isinstance(ev, Command):
                    await session.execute(ev)
                    if not self.parser.buffered:
                        await self.flush()
                elif isinstance(ev, NeedLiteral):
                    if ev.too_big:
                        self.send(tagged(ev.tag, Status.NO, "Literal too big", "TOOBIG"))
                    elif ev.sync:
                        self.send(b"+ Ready for literal data\r\n")
                        await self.flush()
                elif isinstance(ev, BadInput):
                    session.bad_input(ev.tag, ev.text)
                    if ev.fatal or session.logged_out:
                        break
        except asyncio.CancelledError:
            if not self._watch.fired():
                self.send(untagged("BYE Server shutting down"))
                raise
            self.send(untagged("BYE Autologout; idle for too long"))
        except (ConnectionError, OSError, asyncio.IncompleteReadError, zlib.error) as exc:
            log.info("imap.connection_lost", cid=self.cid, reason=type(exc).__name__)
        except Exception:
            log.exception("imap.crash", cid=self.cid)
            self.send(untagged("BYE Internal server error"))
        finally:
            self._watch.close()
            session.close()
            if self._out:  # after LOGOUT all was sent: no task and timer for `wait_for` to make
                try:
                    await asyncio.wait_for(self.flush(), 2)
                except Exception:
                    pass
            self.writer.close()
            log.info("imap.disconnect", cid=self.cid, ip=self.remote_ip, user=session.user)


class ImapService(StreamService):
    name = "imap"
    plain_key = "imap"
    tls_key = "imaps"
    read_limit = READ_SIZE

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool) -> None:
        await Connection(self.rt, reader, writer, tls=tls).run()


def create(rt: Runtime) -> ImapService | None:
    """The IMAP service, or None when neither `listen.imap` nor `listen.imaps` lists an address."""
    service = ImapService(rt)
    return service if service.enabled() else None
