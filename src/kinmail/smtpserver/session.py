"""One SMTP connection (MX on 25, submission on 587/465): commands in, replies out, messages into the queue.

The command grammar, paths, replies and the DATA decoder are sans-I/O in `kinmail.proto.smtp` and
`kinmail.proto.smtpdata`; the checks are `kinmail.policy.checks`; this module moves bytes and keeps the
transaction state. RFC 5321 throughout; PIPELINING (RFC 2920: replies are flushed when the client's input is
used up), SIZE (RFC 1870), 8BITMIME, SMTPUTF8 (RFC 6531), ENHANCEDSTATUSCODES (RFC 2034), STARTTLS (RFC 3207:
input pipelined after it is discarded), CHUNKING (RFC 3030), DSN (RFC 3461), AUTH (RFC 4954, submission only,
and only under TLS). On the MX port a client that talks before the greeting is dropped (as Postfix's
postscreen does). DATA and BDAT stream into a spool file; `250 ... queued as ID` only after the queue has
made it durable. Called by `kinmail.smtpserver.service`. Keeps nothing on disk itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kinmail.auth import sasl
from kinmail.core.idlewatch import IdleWatch
from kinmail.core.ids import new_cid
from kinmail.core.listen import peer_ip
from kinmail.core.log import get_logger
from kinmail.mailauth.dkim import sign_message
from kinmail.policy.checks import check_client, check_helo, check_recipient, check_sender, in_networks
from kinmail.policy.decision import Action, Decision, Reason
from kinmail.proto import smtp
from kinmail.proto.smtp import ProtocolError, Reply
from kinmail.proto.smtpdata import DataDecoder
from kinmail.queue.spool import RecipientState, SpoolFile
from kinmail.smtpserver.authexchange import Cancelled, credentials
from kinmail.smtpserver.message import (
    SubmissionRefused,
    TlsInfo,
    UserRateLimit,
    prepare_submission,
    protocol_keyword,
    received_header,
)

if TYPE_CHECKING:
    from kinmail.runtime import Runtime

log = get_logger(__name__)

READ_SIZE = 65536
MX, SUBMISSION, SUBMISSIONS = "smtp", "submission", "submissions"


class _Closed(Exception):
    """The client went away."""


@dataclass(slots=True)
class Transaction:
    sender: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    recipients: list[RecipientState] = field(default_factory=list)
    discard: bool = False
    hold: bool = False
    bdat_spool: SpoolFile | None = None
    bdat_size: int = 0
    bdat_failed: Reply | None = None


class SmtpSession:
    """The state of one connection. `run()` serves it to the end; it never raises."""

    def __init__(
        self,
        rt: Runtime,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        mode: str,
        rate_limit: UserRateLimit,
    ) -> None:
        self.rt = rt
        self.reader = reader
        self.writer = writer
        self.mode = mode
        self.rate_limit = rate_limit
        self.cid = new_cid()
        self.client_ip = peer_ip(writer)
        self._trusted: tuple[object, bool] | None = None  # (the mynetworks list it was found for, answer)
        self.buf = bytearray()
        self._out: list[bytes] = []  # replies not yet handed to the transport (`flush`)
        self.helo = ""
        self.esmtp = False
        self.tls: TlsInfo | None = None
        self.user: str | None = None
        self.errors = 0
        self.tx = Transaction()
        self.messages = 0
        self._watch: IdleWatch | None = None  # the idle timeout (`smtpd.timeout`) while `run()` serves
        if mode == SUBMISSIONS:
            self._note_tls()

    # --- I/O -----------------------------------------------------------------------------------------------
    def send(self, reply: Reply) -> None:
        """Queue a reply; `flush` sends the queued ones together. `read_line` flushes before it waits for the
        client, so the replies to pipelined commands (MAIL, RCPT, DATA in one packet) go out in one write, as
        Postfix answers them, instead of a system call each."""
        self._out.append(reply.render())

    def _write_out(self) -> None:
        if self._out:
            self.writer.write(b"".join(self._out))
            self._out.clear()

    async def flush(self) -> None:
        self._write_out()
        await self.writer.drain()

    async def _fill(self) -> None:
        self._write_out()  # never wait for the client with a reply of ours held back
        watch = self._watch
        if watch is None:  # not yet serving (tests drive parts of a session directly)
            data = await self.reader.read(READ_SIZE)
        else:
            try:
                data = await watch.wait(self.reader.read(READ_SIZE))
            except asyncio.CancelledError:
                if not watch.fired():
                    raise
                self.send(smtp.TIMEOUT)
                with contextlib.suppress(Exception):
                    await self.flush()
                raise _Closed from None
        if not data:
            raise _Closed
        self.buf += data

    async def read_line(self) -> bytes:
        limit = self.rt.config.smtpd.line_length_limit
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[: end + 1])
                del self.buf[: end + 1]
                if len(line) > limit:
                    raise ProtocolError(smtp.LINE_TOO_LONG)
                return line
            if len(self.buf) > limit:
                self.buf.clear()
                while True:  # drop the rest of the over-long line
                    await self._fill()
                    end = self.buf.find(b"\n")
                    if end >= 0:
                        del self.buf[: end + 1]
                        break
                    self.buf.clear()
                raise ProtocolError(smtp.LINE_TOO_LONG)
            if not self.buf:
                await self.flush()  # the client waits for our replies before sending more
            await self._fill()

    # --- the connection ------------------------------------------------------------------------------------
    async def run(self) -> None:
        started = time.monotonic()
        log.info("smtp.connect", cid=self.cid, client=self.client_ip, service=self.mode)
        self._watch = IdleWatch(self.rt.config.smtpd.timeout)
        try:
            if await self._greet():
                await self._loop()
        except _Closed:
            pass
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.info("smtp.connection_lost", cid=self.cid, reason=str(exc) or type(exc).__name__)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                self.send(smtp.SHUTTING_DOWN)
                await asyncio.wait_for(self.flush(), 1.0)
            raise
        except Exception:
            log.exception("smtp.session_failed", cid=self.cid)
            with contextlib.suppress(Exception):
                self.send(smtp.LOCAL_ERROR.with_text("Local error, closing connection"))
                await self.flush()
        finally:
            self._watch.close()
            self._abort_bdat()
            with contextlib.suppress(Exception):
                self._write_out()  # a last reply not flushed: the transport sends it before it closes
                self.writer.close()
            log.info(
                "smtp.disconnect",
                cid=self.cid,
                messages=self.messages,
                errors=self.errors,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )

    def _trusted_network(self) -> bool:
        """Whether the client is in `mynetworks`: found once a session (again after a reload changed it)."""
        networks = self.rt.config.smtpd.mynetworks
        if self._trusted is None or self._trusted[0] is not networks:
            self._trusted = (networks, in_networks(self.client_ip, [str(n) for n in networks]))
        return self._trusted[1]

    async def _greet(self) -> bool:
        config = self.rt.config.smtpd
        if self.mode == MX:
            decision = check_client(self.rt, self.client_ip)
            if decision.refuses and decision.reply is not None:
                # Postfix answers later commands with the refusal; we refuse at once and close.
                self._log_reject(decision, "connect")
                self.send(
                    decision.reply.with_text(decision.reply.text)
                    if decision.reply.code >= 500
                    else decision.reply
                )
                await self.flush()
                return False
            wait = config.pregreet_wait
            if wait > 0 and not self._trusted_network():
                try:
                    data = await asyncio.wait_for(self.reader.read(READ_SIZE), wait)
                except TimeoutError:
                    data = None
                if data is not None:
                    if data:
                        log.info(
                            "smtp.reject",
                            cid=self.cid,
                            client=self.client_ip,
                            status="pregreet",
                            reason="client talked before the greeting",
                        )
                        self.send(smtp.PREGREET)
                        with contextlib.suppress(Exception):
                            await self.flush()
                    return False
        self.send(Reply(220, "", f"{self.rt.config.hostname} {config.banner}"))
        await self.flush()
        return True

    async def _loop(self) -> None:
        while True:
            try:
                line = await self.read_line()
                cmd = smtp.parse_command(line.rstrip(b"\r\n") + b"\r\n" if line.endswith(b"\n") else line)
                log.trace("smtp.command", cid=self.cid, verb=cmd.verb)
                handler = getattr(self, f"cmd_{cmd.verb.lower()}")
                reply: Reply | None = await handler(cmd.arg)
                if reply is not None:
                    self.send(reply)
                    if reply.code >= 400:
                        await self._count_error()
                if cmd.verb == "QUIT":
                    await self.flush()
                    return
            except ProtocolError as exc:
                log.info("smtp.protocol_error", cid=self.cid, reason=str(exc.reply))
                self.send(exc.reply)
                if exc.fatal:
                    await self.flush()
                    return
                await self._count_error()

    async def _count_error(self) -> None:
        self.errors += 1
        if self.errors >= self.rt.config.smtpd.hard_error_limit:
            self.send(smtp.TOO_MANY_ERRORS)
            await self.flush()
            raise _Closed

    def _log_reject(self, decision: Decision, stage: str, **fields: Any) -> None:
        log.info(
            "smtp.reject",
            cid=self.cid,
            client=self.client_ip,
            stage=stage,
            status=decision.action.value,
            reason=decision.reason.value,
            reply=str(decision.reply) if decision.reply else None,
            **fields,
        )

    def _note_tls(self) -> None:
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        cipher = ssl_object.cipher()
        self.tls = TlsInfo(
            str(ssl_object.version()),
            str(cipher[0]) if cipher else "unknown",
            int(cipher[2]) if cipher else 0,
        )

    # --- commands ------------------------------------------------------------------------------------------
    def _ehlo_keywords(self) -> list[str]:
        config = self.rt.config.smtpd
        keywords = ["PIPELINING"]
        keywords.append(f"SIZE {config.message_size_limit}" if config.message_size_limit else "SIZE")
        if not config.disable_vrfy_command:
            keywords.append("VRFY")
        if self.tls is None and self.rt.ssl_context is not None:
            keywords.append("STARTTLS")
        if self.mode != MX and self.tls is not None and self.user is None:
            keywords.append("AUTH " + " ".join(sasl.MECHANISMS))
        keywords += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"]
        return keywords

    def _check_helo(self, name: str) -> Reply | None:
        if self.mode != MX:
            return None
        decision = check_helo(self.rt, name, trusted=self._trusted_network())
        if decision.refuses and decision.reply is not None:
            self._log_reject(decision, "helo", helo=name)
            return decision.reply
        return None

    async def cmd_ehlo(self, arg: str) -> Reply:
        name = smtp.parse_helo_domain(arg)
        refusal = self._check_helo(name)
        if refusal is not None:
            return refusal
        self.helo = name
        self.esmtp = True
        self._reset()
        return smtp.ehlo_reply(self.rt.config.hostname, f"Hello {self.helo}", self._ehlo_keywords())

    async def cmd_helo(self, arg: str) -> Reply:
        name = smtp.parse_helo_domain(arg)
        refusal = self._check_helo(name)
        if refusal is not None:
            return refusal
        self.helo = name
        self.esmtp = False
        self._reset()
        return Reply(250, "", self.rt.config.hostname)

    async def cmd_noop(self, arg: str) -> Reply:
        return smtp.OK

    async def cmd_help(self, arg: str) -> Reply:
        return smtp.HELP

    async def cmd_quit(self, arg: str) -> Reply:
        return smtp.BYE

    async def cmd_rset(self, arg: str) -> Reply:
        self._reset()
        return smtp.RESET_OK

    async def cmd_vrfy(self, arg: str) -> Reply:
        if self.rt.config.smtpd.disable_vrfy_command:
            return smtp.VRFY_DISABLED
        return smtp.VRFY_CANNOT

    async def cmd_expn(self, arg: str) -> Reply:
        return smtp.NOT_IMPLEMENTED

    def _reset(self) -> None:
        self._abort_bdat()
        self.tx = Transaction()

    def _abort_bdat(self) -> None:
        if self.tx.bdat_spool is not None:
            self.tx.bdat_spool.discard()
            self.tx.bdat_spool = None

    async def cmd_starttls(self, arg: str) -> Reply | None:
        if arg:
            return smtp.PARAM_SYNTAX
        if self.tls is not None:
            return smtp.BAD_SEQUENCE.with_text("Already using TLS")
        context = self.rt.ssl_context
        if context is None:
            return smtp.TLS_UNAVAILABLE
        # Stop reading first: the ClientHello may follow our 220 at once and must reach the TLS layer, not us.
        transport = self.writer.transport
        if isinstance(transport, asyncio.ReadTransport):
            transport.pause_reading()
        # RFC 3207 §4.2 and CVE-2011-0411: whatever the client pipelined after STARTTLS is thrown away.
        self.buf.clear()
        pending = getattr(self.reader, "_buffer", None)
        if isinstance(pending, bytearray):
            pending.clear()
        self.send(smtp.READY_TLS)
        self._write_out()
        try:
            await self.writer.start_tls(context, ssl_handshake_timeout=30)
        except (ssl.SSLError, TimeoutError, ConnectionError, OSError) as exc:
            log.info("smtp.tls_failed", cid=self.cid, reason=str(exc) or type(exc).__name__)
            raise _Closed from None
        self._note_tls()
        self.helo, self.esmtp = "", False
        self._reset()
        log.info(
            "smtp.tls",
            cid=self.cid,
            version=self.tls.version if self.tls else None,
            cipher=self.tls.cipher if self.tls else None,
        )
        return None

    async def cmd_auth(self, arg: str) -> Reply:
        if self.mode == MX:
            return smtp.NOT_IMPLEMENTED
        if self.tls is None:
            return smtp.TLS_REQUIRED
        if not self.helo:
            return smtp.NEED_HELO
        if self.user is not None:
            return smtp.ALREADY_AUTH
        if self.tx.sender is not None:
            return smtp.BAD_SEQUENCE.with_text("AUTH not allowed during a mail transaction")
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        found = await credentials(mechanism, initial, self._challenge)
        if isinstance(found, Reply):
            return found
        username, password = found
        result = await self.rt.auth.login(username, password, remote_ip=self.client_ip, service="smtp")
        if result.throttled:
            return smtp.TEMP_AUTH_FAILURE.with_text("Too many failed logins, try again later")
        if not result.ok or result.user is None:
            log.info("smtp.auth_failed", cid=self.cid, client=self.client_ip, user=username.lower())
            return smtp.AUTH_FAILED
        self.user = result.user
        log.info("smtp.auth", cid=self.cid, user=self.user, mechanism=mechanism)
        return smtp.AUTH_OK

    async def _challenge(self, text: str) -> str:
        self.send(Reply(334, "", text))
        line = (await self.read_line()).rstrip(b"\r\n")
        if line == b"*":
            raise Cancelled
        return line.decode("ascii", "replace")

    # --- the transaction -----------------------------------------------------------------------------------
    async def cmd_mail(self, arg: str) -> Reply:
        config = self.rt.config.smtpd
        if not self.helo and (config.helo_required or self.mode != MX):
            return smtp.NEED_HELO
        if self.tx.sender is not None:
            return smtp.NESTED_MAIL
        if self.mode != MX and self.user is None:
            return smtp.AUTH_REQUIRED if self.tls is not None else smtp.TLS_REQUIRED
        path = smtp.parse_path(arg, "FROM", strict=config.strict_rfc821_envelopes)
        params = path.params
        size: int | None = None
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not value.isdigit():
                    return smtp.PARAM_SYNTAX.with_text("Bad SIZE parameter")
                size = int(value)
            elif key == "BODY":
                if (value or "").upper() not in ("7BIT", "8BITMIME", "BINARYMIME"):
                    return smtp.PARAM_SYNTAX.with_text("Bad BODY parameter")
            elif key == "RET":
                if (value or "").upper() not in ("FULL", "HDRS"):
                    return smtp.PARAM_SYNTAX.with_text("Bad RET parameter")
            elif key == "ENVID":
                try:
                    smtp.xtext_decode(value or "")
                except ValueError:
                    return smtp.PARAM_SYNTAX.with_text("Bad ENVID parameter")
            elif key in ("SMTPUTF8", "AUTH"):
                pass
            else:
                return smtp.UNKNOWN_PARAM.with_text(f"Unsupported parameter {key}")
        sender = path.address
        if self.user is not None:
            if (
                config.reject_sender_login_mismatch
                and sender
                and (sender.lower() not in self.rt.directory.sender_addresses(self.user))
            ):
                decision = Decision(
                    Action.REJECT,
                    Reason.SENDER_LOGIN_MISMATCH,
                    smtp.SENDER_NOT_OWNED.with_text(
                        f"<{sender}>: Sender address rejected: not owned by user {self.user}"
                    ),
                )
                self._log_reject(decision, "mail", from_=sender, user=self.user)
                return decision.reply or smtp.SENDER_NOT_OWNED
            if not self.rate_limit.allowed(self.user, config.user_messages_per_hour):
                self._log_reject(
                    Decision(Action.DEFER, Reason.RATE_LIMIT), "mail", from_=sender, user=self.user
                )
                return smtp.RATE_LIMITED.with_text(
                    f"Too many messages: at most {config.user_messages_per_hour} an hour, try again later"
                )
        decision = check_sender(self.rt, sender, size)
        if decision.refuses and decision.reply is not None:
            self._log_reject(decision, "mail", from_=sender)
            return decision.reply
        self.tx = Transaction(sender=sender, params=params)
        self.tx.hold = decision.action == Action.HOLD
        self.tx.discard = decision.action == Action.DISCARD
        return smtp.SENDER_OK

    async def cmd_rcpt(self, arg: str) -> Reply:
        config = self.rt.config.smtpd
        if self.tx.sender is None:
            return smtp.NEED_MAIL
        limit = config.recipient_limit
        if self.user is not None:
            limit = min(limit, config.user_recipients_per_message)
        if len(self.tx.recipients) >= limit:
            return smtp.TOO_MANY_RECIPIENTS.with_text(f"Too many recipients: at most {limit} per message")
        path = smtp.parse_path(arg, "TO", strict=config.strict_rfc821_envelopes, forward=True)
        notify = orcpt = ""
        for key, value in path.params.items():
            if key == "NOTIFY":
                words = (value or "").upper().split(",")
                if (
                    not value
                    or ("NEVER" in words and len(words) > 1)
                    or not set(words) <= {"NEVER", "SUCCESS", "FAILURE", "DELAY"}
                ):
                    return smtp.PARAM_SYNTAX.with_text("Bad NOTIFY parameter")
                notify = ",".join(words)
            elif key == "ORCPT":
                kind, _, raw = (value or "").partition(";")
                try:
                    orcpt = f"{kind}; {smtp.xtext_decode(raw)}" if kind and raw else ""
                except ValueError:
                    return smtp.PARAM_SYNTAX.with_text("Bad ORCPT parameter")
                if not orcpt:
                    return smtp.PARAM_SYNTAX.with_text("Bad ORCPT parameter")
            else:
                return smtp.UNKNOWN_PARAM.with_text(f"Unsupported parameter {key}")
        assert path.mailbox is not None
        address = path.address
        if not address.isascii() and "SMTPUTF8" not in self.tx.params:
            return smtp.NEED_SMTPUTF8  # RFC 6531 §3.4: UTF-8 addresses only in an SMTPUTF8 transaction
        if path.mailbox.domain == "":  # bare <postmaster> (RFC 5321 §4.1.1.3): the first domain that has one
            candidates = [f"postmaster@{d}" for d in sorted(self.rt.directory.domains)]
            address = next((a for a in candidates if self.rt.directory.resolve(a)), "")
            if not address:
                return smtp.NO_SUCH_USER.with_text("<postmaster>: Recipient address rejected: User unknown")
        trusted = self.user is not None or self._trusted_network()
        decision, _targets = check_recipient(self.rt, address, trusted=trusted)
        if decision.refuses and decision.reply is not None:
            self._log_reject(decision, "rcpt", from_=self.tx.sender, rcpt=address)
            return decision.reply
        if decision.action == Action.HOLD:
            self.tx.hold = True
        elif decision.action == Action.DISCARD:
            self.tx.discard = True
        self.tx.recipients.append(RecipientState(address, orcpt=orcpt, notify=notify))
        return smtp.RECIPIENT_OK

    def _check_ready_for_data(self) -> Reply | None:
        if self.tx.sender is None:
            return smtp.NEED_MAIL
        if not self.tx.recipients:
            return smtp.NEED_RCPT.with_text("No valid recipients")
        return None

    async def cmd_data(self, arg: str) -> Reply:
        if arg:
            return smtp.PARAM_SYNTAX
        if self.tx.bdat_spool is not None:
            return smtp.BAD_SEQUENCE.with_text("DATA not allowed after BDAT")
        refusal = self._check_ready_for_data()
        if refusal is not None:
            return refusal
        self.send(smtp.START_DATA)
        await self.flush()
        spool = self._open_message_spool()
        write_error: OSError | None = None
        try:
            decoder = DataDecoder(self.rt.config.smtpd.message_size_limit)
            while True:
                if self.buf:
                    data = decoder.feed(bytes(self.buf))
                    self.buf.clear()
                    if data and write_error is None:
                        try:
                            spool.write(data)
                        except OSError as exc:  # disk full: read the rest, then say so (RFC 5321 §4.2.2: 452)
                            write_error = exc
                if decoder.done:
                    break
                await self._fill()
            self.buf += decoder.leftover
            if write_error is not None:
                log.error("smtp.spool_failed", cid=self.cid, reason=str(write_error))
                return self._refuse_message(spool, smtp.INSUFFICIENT_STORAGE, "spool_write_failed")
            if decoder.bad_line_ending:
                return self._refuse_message(spool, smtp.BARE_LINE_ENDING, "bare_line_ending")
            if decoder.too_big:
                return self._refuse_message(spool, smtp.MESSAGE_TOO_BIG, "message_too_big")
            return await self._finish(spool)
        except BaseException:
            spool.discard()
            raise

    async def cmd_bdat(self, arg: str) -> Reply:
        parts = arg.split()
        if (
            not parts
            or not parts[0].isdigit()
            or len(parts) > 2
            or (len(parts) == 2 and parts[1].upper() != "LAST")
        ):
            raise ProtocolError(smtp.PARAM_SYNTAX.with_text("Syntax: BDAT size [LAST]"), fatal=True)
        size, last = int(parts[0]), len(parts) == 2
        await self._read_chunk(size)  # RFC 3030 §3: the chunk is read even when it will be refused
        refusal = self.tx.bdat_failed or self._check_ready_for_data()
        if refusal is not None:
            if self.tx.sender is not None and self.tx.recipients:
                self.tx.bdat_failed = refusal
            if last:
                self._reset()
            return refusal
        if last:
            spool, self.tx.bdat_spool = self.tx.bdat_spool, None
            assert spool is not None
            try:
                return await self._finish(spool)
            except BaseException:
                spool.discard()
                raise
        return Reply(250, "2.0.0", f"{size} octets received")

    async def _read_chunk(self, size: int) -> None:
        limit = self.rt.config.smtpd.message_size_limit
        writable = self.tx.sender is not None and self.tx.recipients and self.tx.bdat_failed is None
        if writable and self.tx.bdat_spool is None:
            self.tx.bdat_spool = self._open_message_spool()
        remaining = size
        while remaining:
            if not self.buf:
                await self._fill()
            piece = bytes(self.buf[:remaining])
            del self.buf[: len(piece)]
            remaining -= len(piece)
            self.tx.bdat_size += len(piece)
            if self.tx.bdat_spool is not None and self.tx.bdat_failed is None:
                if limit and self.tx.bdat_size > limit:
                    self.tx.bdat_failed = smtp.MESSAGE_TOO_BIG
                    self._abort_bdat()
                else:
                    self.tx.bdat_spool.write(piece)

    def _refuse_message(self, spool: SpoolFile, reply: Reply, reason: str) -> Reply:
        spool.discard()
        log.info(
            "smtp.reject",
            cid=self.cid,
            client=self.client_ip,
            stage="data",
            from_=self.tx.sender,
            status="reject",
            reason=reason,
            reply=str(reply),
        )
        self._reset()
        return reply

    def _received(self, queue_id: str) -> bytes:
        config = self.rt.config
        return received_header(
            hostname=config.hostname,
            queue_id=queue_id,
            helo=self.helo,
            client_ip=self.client_ip,
            protocol=protocol_keyword(self.esmtp, self.tls is not None, self.user is not None),
            tls=self.tls,
            recipients=[r.address for r in self.tx.recipients],
            hide_client=self.user is not None and config.smtpd.hide_client_in_received,
        )

    def _open_message_spool(self) -> SpoolFile:
        """The spool file DATA/BDAT stream into; for unauthenticated mail our Received header goes first."""
        spool = self.rt.queue.open_spool()
        if self.user is None:
            try:
                spool.write(self._received(spool.queue_id))
            except BaseException:
                spool.discard()
                raise
        return spool

    async def _submission(self, spool: SpoolFile) -> SpoolFile | Reply:
        """Rewrite a submitted message into a new spool file: checks, privacy, Message-ID/Date, DKIM."""
        config = self.rt.config
        spool.close()
        body = await asyncio.to_thread(spool.path.read_bytes)
        spool.discard()
        allowed = (
            self.rt.directory.sender_addresses(self.user or "")
            if config.smtpd.reject_sender_login_mismatch
            else None
        )
        try:
            cleaned, domain = prepare_submission(body, hostname=config.hostname, allowed_senders=allowed)
        except SubmissionRefused as exc:
            return smtp.SENDER_NOT_OWNED.with_text(f"Sender address rejected: {exc.reason}")
        cleaned = await self._dkim_sign(cleaned, domain)
        final = self.rt.queue.open_spool()
        try:
            final.write(self._received(final.queue_id))
            final.write(cleaned)
        except BaseException:
            final.discard()
            raise
        return final

    async def _finish(self, spool: SpoolFile) -> Reply:
        """The whole message is in `spool`: check it, queue it durably, answer."""
        started = time.monotonic()
        tx = self.tx
        assert tx.sender is not None
        rcpts = [r.address for r in tx.recipients]
        if self.user is not None:
            result = await self._submission(spool)
            if isinstance(result, Reply):
                log.info(
                    "smtp.reject",
                    cid=self.cid,
                    stage="data",
                    from_=tx.sender,
                    user=self.user,
                    status="reject",
                    reason=Reason.SENDER_LOGIN_MISMATCH.value,
                    reply=str(result),
                )
                self._reset()
                return result
            spool = result
        if tx.discard:
            spool.discard()
            log.info("smtp.discard", cid=self.cid, from_=tx.sender, rcpt=",".join(rcpts), status="discarded")
            self._reset()
            return smtp.OK.with_text("Ok: discarded")
        try:
            queue_id = await self.rt.queue.commit(
                spool,
                tx.sender,
                list(tx.recipients),
                origin=self.mode,
                held=tx.hold,
                envid=smtp.xtext_decode(tx.params.get("ENVID") or ""),
                ret=(tx.params.get("RET") or "").upper(),
                auth_user=self.user or "",
            )
        except Exception:
            spool.discard()
            log.exception("smtp.queue_failed", cid=self.cid, from_=tx.sender)
            self._reset()
            return smtp.LOCAL_ERROR
        except BaseException:
            spool.discard()
            raise
        self.messages += 1
        if self.user is not None:
            self.rate_limit.record(self.user)
        log.info(
            "smtp.queued",
            cid=self.cid,
            queue_id=queue_id,
            from_=tx.sender or "<>",
            rcpt=",".join(rcpts),
            size=spool.size,
            status="queued",
            user=self.user,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        self._reset()
        return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")

    async def _dkim_sign(self, message: bytes, domain: str | None) -> bytes:
        if not domain or not self.rt.directory.is_local_domain(domain):
            return message
        try:
            return await asyncio.to_thread(sign_message, self.rt, message, domain)
        except Exception:
            log.exception("smtp.dkim_failed", cid=self.cid, domain=domain)
            return message
