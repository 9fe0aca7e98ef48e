"""A fake remote MX (aiosmtpd) for outbound tests: records what it receives, answers what the test says.

    port = pick_port("127.0.0.2", "127.0.0.3")
    with FakeMX("127.0.0.2", port) as mx:
        mx.rcpt_replies["nobody@remote.test"] = "550 5.1.1 no such user"
        mx.fail_next("data", "451 4.3.0 try again later")
        ...
        message = mx.wait_for(1)[0]

It listens on a 127.0.0.x address (every 127/8 address is loopback on Linux), offers STARTTLS with the
test certificate (unless `tls=False`), 8BITMIME and SMTPUTF8, and AUTH PLAIN/LOGIN after TLS when `users`
is given (a relayhost). `messages` lists what was accepted; `sessions` counts the connections that carried a
MAIL command, so a test can see that one connection carried several messages. `ScriptedMX` is a bare asyncio
server for what aiosmtpd will not do: refuse at the greeting, answer EHLO with 502, break STARTTLS.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Received:
    """One message as the fake MX accepted it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: str
    helo: str
    tls: bool
    auth_user: str | None
    mail_options: list[str] = field(default_factory=list)
    session: int = 0


def pick_port(*hosts: str) -> int:
    """A TCP port free on every one of `hosts` (fake MXes share `[delivery] remote_smtp_port`)."""

    def family(host: str) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in host else socket.AF_INET

    for _ in range(50):
        with socket.socket(family(hosts[0])) as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        ok = True
        for host in hosts[1:]:
            with socket.socket(family(host)) as other:
                try:
                    other.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no common free port")


class _Handler:
    def __init__(self, owner: FakeMX) -> None:
        self.owner = owner

    def _scripted(self, stage: str) -> str | None:
        with self.owner._lock:
            queue = self.owner._failures.get(stage)
            if queue:
                return queue.pop(0)
        return None

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        with self.owner._lock:
            self.owner._session_ids.setdefault(id(session), len(self.owner._session_ids) + 1)
            self.owner.transactions += 1
        reply = self._scripted("mail")
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.owner.rcpt_replies.get(address.lower()) or self._scripted("rcpt")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self._scripted("data")
        if reply:
            return reply
        content = envelope.original_content or b""
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(content),
            peer=str(session.peer[0]) if session.peer else "",
            helo=session.host_name or "",
            tls=session.ssl is not None,
            auth_user=session.auth_data if isinstance(session.auth_data, str) else None,
            mail_options=list(envelope.mail_options),
            session=self.owner._session_ids.get(id(session), 0),
        )
        with self.owner._lock:
            self.owner.messages.append(received)
        return "250 2.0.0 OK queued"


class FakeMX:
    """An aiosmtpd server on `host:port` in a background thread."""

    def __init__(
        self,
        host: str = "127.0.0.2",
        port: int | None = None,
        *,
        cert: Path | None = None,
        key: Path | None = None,
        tls: bool = True,
        users: dict[str, str] | None = None,
        hostname: str = "mx.remote.test",
        size_limit: int | None = None,
    ) -> None:
        self.host = host
        self.port = port or pick_port(host)
        self.messages: list[Received] = []
        self.transactions = 0  # MAIL commands seen, accepted or not
        self.rcpt_replies: dict[str, str] = {}
        self._failures: dict[str, list[str]] = {}
        self._session_ids: dict[int, int] = {}
        self._lock = threading.Lock()
        self.users = users
        context: ssl.SSLContext | None = None
        if tls:
            if cert is None or key is None:
                cert, key = _default_cert()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
        kwargs: dict[str, Any] = {
            "tls_context": context,
            "enable_SMTPUTF8": True,
            "hostname": hostname,
        }
        if size_limit is not None:
            kwargs["data_size_limit"] = size_limit
        if users is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_require_tls"] = True
            kwargs["auth_required"] = True
        self.controller = Controller(
            _Handler(self), hostname=host, port=self.port, ready_timeout=10, server_kwargs=kwargs
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and self.users is not None:
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if self.users.get(user) == password:
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    # --- scripting ---------------------------------------------------------------------------------------
    def fail_next(self, stage: str, reply: str, times: int = 1) -> None:
        """Answer the next `times` commands of `stage` ("mail", "rcpt" or "data") with `reply`."""
        assert stage in ("mail", "rcpt", "data")
        with self._lock:
            self._failures.setdefault(stage, []).extend([reply] * times)

    @property
    def sessions(self) -> int:
        """How many connections carried at least one MAIL command."""
        return len(self._session_ids)

    def reset(self) -> None:
        """Forget messages, scripted replies and sessions (between tests sharing one fake MX)."""
        with self._lock:
            self.messages.clear()
            self.rcpt_replies.clear()
            self._failures.clear()
            self._session_ids.clear()
            self.transactions = 0

    def wait_until(self, condition: Any, timeout: float = 30.0, what: str = "condition") -> None:
        """Wait until `condition()` is true (a condition, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.02)
        raise AssertionError(f"{self.host}: timed out waiting for {what}")

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Wait until `count` messages have arrived (a condition, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.02)
        raise AssertionError(f"{self.host}: {len(self.messages)} messages arrived, expected {count}")

    # --- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> FakeMX:
        self.controller.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.controller.stop()

    def __enter__(self) -> FakeMX:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_CERT: dict[str, Path] = {}
_CERT_LOCK = threading.Lock()


def _default_cert() -> tuple[Path, Path]:
    """A self-signed certificate for the fake MX, made once per test process."""
    import atexit
    import shutil
    import tempfile

    from kinmail.core.tlscert import make_self_signed

    with _CERT_LOCK:
        if not _CERT:
            folder = Path(tempfile.mkdtemp(prefix="fakemx-"))
            atexit.register(shutil.rmtree, folder, True)
            make_self_signed("mx.remote.test", folder / "cert.pem", folder / "key.pem")
            _CERT["cert"], _CERT["key"] = folder / "cert.pem", folder / "key.pem"
        return _CERT["cert"], _CERT["key"]


class ScriptedMX:
    """A bare asyncio SMTP server for the odd cases aiosmtpd will not play: a refusing greeting, an EHLO
    answered 502 (the client must fall back to HELO), STARTTLS offered but then broken. Runs in the test's
    own event loop; `connections` counts the connections, `messages` what was accepted."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        greeting: str = "220 scripted.remote.test ESMTP",
        ehlo: str | None = None,
        broken_starttls: bool = False,
        dsn: bool = False,
        max_rcpts: int | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.dsn = dsn
        self.max_rcpts = max_rcpts
        self.transactions: list[list[str]] = []
        self.greeting = greeting
        self.ehlo = ehlo
        self.broken_starttls = broken_starttls
        self.connections = 0
        self.commands: list[str] = []
        self.messages: list[bytes] = []
        self._server: Any = None

    async def _handle(self, reader: Any, writer: Any) -> None:
        import asyncio

        self.connections += 1
        rcpts: list[str] = []
        writer.write(self.greeting.encode() + b"\r\n")
        if not self.greeting.startswith("220"):
            await writer.drain()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.readline(), 5)  # QUIT
            writer.close()
            return
        try:
            while line := await asyncio.wait_for(reader.readline(), 10):
                command = line.decode(errors="replace").strip()
                self.commands.append(command)
                verb = command.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    if self.ehlo:
                        writer.write(self.ehlo.encode() + b"\r\n")
                    else:
                        extra = "250-STARTTLS\r\n" if self.broken_starttls else ""
                        extra += "250-DSN\r\n" if self.dsn else ""
                        writer.write(f"250-scripted.remote.test\r\n{extra}250 8BITMIME\r\n".encode())
                elif verb == "STARTTLS" and self.broken_starttls:
                    writer.write(b"220 go ahead\r\n")
                    await writer.drain()
                    writer.write(b"this is not a TLS server hello\r\n" * 4)
                    await writer.drain()
                    writer.close()
                    return
                elif verb == "MAIL":
                    rcpts = []
                    writer.write(b"250 OK\r\n")
                elif verb == "RCPT":
                    if self.max_rcpts is not None and len(rcpts) >= self.max_rcpts:
                        writer.write(b"452 4.5.3 Too many recipients\r\n")
                    else:
                        rcpts.append(command.split(":", 1)[1].split()[0].strip("<>"))
                        writer.write(b"250 OK\r\n")
                elif verb == "DATA":
                    self.transactions.append(rcpts)
                    writer.write(b"354 go on\r\n")
                    await writer.drain()
                    data = b""
                    while (chunk := await reader.readline()) not in (b".\r\n", b""):
                        data += chunk
                    self.messages.append(data)
                    writer.write(b"250 2.0.0 accepted\r\n")
                elif verb == "QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    break
                else:  # HELO, RSET, NOOP
                    writer.write(b"250 OK\r\n")
                await writer.drain()
        except (OSError, TimeoutError):
            pass
        writer.close()

    async def __aenter__(self) -> ScriptedMX:
        import asyncio

        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
