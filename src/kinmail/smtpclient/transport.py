"""Remote delivery: hand one queued message to the remote MX hosts (or the relayhost) of one domain.

The queue's scheduler creates one `RemoteTransport(rt)` and calls
`await transport.deliver(sender, recipients, message_path, queue_id=...)` with the recipients of one domain
(it groups them; a mixed list is split per domain here); it gets one `RecipientResult` per recipient, in the
order given, and does retries, bounces and DSNs itself.
`await transport.aclose()` at shutdown closes the cached connections. An optional `dsn=DsnRequest(...)` passes
the RFC 3461 parameters of the message on to a next hop that announces DSN.

What happens (RFC 5321 §5.1, §4.2.5): the hops come from `kinmail.smtpclient.route` (MX lookup through our
resolver, implicit MX, null MX, relayhost); each address of each hop is tried in order until one session
carries the transaction. Connection failures, greetings and EHLO/MAIL refusals move on to the next address;
4xx replies and network errors are temporary, 5xx permanent, per recipient. Connections are kept in a
`ConnectionPool` for the next message to the same host. Mail for our own domains is never sent out here
(the queue delivers it locally); such recipients come back temporary. Nothing is written to disk.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from kinmail.core.ids import new_cid
from kinmail.core.log import get_logger
from kinmail.dns.resolver import resolver_for
from kinmail.smtpclient.pool import ConnectionPool, PoolKey
from kinmail.smtpclient.route import Hop, RouteError, find_hops, parse_relayhost
from kinmail.smtpclient.session import Connection, DsnRequest, SessionFailure

if TYPE_CHECKING:
    from kinmail.runtime import Runtime

log = get_logger(__name__)


class DeliveryStatus(StrEnum):
    DELIVERED = "delivered"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The outcome for one recipient. `text` begins with the enhanced status code (RFC 3463), e.g.
    "5.1.1 no such user"; `remote_host` is the host that answered ("" when none was reached)."""

    rcpt: str
    status: DeliveryStatus
    code: int
    text: str
    remote_host: str = ""
    dsn_passed: bool = False  # the next hop took the DSN request on (RFC 3461 §4.2: else a "relayed" DSN)

    @staticmethod
    def from_reply(
        rcpt: str, code: int, text: str, remote_host: str = "", dsn_passed: bool = False
    ) -> RecipientResult:
        if 200 <= code < 300:
            status = DeliveryStatus.DELIVERED
        elif code >= 500:
            status = DeliveryStatus.PERMANENT
        else:
            status = DeliveryStatus.TEMPORARY
        return RecipientResult(rcpt, status, code, text, remote_host, dsn_passed)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].rstrip(".").lower()


class RemoteTransport:
    """Delivers to remote hosts; keeps a cache of open connections."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.pool = ConnectionPool()

    async def aclose(self) -> None:
        await self.pool.close()

    # --- the public call ---------------------------------------------------------------------------------
    async def deliver(
        self,
        sender: str,
        recipients: list[str],
        message_path: Path | str,
        *,
        queue_id: str,
        dsn: DsnRequest | None = None,
    ) -> list[RecipientResult]:
        started = time.monotonic()
        results: dict[str, RecipientResult] = {}
        remote: list[str] = []
        for rcpt in recipients:
            if self._is_local(rcpt):
                results[rcpt] = RecipientResult.from_reply(
                    rcpt, 451, "4.3.5 local domain: not delivered over the network"
                )
                log.error("smtpclient.local_recipient_refused", queue_id=queue_id, rcpt=rcpt)
            else:
                remote.append(rcpt)
        by_domain: dict[str, list[str]] = {}
        for rcpt in dict.fromkeys(remote):  # the queue groups by domain; a mixed list is split, not misrouted
            by_domain.setdefault(_domain(rcpt), []).append(rcpt)
        groups = await asyncio.gather(
            *(
                self._deliver_remote(sender, rcpts, Path(message_path), queue_id, dsn)
                for rcpts in by_domain.values()
            )
        )
        for group in groups:
            for result in group:
                results[result.rcpt] = result
        ordered = [results[r] for r in recipients]
        for result in ordered:
            log.info(
                "smtpclient.result",
                queue_id=queue_id,
                from_=sender or "<>",
                rcpt=result.rcpt,
                status=result.status.value,
                code=result.code,
                reply=result.text,
                relay=result.remote_host or None,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )
        return ordered

    # --- internals ---------------------------------------------------------------------------------------
    def _is_local(self, rcpt: str) -> bool:
        return bool(self.rt.directory.is_local_domain(_domain(rcpt)))

    async def _deliver_remote(
        self, sender: str, recipients: list[str], path: Path, queue_id: str, dsn: DsnRequest | None
    ) -> list[RecipientResult]:
        config = self.rt.config
        domain = _domain(recipients[0])
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            text = f"4.3.0 queue file {path.name} cannot be read: {exc.strerror or exc}"
            return [RecipientResult.from_reply(r, 451, text) for r in recipients]
        try:
            hops = await find_hops(
                resolver_for(config.dns),
                domain,
                port=config.delivery.remote_smtp_port,
                relayhost=config.delivery.relayhost,
                our_hostname=config.hostname,
            )
        except RouteError as exc:
            log.info("smtpclient.no_route", queue_id=queue_id, domain=domain, code=exc.code, reason=exc.text)
            return [RecipientResult.from_reply(r, exc.code, exc.text) for r in recipients]
        last: SessionFailure | None = None
        for hop in hops:
            credentials = self._credentials(hop, domain)
            for address in hop.addresses:
                key: PoolKey = (address, hop.port, credentials[0] if credentials else "")
                try:
                    outcome, dsn_passed = await self._attempt(
                        key, hop, address, credentials, sender, recipients, data, dsn
                    )
                except SessionFailure as failure:
                    log.info(
                        "smtpclient.session_failed",
                        queue_id=queue_id,
                        relay=failure.host,
                        stage=failure.stage,
                        code=failure.code,
                        reason=failure.text,
                    )
                    if failure.stage == "mail" and failure.code >= 500:
                        # RFC 5321 §4.2.5: a 5xx to MAIL FROM is final, not a reason to try another host.
                        return [
                            RecipientResult.from_reply(r, failure.code, failure.text, hop.name)
                            for r in recipients
                        ]
                    last = failure
                    continue
                return [
                    RecipientResult.from_reply(r, code, text, hop.name, dsn_passed)
                    for r, code, text in outcome
                ]
        if last is None:
            return [RecipientResult.from_reply(r, 451, "4.4.1 no host could be reached") for r in recipients]
        code, text = last.reply()
        if code >= 500:
            # Every host refused us at greeting or EHLO: the next attempt may find one that does not.
            code, text = 451, f"4.4.0 all mail hosts refused the session; last: {code} {text}"
        host = last.host.split("[", 1)[0]
        return [RecipientResult.from_reply(r, code, text, host) for r in recipients]

    async def _attempt(
        self,
        key: PoolKey,
        hop: Hop,
        address: str,
        credentials: tuple[str, str] | None,
        sender: str,
        recipients: list[str],
        data: bytes,
        dsn: DsnRequest | None,
    ) -> tuple[list[tuple[str, int, str]], bool]:
        """One transaction on a cached or new connection to `address`. A cached connection that turns out
        dead (no reply at all) is replaced by a new one once. Raises SessionFailure."""
        conn = await self.pool.take(key)
        reused = conn is not None
        for _ in range(2):
            if conn is None:
                conn = await self._open(hop, address, credentials)
            try:
                outcome = await conn.send(sender, recipients, data, dsn)
            except SessionFailure as failure:
                conn.close()
                if reused and failure.code == 0:
                    conn, reused = None, False
                    continue
                raise
            except BaseException:  # cancelled (shutdown) or a bug: never leave the socket open
                conn.close()
                raise
            dsn_passed = dsn is not None and conn.supports_dsn
            if conn.usable:
                self.pool.give_back(key, conn)
            else:
                conn.close()
            return outcome, dsn_passed
        raise AssertionError("unreachable")

    async def _open(self, hop: Hop, address: str, credentials: tuple[str, str] | None) -> Connection:
        helo = self.rt.config.hostname
        try:
            return await Connection.open(hop, address, helo=helo, cid=new_cid(), credentials=credentials)
        except SessionFailure as failure:
            if failure.stage != "starttls":
                raise
        # Opportunistic TLS (as Postfix's "may"): after a failed handshake, deliver in plain text at once;
        # the address is remembered as TLS-broken for a while, so this connection skips STARTTLS.
        log.info("smtpclient.plaintext_fallback", relay=f"{hop.name}[{address}]:{hop.port}")
        return await Connection.open(hop, address, helo=helo, cid=new_cid(), credentials=credentials)

    def _credentials(self, hop: Hop, domain: str) -> tuple[str, str] | None:
        """user:password for the relayhost from `[delivery] relayhost_credentials` (Postfix's
        smtp_sasl_password_maps: looked up by the relayhost as written, then [host]:port, [host], host)."""
        delivery = self.rt.config.delivery
        if not hop.relay or not delivery.relayhost_credentials:
            return None
        try:
            relay = parse_relayhost(delivery.relayhost)
            table = self.rt.directory.map(delivery.relayhost_credentials)
        except Exception as exc:
            log.error(
                "smtpclient.credentials_unavailable", map=delivery.relayhost_credentials, reason=str(exc)
            )
            return None
        if relay is None:
            return None
        for key in (
            relay.spec,
            f"[{relay.host}]:{relay.port}",
            f"[{relay.host}]",
            relay.host,
            hop.name,
            domain,
        ):
            value = table.lookup(key)
            if value:
                user, sep, password = value.strip().partition(":")
                if sep and user:
                    return user, password
        return None
