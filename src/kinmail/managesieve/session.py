"""One ManageSieve connection (RFC 5804) on an asyncio stream.

Created by `kinmail.managesieve.service` for each accepted connection. Parses with
`kinmail.proto.managesieve`, checks passwords with `rt.auth.login`, compiles scripts with
`kinmail.sieve.compile_script` and keeps them through `kinmail.sieve.storage.ScriptStore`
(`data_dir/sieve/DOMAIN/USER/`), whose files delivery reads. Keeps nothing else on disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from kinmail.auth import sasl
from kinmail.core.ids import new_cid
from kinmail.core.listen import is_loopback, peer_ip
from kinmail.core.log import TRACE, get_logger
from kinmail.proto import managesieve as ms
from kinmail.proto.managesieve import Atom, Command, Response, Status, TooLarge
from kinmail.sieve import SieveError, compile_script
from kinmail.sieve import capabilities as sieve_capabilities
from kinmail.sieve.storage import (
    ActiveScript,
    NoSuchScript,
    ScriptExists,
    ScriptStore,
    ScriptStoreError,
    check_name,
)

if TYPE_CHECKING:
    from kinmail.runtime import Runtime

log = get_logger(__name__)

IDLE_TIMEOUT = 1800.0  # seconds; as IMAP (RFC 9051 §5.4: at least 30 minutes)
MAX_ERRORS = 20
READ_SIZE = 65536
IMPLEMENTATION = "kinmail"


class Done(Exception):
    """The connection is to be closed (LOGOUT, BYE, TLS failure)."""


def sieve_extensions() -> list[str]:
    """The SIEVE capability (RFC 5804 §1.7): what `kinmail.sieve` lets users `require`."""
    return sieve_capabilities()


def _unread(reader: asyncio.StreamReader) -> bool:
    """Whether the stream holds bytes the client sent that were not read yet."""
    buffered: bytes = getattr(reader, "_buffer", b"")
    return bool(buffered)


class Connection:
    """A ManageSieve client from greeting to close."""

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
        self.user: str | None = None
        self.errors = 0
        # Scripts arrive as literals; allow some slack over the limit so that "too big" can be answered
        # with QUOTA/MAXSIZE after reading, larger ones are read and dropped.
        self.parser = ms.CommandParser(max_literal=rt.config.sieve.max_script_size + 1)

    # --- plumbing ---------------------------------------------------------------------------------------
    async def _write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def _read_command(self) -> Command | None:
        """The next complete command, or None at EOF or idle timeout."""
        while True:
            try:
                command = self.parser.next()
            except ms.ParseError as exc:
                if exc.fatal:
                    await self._write(ms.BYE_LINE_TOO_LONG.render())
                    raise Done from None
                await self._error(Response(Status.NO, f"Syntax error: {exc}"))
                continue
            if command is not None:
                return command
            try:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                await self._write(ms.BYE_TIMEOUT.render())
                return None
            if not data:
                return None
            self.parser.feed(data)

    async def _error(self, response: Response) -> None:
        self.errors += 1
        await self._write(response.render())
        if self.errors >= MAX_ERRORS:
            await self._write(ms.BYE_TOO_MANY_ERRORS.render())
            raise Done

    def capabilities(self) -> bytes:
        config = self.rt.config
        may_auth = self.tls or self.loopback
        return ms.capability_lines(
            implementation=IMPLEMENTATION,
            sasl=["PLAIN"] if may_auth and self.user is None else [],
            sieve_extensions=sieve_extensions(),
            starttls=not self.tls and self.rt.ssl_context is not None,
            max_redirects=config.sieve.max_redirects,
            notify_methods=["mailto"],
            owner=self.user,
        )

    async def run(self) -> None:
        log.info("managesieve.connect", cid=self.cid, ip=self.remote_ip, tls=self.tls)
        try:
            await self._write(self.capabilities() + Response(Status.OK, "kinmail ManageSieve ready").render())
            while True:
                command = await self._read_command()
                if command is None:
                    break
                if log.is_enabled(TRACE):
                    log.trace("managesieve.command", cid=self.cid, name=command.name)
                await self._dispatch(command)
        except Done:
            pass
        except (ConnectionError, OSError) as exc:
            log.info("managesieve.disconnect", cid=self.cid, reason=type(exc).__name__)
        except Exception:
            log.exception("managesieve.crash", cid=self.cid)
            try:
                await self._write(Response(Status.BYE, "Internal error").render())
            except Exception:
                pass
        finally:
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 2)
            except Exception:
                pass
            log.info("managesieve.close", cid=self.cid, user=self.user)

    async def _dispatch(self, command: Command) -> None:
        entry = _COMMANDS.get(command.name)
        if entry is None:
            await self._error(ms.NO_UNKNOWN)
            return
        handler, needs_auth = entry
        if needs_auth is True and self.user is None:
            await self._error(ms.NO_NOT_AUTHENTICATED)
            return
        if needs_auth is False and self.user is not None:
            await self._error(ms.NO_ALREADY_AUTHENTICATED)
            return
        try:
            await handler(self, command.args)
        except _BadArgs:
            await self._error(ms.NO_SYNTAX)
        except ScriptStoreError as exc:
            await self._error(Response(Status.NO, str(exc)))

    # --- argument helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _strings(args: tuple[ms.Arg, ...], count: int) -> list[str]:
        if len(args) != count or not all(isinstance(a, str) for a in args):
            raise _BadArgs
        return [a for a in args if isinstance(a, str)]

    def _scripts(self) -> ScriptStore:
        assert self.user is not None
        return ScriptStore(self.rt.data_dir, self.user)

    async def _script_text(self, arg: ms.Arg) -> str | None:
        """The script argument, or None after answering why it cannot be taken."""
        if isinstance(arg, TooLarge):
            await self._write((ms.NO_NOT_UTF8 if arg.size < 0 else ms.NO_MAXSIZE).render())
            return None
        if not isinstance(arg, str):
            raise _BadArgs
        if len(arg.encode("utf-8")) > self.rt.config.sieve.max_script_size:
            await self._write(ms.NO_MAXSIZE.render())
            return None
        return arg

    async def _compile(self, text: str) -> Response | None:
        """None when the script compiles, else the NO response listing every error with its line."""

        def check() -> Response | None:
            try:
                compile_script(text)
            except SieveError as exc:
                lines = [f"{line}:{column}: {message}" for line, column, message in exc.errors]
                return Response(Status.NO, "\n".join(lines) or str(exc))
            return None

        return await asyncio.to_thread(check)

    # --- commands (RFC 5804 §2) ---------------------------------------------------------------------------
    async def cmd_capability(self, args: tuple[ms.Arg, ...]) -> None:
        if args:
            raise _BadArgs
        await self._write(self.capabilities() + ms.OK_DONE.render())

    async def cmd_logout(self, args: tuple[ms.Arg, ...]) -> None:
        await self._write(ms.OK_LOGOUT.render())
        raise Done

    async def cmd_noop(self, args: tuple[ms.Arg, ...]) -> None:
        if len(args) > 1 or (args and not isinstance(args[0], str)):
            raise _BadArgs
        tag = args[0] if args and isinstance(args[0], str) else None
        await self._write(Response(Status.OK, "Done", ms.tag_code(tag) if tag is not None else None).render())

    async def cmd_starttls(self, args: tuple[ms.Arg, ...]) -> None:
        if args:
            raise _BadArgs
        if self.tls:
            await self._error(ms.NO_TLS_ACTIVE)
            return
        if self.rt.ssl_context is None:
            await self._error(ms.NO_TLS_UNAVAILABLE)
            return
        await self._write(ms.OK_TLS.render())
        # Anything pipelined after STARTTLS was sent in the clear: refuse it (RFC 3207 §6 reasoning).
        if self.parser.buffered or _unread(self.reader):
            log.info("managesieve.starttls_pipelined", cid=self.cid)
            raise Done
        try:
            await self.writer.start_tls(self.rt.ssl_context)
        except Exception as exc:
            log.info("managesieve.tls_failed", cid=self.cid, reason=str(exc) or type(exc).__name__)
            raise Done from None
        self.tls = True
        log.info("managesieve.starttls", cid=self.cid)
        # RFC 5804 §2.2: the capabilities again, now that TLS is up.
        await self._write(self.capabilities() + ms.OK_DONE.render())

    async def cmd_authenticate(self, args: tuple[ms.Arg, ...]) -> None:
        if not args or len(args) > 2 or not all(isinstance(a, str) for a in args):
            raise _BadArgs
        mechanism = str(args[0]).upper()
        if mechanism != "PLAIN":
            await self._error(ms.NO_MECHANISM)
            return
        if not (self.tls or self.loopback):
            await self._error(ms.NO_ENCRYPT_NEEDED)
            return
        if len(args) == 2:
            response = str(args[1])
        else:
            await self._write(b'""\r\n')  # RFC 5804 §2.1: an empty challenge
            answer = await self._read_command()
            if answer is None:
                raise Done
            if answer.name or len(answer.args) != 1 or not isinstance(answer.args[0], str):
                await self._error(ms.NO_BAD_SASL)
                return
            response = answer.args[0]
            if response == "*":
                await self._error(ms.NO_AUTH_CANCELLED)
                return
        try:
            authzid, authcid, password = sasl.decode_plain(sasl.decode_b64(response))
        except ValueError:
            await self._error(ms.NO_BAD_SASL)
            return
        if authzid and authzid != authcid:
            await self._error(ms.NO_AUTH_FAILED)
            return
        result = await self.rt.auth.login(authcid, password, remote_ip=self.remote_ip, service="managesieve")
        if not result.ok or result.user is None:
            log.info(
                "managesieve.login",
                cid=self.cid,
                user=authcid,
                status="throttled" if result.throttled else "failed",
            )
            await self._error(ms.NO_THROTTLED if result.throttled else ms.NO_AUTH_FAILED)
            return
        self.user = result.user
        log.info("managesieve.login", cid=self.cid, user=self.user, status="ok")
        await self._write(ms.OK_LOGGED_IN.render())

    async def cmd_unauthenticate(self, args: tuple[ms.Arg, ...]) -> None:
        if args:
            raise _BadArgs
        self.user = None
        await self._write(ms.OK_UNAUTHENTICATED.render())

    async def cmd_listscripts(self, args: tuple[ms.Arg, ...]) -> None:
        if args:
            raise _BadArgs
        scripts = await asyncio.to_thread(self._scripts().list)
        await self._write(ms.script_listing(scripts) + ms.OK_DONE.render())

    async def cmd_getscript(self, args: tuple[ms.Arg, ...]) -> None:
        (name,) = self._strings(args, 1)
        try:
            text = await asyncio.to_thread(self._scripts().get, name)
        except NoSuchScript:
            await self._write(ms.NO_NONEXISTENT.render())
            return
        await self._write(ms.literal(text) + ms.OK_DONE.render())

    async def _space_problem(self, store: ScriptStore, name: str, size: int) -> Response | None:
        config = self.rt.config.sieve
        if size > config.max_script_size:
            return ms.NO_MAXSIZE
        scripts = await asyncio.to_thread(store.list)
        if name not in {n for n, _ in scripts} and len(scripts) >= config.max_scripts:
            return ms.NO_MAXSCRIPTS
        return None

    async def cmd_havespace(self, args: tuple[ms.Arg, ...]) -> None:
        if len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], Atom):
            raise _BadArgs
        if not args[1].value.isdigit() or len(args[1].value) > 10:
            raise _BadArgs
        store = self._scripts()
        check_name(args[0])
        problem = await self._space_problem(store, args[0], int(args[1].value))
        await self._write((problem or ms.OK_HAVESPACE).render())

    async def cmd_putscript(self, args: tuple[ms.Arg, ...]) -> None:
        if len(args) != 2 or not isinstance(args[0], str):
            raise _BadArgs
        name = args[0]
        check_name(name)
        text = await self._script_text(args[1])
        if text is None:
            return
        store = self._scripts()
        problem = await self._space_problem(store, name, len(text.encode("utf-8")))
        if problem is None:
            problem = await self._compile(text)
        if problem is not None:
            await self._write(problem.render())
            return
        await asyncio.to_thread(store.put, name, text)
        log.info("managesieve.putscript", cid=self.cid, user=self.user, script=name, size=len(text))
        await self._write(ms.OK_PUT.render())

    async def cmd_checkscript(self, args: tuple[ms.Arg, ...]) -> None:
        if len(args) != 1:
            raise _BadArgs
        text = await self._script_text(args[0])
        if text is None:
            return
        problem = await self._compile(text)
        await self._write((problem or ms.OK_CHECK).render())

    async def cmd_setactive(self, args: tuple[ms.Arg, ...]) -> None:
        (name,) = self._strings(args, 1)
        try:
            await asyncio.to_thread(self._scripts().set_active, name or None)
        except NoSuchScript:
            await self._write(ms.NO_NONEXISTENT.render())
            return
        log.info("managesieve.setactive", cid=self.cid, user=self.user, script=name)
        await self._write(ms.OK_ACTIVE.render())

    async def cmd_deletescript(self, args: tuple[ms.Arg, ...]) -> None:
        (name,) = self._strings(args, 1)
        try:
            await asyncio.to_thread(self._scripts().delete, name)
        except ActiveScript:
            await self._write(ms.NO_ACTIVE.render())
            return
        except NoSuchScript:
            await self._write(ms.NO_NONEXISTENT.render())
            return
        await self._write(ms.OK_DELETED.render())

    async def cmd_renamescript(self, args: tuple[ms.Arg, ...]) -> None:
        old, new = self._strings(args, 2)
        try:
            await asyncio.to_thread(self._scripts().rename, old, new)
        except NoSuchScript:
            await self._write(ms.NO_NONEXISTENT.render())
            return
        except ScriptExists:
            await self._write(ms.NO_EXISTS.render())
            return
        await self._write(ms.OK_RENAMED.render())


class _BadArgs(Exception):
    """The arguments do not fit the command's syntax."""


Handler = Callable[[Connection, tuple[ms.Arg, ...]], Awaitable[None]]

# name -> (handler, needs authentication: True, must not be authenticated: False, either: None)
_COMMANDS: dict[str, tuple[Handler, bool | None]] = {
    "CAPABILITY": (Connection.cmd_capability, None),
    "LOGOUT": (Connection.cmd_logout, None),
    "NOOP": (Connection.cmd_noop, None),
    "STARTTLS": (Connection.cmd_starttls, False),
    "AUTHENTICATE": (Connection.cmd_authenticate, False),
    "UNAUTHENTICATE": (Connection.cmd_unauthenticate, True),
    "LISTSCRIPTS": (Connection.cmd_listscripts, True),
    "GETSCRIPT": (Connection.cmd_getscript, True),
    "HAVESPACE": (Connection.cmd_havespace, True),
    "PUTSCRIPT": (Connection.cmd_putscript, True),
    "CHECKSCRIPT": (Connection.cmd_checkscript, True),
    "SETACTIVE": (Connection.cmd_setactive, True),
    "DELETESCRIPT": (Connection.cmd_deletescript, True),
    "RENAMESCRIPT": (Connection.cmd_renamescript, True),
}
