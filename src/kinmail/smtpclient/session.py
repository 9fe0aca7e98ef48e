"""One outbound SMTP connection (aiosmtplib): greeting, EHLO, opportunistic STARTTLS, AUTH, transactions.

Used by `kinmail.smtpclient.transport` and kept between messages by `kinmail.smtpclient.pool`.

- RFC 3207: STARTTLS whenever offered; certificates are not verified (opportunistic TLS, like Postfix's
  `smtp_tls_security_level = may`): an encrypted channel to an unauthenticated host beats plain text. What
  was negotiated is logged. A failed handshake is remembered for the address for an hour, and the transport
  goes on at once over a new plain-text connection (as Postfix does).
- RFC 4954: AUTH (for the relayhost) only over TLS, or to a loopback address.
- RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8 and RFC 3461 DSN are honoured as the server announces
  them. Recipients beyond what the server takes in one transaction (452 4.5.3, RFC 5321 §4.5.3.1.10) go in
  further transactions on the same connection.

Replies come back as `(code, text)` with `text` beginning with the enhanced status code (RFC 3463); when the
server gave none, a generic one (`5.0.0`, `4.0.0`) is put in front.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from dataclasses import dataclass, field

import aiosmtplib

from kinmail.core.listen import is_loopback
from kinmail.core.log import get_logger
from kinmail.proto.smtp import xtext_encode
from kinmail.smtpclient.route import Hop

log = get_logger(__name__)

CONNECT_TIMEOUT = 30.0
COMMAND_TIMEOUT = 300.0  # RFC 5321 §4.5.3.2.2-4: MAIL and RCPT 5 minutes
DATA_TIMEOUT = 600.0  # RFC 5321 §4.5.3.2.6: 10 minutes for the final reply
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\b")


def with_enhanced(code: int, text: str, default_detail: str = "0.0") -> str:
    """One-line reply text that begins with an enhanced status code (RFC 3463 §2)."""
    text = " ".join(text.split())
    if _ENHANCED.match(text):
        return text
    return f"{str(code)[0]}.{default_detail} {text}".rstrip()


@dataclass(frozen=True, slots=True)
class DsnRequest:
    """RFC 3461 parameters of a queued message, passed on when the next hop announces DSN (§4.1, §5.2).

    `envid` and the address part of `orcpt` are decoded text (encoded as xtext here); `notify` maps each
    recipient to "SUCCESS,FAILURE" style keywords, `orcpt` to "rfc822; address"."""

    ret: str = ""
    envid: str = ""
    notify: dict[str, str] = field(default_factory=dict)
    orcpt: dict[str, str] = field(default_factory=dict)

    def mail_options(self) -> list[bytes]:
        options = []
        if self.ret.upper() in ("FULL", "HDRS"):
            options.append(b"RET=" + self.ret.upper().encode())
        if self.envid:
            options.append(b"ENVID=" + xtext_encode(self.envid).encode())
        return options

    def rcpt_options(self, rcpt: str) -> list[bytes]:
        options = []
        notify = self.notify.get(rcpt, "").upper()
        if notify and set(notify.split(",")) <= {"NEVER", "SUCCESS", "FAILURE", "DELAY"}:
            options.append(b"NOTIFY=" + notify.encode())
        kind, sep, address = self.orcpt.get(rcpt, "").partition(";")
        if sep and kind.strip() and address.strip():
            options.append(b"ORCPT=" + kind.strip().encode() + b";" + xtext_encode(address.strip()).encode())
        return options


@dataclass(slots=True)
class SessionFailure(Exception):
    """The session could not go on. `code` 0 means a network error (no reply at all)."""

    stage: str  # connect, greeting, ehlo, starttls, auth, mail, rcpt, data
    code: int
    text: str
    host: str

    def reply(self) -> tuple[int, str]:
        """The reply to record: network trouble becomes 451 4.4.1/4.4.2 (RFC 3463 §3.5)."""
        if self.code:
            return self.code, self.text
        detail = "4.4.1" if self.stage in ("connect", "greeting") else "4.4.2"
        return 451, f"{detail} {self.text}"

    def __str__(self) -> str:
        return f"{self.stage}: {self.code} {self.text}"


def _client_tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_TLS_CONTEXT = _client_tls_context()
# Addresses whose TLS handshake failed recently: address -> monotonic time until which TLS is skipped.
_TLS_BROKEN: dict[tuple[str, int], float] = {}
TLS_BROKEN_FOR = 3600.0


class Connection:
    """An open, greeted SMTP session to one address of one hop."""

    def __init__(self, smtp: aiosmtplib.SMTP, hop: Hop, address: str, cid: str) -> None:
        self.smtp = smtp
        self.hop = hop
        self.address = address
        self.cid = cid
        self.tls = ""  # e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384", "" when plain
        self.authenticated = False
        self.wants_auth = False  # credentials were configured for this host
        self.uses = 0
        self.opened = time.monotonic()
        self.last_used = self.opened

    @property
    def label(self) -> str:
        return f"{self.hop.name}[{self.address}]:{self.hop.port}"

    # --- opening -----------------------------------------------------------------------------------------
    @classmethod
    async def open(
        cls, hop: Hop, address: str, *, helo: str, cid: str, credentials: tuple[str, str] | None
    ) -> Connection:
        """Connect, read the greeting, EHLO (HELO as a fallback), STARTTLS when offered, AUTH if asked."""
        smtp = aiosmtplib.SMTP(
            hostname=address,
            port=hop.port,
            local_hostname=helo,
            timeout=COMMAND_TIMEOUT,
            start_tls=False,
            use_tls=False,
            validate_certs=False,
        )
        label = f"{hop.name}[{address}]:{hop.port}"
        try:
            await smtp.connect(timeout=CONNECT_TIMEOUT)
        except aiosmtplib.SMTPConnectResponseError as exc:
            smtp.close()
            raise SessionFailure("greeting", exc.code, with_enhanced(exc.code, exc.message), label) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            smtp.close()
            raise SessionFailure("connect", 0, f"connection to {label} failed: {_why(exc)}", label) from None
        conn = cls(smtp, hop, address, cid)
        try:
            await conn._hello(helo)
            key = (address, hop.port)
            if smtp.supports_extension("starttls") and _TLS_BROKEN.get(key, 0.0) < time.monotonic():
                await conn._starttls(helo)
            if credentials is not None:
                conn.wants_auth = True
                await conn._auth(credentials)
        except BaseException:
            conn.close()
            raise
        log.info(
            "smtpclient.connected", cid=cid, relay=label, tls=conn.tls or "none", auth=conn.authenticated
        )
        return conn

    async def _hello(self, helo: str) -> None:
        try:
            reply = await self.smtp.execute_command(b"EHLO", _helo_bytes(helo))
            if reply.code == 250:
                self.smtp.last_ehlo_response = reply
                return
            reply = await self.smtp.execute_command(b"HELO", _helo_bytes(helo))
            if reply.code == 250:
                self.smtp.last_helo_response = reply
                return
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SessionFailure(
                "ehlo", 0, f"lost connection to {self.label} after greeting: {_why(exc)}", self.label
            ) from None
        raise SessionFailure("ehlo", reply.code, with_enhanced(reply.code, reply.message), self.label)

    async def _starttls(self, helo: str) -> None:
        try:
            reply = await self.smtp.starttls(server_hostname=self.hop.name, tls_context=_TLS_CONTEXT)
        except aiosmtplib.SMTPResponseException as exc:
            # The server offered STARTTLS and then refused it: carry on in plain text (RFC 3207 §4).
            log.info("smtpclient.starttls_refused", cid=self.cid, relay=self.label, code=exc.code)
            return
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
            now = time.monotonic()
            for stale in [k for k, until in _TLS_BROKEN.items() if until < now]:
                del _TLS_BROKEN[stale]
            _TLS_BROKEN[(self.address, self.hop.port)] = now + TLS_BROKEN_FOR
            log.info("smtpclient.tls_failed", cid=self.cid, relay=self.label, reason=_why(exc))
            raise SessionFailure(
                "starttls", 0, f"TLS handshake with {self.label} failed: {_why(exc)}", self.label
            ) from None
        if reply.code != 220:
            log.info("smtpclient.starttls_refused", cid=self.cid, relay=self.label, code=reply.code)
            return
        ssl_object = self.smtp.get_transport_info("ssl_object")
        if ssl_object is not None:
            cipher = ssl_object.cipher()
            self.tls = f"{ssl_object.version()} {cipher[0] if cipher else ''}".strip()
            log.info(
                "smtpclient.tls",
                cid=self.cid,
                relay=self.label,
                version=ssl_object.version(),
                cipher=cipher[0] if cipher else "",
                bits=cipher[2] if cipher else "",
                trust="unverified",
            )
        await self._hello(helo)

    async def _auth(self, credentials: tuple[str, str]) -> None:
        if not self.smtp.supports_extension("auth"):
            log.info("smtpclient.auth_not_offered", cid=self.cid, relay=self.label)
            return
        if not self.tls and not is_loopback(self.address):
            log.warning("smtpclient.auth_without_tls_refused", cid=self.cid, relay=self.label)
            return
        user, password = credentials
        try:
            await self.smtp.login(user, password)
        except aiosmtplib.SMTPResponseException as exc:
            # Postfix defers on a SASL failure: it is our credentials, not the message, that are wrong.
            text = f"4.7.0 authentication to {self.label} as {user} failed: {exc.code} {' '.join(exc.message.split())}"
            raise SessionFailure("auth", 454, text, self.label) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SessionFailure(
                "auth", 0, f"lost connection to {self.label} during AUTH: {_why(exc)}", self.label
            ) from None
        self.authenticated = True

    # --- using -------------------------------------------------------------------------------------------
    async def reset(self) -> bool:
        """RSET before a reused connection carries another message; False when it is no longer usable."""
        if not self.smtp.is_connected:
            return False
        try:
            reply = await self.smtp.execute_command(b"RSET", timeout=30.0)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            return False
        return reply.code == 250

    @property
    def supports_dsn(self) -> bool:
        return self.smtp.supports_extension("dsn")

    async def send(
        self, sender: str, recipients: list[str], data: bytes, dsn: DsnRequest | None = None
    ) -> list[tuple[str, int, str]]:
        """Send one message; returns (recipient, code, text) for each recipient. Raises SessionFailure when
        the session breaks before any recipient has an outcome, or the server refuses MAIL FROM. The DSN
        parameters of `dsn` go along when the server announces DSN (RFC 3461 §4)."""
        self.uses += 1
        self.last_used = time.monotonic()
        smtp = self.smtp
        envelope_utf8 = not (sender.isascii() and all(r.isascii() for r in recipients))
        options: list[bytes] = []
        if smtp.supports_extension("size"):
            limit = smtp.esmtp_extensions.get("size", "")
            if limit.isdigit() and int(limit) and len(data) > int(limit):
                text = f"5.3.4 message of {len(data)} bytes exceeds the {limit} bytes {self.hop.name} accepts"
                return [(rcpt, 552, text) for rcpt in recipients]
            options.append(b"SIZE=%d" % len(data))
        if not data.isascii() and smtp.supports_extension("8bitmime"):
            options.append(b"BODY=8BITMIME")
        if envelope_utf8 or (not data.isascii() and smtp.supports_extension("smtputf8")):
            if not smtp.supports_extension("smtputf8"):
                # RFC 6531 §3.2: without SMTPUTF8 a UTF-8 address cannot be sent; no downgrade exists.
                text = f"5.6.7 {self.hop.name} does not support SMTPUTF8, needed for a UTF-8 address"
                return [(rcpt, 553, text) for rcpt in recipients]
            options.append(b"SMTPUTF8")
        if dsn is not None and self.supports_dsn:
            options.extend(dsn.mail_options())
        # RFC 5321 §4.5.3.1.10: a server may take fewer recipients per transaction than we have (452 4.5.3);
        # the rest go in further transactions on the same connection, as Postfix does.
        results: dict[str, tuple[int, str]] = {}
        pending = list(recipients)
        first = True
        while pending:
            outcomes, overflow = await self._transaction(sender, pending, data, options, dsn, first=first)
            results.update(outcomes)
            first = False
            if not overflow:
                break
            pending = overflow
        return [(r, *results[r]) for r in recipients]

    async def _transaction(
        self,
        sender: str,
        recipients: list[str],
        data: bytes,
        options: list[bytes],
        dsn: DsnRequest | None,
        *,
        first: bool,
    ) -> tuple[dict[str, tuple[int, str]], list[str]]:
        """MAIL, RCPT..., DATA. Returns the outcome of each recipient it settled and the recipients left over
        because the server took no more in this transaction."""
        smtp = self.smtp
        try:
            reply = await smtp.execute_command(b"MAIL", b"FROM:<" + sender.encode() + b">", *options)
        except ValueError:
            return {rcpt: (501, f"5.1.7 bad sender address {sender!r}") for rcpt in recipients}, []
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            text = f"lost connection to {self.label} at MAIL FROM: {_why(exc)}"
            if first:
                raise SessionFailure("mail", 0, text, self.label) from None
            return {rcpt: (451, f"4.4.2 {text}") for rcpt in recipients}, []
        if reply.code != 250:
            failure = SessionFailure("mail", reply.code, with_enhanced(reply.code, reply.message), self.label)
            if reply.code >= 500 and self.wants_auth and not self.authenticated:
                # We were meant to log in and could not (no TLS, no AUTH offered): our problem, not the
                # message's — defer instead of bouncing.
                failure.code, failure.text = 451, f"4.7.0 not authenticated to {self.label}: {failure.text}"
            if first:
                raise failure
            return {rcpt: (failure.code, failure.text) for rcpt in recipients}, []
        outcomes: dict[str, tuple[int, str]] = {}
        accepted: list[str] = []
        overflow: list[str] = []
        for index, rcpt in enumerate(recipients):
            try:
                rcpt_options = dsn.rcpt_options(rcpt) if dsn is not None and self.supports_dsn else []
                reply = await smtp.execute_command(b"RCPT", b"TO:<" + rcpt.encode() + b">", *rcpt_options)
            except ValueError:
                outcomes[rcpt] = (501, f"5.1.3 bad recipient address {rcpt!r}")
                continue
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                text = f"4.4.2 lost connection to {self.label} at RCPT TO: {_why(exc)}"
                return {r: outcomes.get(r, (451, text)) for r in recipients}, []
            text = with_enhanced(reply.code, reply.message)
            if reply.code in (250, 251):
                accepted.append(rcpt)
            elif accepted and _too_many_recipients(reply.code, text):
                overflow = recipients[index:]
                break
            else:
                outcomes[rcpt] = (reply.code, text)
        if not accepted:
            await self.reset()
            return outcomes, []
        try:
            reply = await smtp.data(data, timeout=DATA_TIMEOUT)
            code, text = reply.code, with_enhanced(reply.code, reply.message)
        except aiosmtplib.SMTPResponseException as exc:
            code, text = exc.code, with_enhanced(exc.code, exc.message)
            if code < 400:
                code, text = 451, f"4.0.0 unexpected reply to DATA: {exc.code} {exc.message}"
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            code, text = 451, f"4.4.2 lost connection to {self.label} during DATA: {_why(exc)}"
            outcomes.update({r: (code, text) for r in accepted + overflow})
            return outcomes, []
        for rcpt in accepted:
            outcomes[rcpt] = (code, text)
        if overflow and not smtp.is_connected:
            outcomes.update({r: (451, f"4.4.2 connection to {self.label} closed") for r in overflow})
            return outcomes, []
        return outcomes, overflow

    @property
    def usable(self) -> bool:
        return self.smtp.is_connected

    async def quit(self) -> None:
        if self.smtp.is_connected:
            try:
                await asyncio.wait_for(self.smtp.quit(), 5.0)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                pass
        self.close()

    def close(self) -> None:
        self.smtp.close()


def _too_many_recipients(code: int, text: str) -> bool:
    """RFC 5321 §4.5.3.1.10: "452 too many recipients" (RFC 3463 §3.6: 4.5.3)."""
    return code == 452 and (text.startswith("4.5.3") or "too many recipients" in text.lower())


def _helo_bytes(name: str) -> bytes:
    """The EHLO argument: the host name in ASCII (IDNA for a non-ASCII name, RFC 5321 §2.3.5)."""
    try:
        return name.encode("idna")
    except UnicodeError:
        return name.encode("ascii", "replace")


def _why(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:200]
