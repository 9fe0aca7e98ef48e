"""The IMAP connection's idle timeout (RFC 9051 §5.4: an autologout timer), in-process: a `Connection` over a
real loopback socket with a runtime that has only what a connection reads before login. The server's
`idle_timeout` cannot go below 60 s, too long for the suite, so the config here is built past validation."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from kinmail.config.schema import Imap
from kinmail.imapserver.service import Connection


async def serve_one(idle_timeout: int) -> tuple[asyncio.Server, int]:
    imap = Imap().model_copy(update={"idle_timeout": idle_timeout})
    store = SimpleNamespace(
        backfill=SimpleNamespace(busy=lambda: None)
    )  # commands tell the indexer users are busy
    rt = SimpleNamespace(config=SimpleNamespace(imap=imap), ssl_context=None, store=store)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await Connection(rt, reader, writer, tls=False).run()  # type: ignore[arg-type]

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_silent_client_is_logged_out_and_a_talking_one_is_not() -> None:
    server, port = await serve_one(idle_timeout=1)
    async with server:
        silent_r, silent_w = await asyncio.open_connection("127.0.0.1", port)
        talker_r, talker_w = await asyncio.open_connection("127.0.0.1", port)
        assert (await silent_r.readline()).startswith(b"* OK")
        assert (await talker_r.readline()).startswith(b"* OK")
        for n in range(6):  # 1.8 s of commands 0.3 s apart: never idle for a whole second
            await asyncio.sleep(0.3)
            talker_w.write(b"a%d NOOP\r\n" % n)
            assert (await talker_r.readline()).startswith(b"a%d OK" % n)
        rest = await asyncio.wait_for(silent_r.read(), 2)
        assert b"* BYE Autologout" in rest  # then the server closed the connection (read() reached EOF)
        talker_w.write(b"z LOGOUT\r\n")
        assert b"z OK" in await asyncio.wait_for(talker_r.read(), 2)
        for w in (silent_w, talker_w):
            w.close()
