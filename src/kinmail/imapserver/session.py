"""An IMAP session (RFC 9051 §3 states): who is logged in, what is enabled and selected, and the command table.

`Connection` (service.py) hands each parsed `Command` to `Session.execute`, which checks the state, runs the
command module's handler and turns `ImapError` / `ParseError` into tagged NO/BAD replies; the session lives
on after either. Handlers live in `cmd_*.py`, one module per group of commands. Keeps nothing on disk.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from enum import Enum
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeVar

from kinmail.core.errors import KinmailError
from kinmail.core.log import get_logger
from kinmail.proto.imap_parser import Command, ParseError
from kinmail.proto.imap_response import ImapError, Status, tagged, untagged
from kinmail.store import NotShort, short_call

if TYPE_CHECKING:
    from kinmail.imapserver.selected import SelectedMailbox
    from kinmail.runtime import Runtime
    from kinmail.store.store import UserMailboxes
    from kinmail.store.user import UserState

log = get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Store calls that touch the disk run here. Few threads: each store call releases and takes back the GIL at
# every SQLite statement and system call, so many threads mostly hand the GIL to each other (measured with the
# IMAP benchmark on 2 cores: 4 threads gave 10-35 % more than 8 or 32 in every profile); two per core still
# let sessions of different users overlap their fsyncs.
_EXECUTOR = ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 1)), thread_name_prefix="imap-store")


async def blocking(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking store call in the IMAP store threads (like asyncio.to_thread, on its own pool)."""
    loop = asyncio.get_running_loop()
    if kwargs:
        return await loop.run_in_executor(_EXECUTOR, lambda: func(*args, **kwargs))
    return await loop.run_in_executor(_EXECUTOR, func, *args)


QUICK_MESSAGES = 5000  # folders of up to this many messages (list in memory) are opened on the event loop
QUICK_UIDS = 200  # STORE and EXPUNGE of up to this many messages run on the event loop


LEASE_SECONDS = 0.05
"""How long a user's `flock`, once taken by a short call on the event loop, is kept for the next ones; then
it is given back, and no new lease is taken for LEASE_GAP_SECONDS, so another process waiting for it gets in."""
LEASE_GAP_SECONDS = 0.01


class Holder(Protocol):
    """A user's store (`UserMailboxes`) or folder (`Mailbox`): its lock, if free this instant."""

    def held_now(
        self, on_lease: Callable[[UserState], None] | None = None
    ) -> AbstractContextManager[bool]: ...


def _lease_taken(user: UserState) -> None:
    asyncio.get_running_loop().call_later(LEASE_SECONDS, _end_lease, user)


def _end_lease(user: UserState) -> None:
    if not user.end_lease(LEASE_GAP_SECONDS):  # a store thread has the user's lock: try again shortly
        asyncio.get_running_loop().call_later(LEASE_GAP_SECONDS, _end_lease, user)


async def quick(holder: Holder | None, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """A short store call that does not wait for the disk (flags, expunges, opening or refreshing a folder
    that is not large): run on the event loop when the user's lock is free this instant — no hop to a store
    thread and back, and no hand-over of the GIL at every SQLite statement and system call; in a store thread
    when another thread or process holds the lock (a delivery, the full-text indexer), and always when
    `holder` is None (the caller found the call not short)."""
    if holder is not None:
        try:
            with holder.held_now(_lease_taken) as held, short_call():
                if held:
                    return func(*args, **kwargs)
        except NotShort as exc:  # files other programs dropped into the folder: indexed in a thread
            log.debug("imap.scan_in_thread", found=str(exc))
    return await blocking(func, *args, **kwargs)


class State(Enum):
    NOT_AUTHENTICATED = 1
    AUTHENTICATED = 2
    SELECTED = 3
    LOGOUT = 4


ANY = frozenset(State)
NOAUTH = frozenset({State.NOT_AUTHENTICATED})
AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})

Handler = Callable[["Session", Command], Awaitable[None]]


class Stream(Protocol):
    """What the session needs from the connection (service.Connection)."""

    cid: str
    remote_ip: str
    loopback: bool
    tls: bool

    @property
    def compressed(self) -> bool: ...

    def send(self, data: bytes) -> None: ...

    async def send_big(self, data: bytes) -> None: ...

    async def flush(self) -> None: ...

    async def read_line(self) -> bytes | None: ...

    async def start_tls(self) -> None: ...

    def start_compress(self) -> None: ...


COMMANDS: dict[str, tuple[Handler, frozenset[State]]] = {}


def command(name: str, states: frozenset[State]) -> Callable[[Handler], Handler]:
    """Register a handler for `name` ("FETCH", "UID FETCH") in the given states."""

    def register(func: Handler) -> Handler:
        COMMANDS[name] = (func, states)
        return func

    return register


class Session:
    def __init__(self, rt: Runtime, stream: Stream) -> None:
        self.rt = rt
        self.stream = stream
        self.cid = stream.cid
        self.state = State.NOT_AUTHENTICATED
        self.user: str | None = None
        self.mailboxes: UserMailboxes | None = None
        self.selected: SelectedMailbox | None = None
        self.enabled: set[str] = set()  # IMAP4REV2, CONDSTORE, QRESYNC, UTF8=ACCEPT
        self.commands_before_login = 0
        self.current_uid_command = False
        self.saved_search: list[int] = []  # UIDs saved by SEARCH RETURN (SAVE) (RFC 5182)
        self.idle_waiter: asyncio.Future[None] | None = None  # IDLE waits on it; store notifications end it
        self._unsubscribe: Callable[[], None] | None = None
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    @property
    def logged_out(self) -> bool:
        return self.state is State.LOGOUT

    # --- output helpers ----------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.stream.send(data)

    def untagged(self, text: str | bytes) -> None:
        self.stream.send(untagged(text))

    def ok(self, cmd: Command, text: str = "completed", code: str | None = None) -> None:
        self.stream.send(
            tagged(cmd.tag, Status.OK, f"{cmd.name.title()} {text}" if text == "completed" else text, code)
        )

    def greet(self) -> None:
        from kinmail.imapserver.cmd_auth import capability_list

        caps = " ".join(capability_list(self))
        self.untagged(f"OK [CAPABILITY {caps}] kinmail ready")

    def bad_input(self, tag: str, text: str) -> None:
        log.info("imap.bad", cid=self.cid, reason=text)
        self.stream.send(tagged(tag, Status.BAD, text))
        self._count_unauthenticated()

    def _count_unauthenticated(self) -> None:
        if self.state is State.NOT_AUTHENTICATED:
            self.commands_before_login += 1
            if self.commands_before_login > self.rt.config.imap.max_commands_before_login:
                self.untagged("BYE Too many commands without logging in")
                self.state = State.LOGOUT

    # --- state changes -----------------------------------------------------------------------------------
    async def login_done(self, user: str) -> None:
        store = self.rt.store
        self.mailboxes = store.mailboxes_if_open(user) or await blocking(store.mailboxes, user)
        self.user = user
        self.state = State.AUTHENTICATED
        self._unsubscribe = self.rt.store.subscribe(user, self._on_change)

    def _on_change(self, change: object) -> None:
        """Store listener, called from the writing thread: the event loop's own (a short store call run there)
        needs no wake-up through the loop's self-pipe."""
        if threading.get_ident() == self._loop_thread:
            self._loop.call_soon(self._mark_changed, change)
        else:
            self._loop.call_soon_threadsafe(self._mark_changed, change)

    def _mark_changed(self, change: object) -> None:
        sel = self.selected
        if sel is not None and getattr(change, "folder", None) in (sel.name, ""):
            sel.dirty = True
        waiter = self.idle_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.selected = None

    # --- dispatch ----------------------------------------------------------------------------------------
    async def execute(self, cmd: Command) -> None:
        started = time.perf_counter()
        self.rt.store.backfill.busy()  # full-text indexing waits for a quiet moment
        entry = COMMANDS.get(cmd.name)
        self.current_uid_command = cmd.name.startswith("UID ")
        status = "OK"
        try:
            if entry is None:
                raise ImapError(Status.BAD, f"Unknown command {cmd.name[:40]}")
            handler, states = entry
            if self.state not in states:
                self._count_unauthenticated()
                if self.logged_out:
                    return
                raise ImapError(Status.BAD, f"{cmd.name} not allowed now")
            if self.state is State.NOT_AUTHENTICATED and cmd.name not in ("LOGIN", "AUTHENTICATE"):
                self._count_unauthenticated()
                if self.logged_out:
                    return
            await handler(self, cmd)
        except ImapError as exc:
            status = str(exc.status)
            if self.selected is not None and exc.status is Status.NO:
                await self.sync(
                    expunges=not cmd.name.endswith(("FETCH", "STORE", "SEARCH")) or cmd.name.startswith("UID")
                )
            self.send(exc.render(cmd.tag))
        except ParseError as exc:
            status = "BAD"
            self.send(tagged(cmd.tag, Status.BAD, str(exc) or "Syntax error"))
        except KinmailError as exc:
            status = "NO"
            self.send(tagged(cmd.tag, Status.NO, str(exc)))
        if (
            self.state is State.NOT_AUTHENTICATED
            and status == "BAD"
            and cmd.name in ("LOGIN", "AUTHENTICATE")
        ):
            self._count_unauthenticated()
        log.debug(
            "imap.command",
            cid=self.cid,
            cmd=cmd.name,
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def enable_condstore(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162 §3.1): while selected, report HIGHESTMODSEQ once."""
        if "CONDSTORE" in self.enabled:
            return
        self.enabled.add("CONDSTORE")
        if self.selected is not None:
            self.selected.condstore = True
            self.untagged(f"OK [HIGHESTMODSEQ {max(1, self.selected.mailbox.highestmodseq)}] Highest")

    async def sync(self, *, expunges: bool = True) -> None:
        """Tell the client about changes to the selected mailbox (RFC 9051 §7.4, §7.5.1)."""
        if self.selected is not None:
            await self.selected.sync(self, expunges=expunges)
