"""The staged checks of an SMTP transaction, named after Postfix's restrictions.

- connect: `client_access` (a map on the client IP);
- HELO: `helo_required` is enforced by the session (503); a stranger that greets with our own host name or
  one of our domains is refused (no one outside is us);
- MAIL: `sender_access` (a map on the envelope sender), `message_size_limit` against SIZE=;
- RCPT: `recipient_access`, then the relay rule — local domains only, unless the client is in `mynetworks` or
  authenticated (never an open relay) — then unknown local users (550 5.1.1).
Each returns one `Decision`. Called by `kinmail.smtpserver.session`; maps come from `rt.directory.map(spec)`.
Keeps nothing on disk.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from kinmail.config.maps import access_lookup_address, access_lookup_ip
from kinmail.core.log import get_logger
from kinmail.policy.decision import DUNNO, Action, Decision, Reason, from_access
from kinmail.proto import smtp

if TYPE_CHECKING:
    from kinmail.config.directory import Recipient
    from kinmail.runtime import Runtime

log = get_logger(__name__)

_MAP_TEMPFAIL = smtp.Reply(451, "4.3.0", "Temporary lookup failure")


def in_networks(ip: str, networks: list[str]) -> bool:
    """Is `ip` inside one of `networks` ("127.0.0.0/8", "[::1]/128", "192.0.2.7")?"""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for text in networks:
        try:
            net = ipaddress.ip_network(text.replace("[", "").replace("]", ""), strict=False)
        except ValueError:
            continue
        if addr.version == net.version and addr in net:
            return True
    return False


def _lookup(rt: Runtime, spec: str, key: str, kind: str) -> str | None:
    table = rt.directory.map(spec)
    if kind == "ip":
        return access_lookup_ip(table, key)
    return access_lookup_address(table, key, rt.config.delivery.recipient_delimiter or "+")


def _access(rt: Runtime, spec: str, key: str, kind: str, reason: Reason, reject: smtp.Reply) -> Decision:
    if not spec:
        return DUNNO
    try:
        value = _lookup(rt, spec, key, kind)
    except Exception as exc:  # a map that cannot be read must not let mail through, nor crash the session
        log.error("policy.map_failed", map=spec, reason=str(exc))
        return Decision(Action.DEFER, Reason.MAP_ERROR, _MAP_TEMPFAIL)
    if value is None:
        return DUNNO
    return from_access(value, reason, reject, smtp.Reply(450, "4.7.1", reject.text))


def check_client(rt: Runtime, ip: str) -> Decision:
    """At connect: `client_access`."""
    reject = smtp.Reply(554, "5.7.1", f"Client host [{ip}] rejected: Access denied")
    return _access(rt, rt.config.smtpd.client_access, ip, "ip", Reason.CLIENT_ACCESS, reject)


def check_helo(rt: Runtime, helo: str, *, trusted: bool) -> Decision:
    """At HELO/EHLO: refuse a stranger claiming to be us (our host name or one of our domains)."""
    name = helo.strip().rstrip(".").lower()
    if trusted or not name:
        return DUNNO
    if name == rt.config.hostname.lower() or rt.directory.is_local_domain(name):
        return Decision(
            Action.REJECT,
            Reason.HELO_FORGED,
            smtp.Reply(550, "5.7.1", f"<{helo}>: Helo command rejected: you are not me"),
        )
    return DUNNO


def check_sender(rt: Runtime, sender: str, size: int | None) -> Decision:
    """At MAIL: SIZE= against `message_size_limit` (RFC 1870 §6.2), then `sender_access`."""
    limit = rt.config.smtpd.message_size_limit
    if limit and size is not None and size > limit:
        return Decision(Action.REJECT, Reason.MESSAGE_TOO_BIG, smtp.MESSAGE_TOO_BIG)
    reject = smtp.Reply(553, "5.7.1", f"<{sender}>: Sender address rejected: Access denied")
    return _access(rt, rt.config.smtpd.sender_access, sender, "address", Reason.SENDER_ACCESS, reject)


def check_recipient(
    rt: Runtime, address: str, *, trusted: bool, sender_decision: Decision = DUNNO
) -> tuple[Decision, list[Recipient] | None]:
    """At RCPT: `recipient_access`, relay control, unknown users. Returns the decision and where the mail goes."""
    reject = smtp.Reply(554, "5.7.1", f"<{address}>: Recipient address rejected: Access denied")
    decision = _access(
        rt, rt.config.smtpd.recipient_access, address, "address", Reason.RECIPIENT_ACCESS, reject
    )
    if decision.refuses:
        return decision, None
    domain = address.rpartition("@")[2]
    directory = rt.directory
    local = bool(domain) and not domain.startswith("[") and directory.is_local_domain(domain)
    if not local:
        # RFC 5321 §3.6.1 / §7.1: relay only for our own clients. A recipient access OK does not open the relay.
        if not trusted:
            return Decision(
                Action.REJECT,
                Reason.RELAY_DENIED,
                smtp.RELAY_DENIED.with_text(f"<{address}>: Relay access denied"),
            ), None
        return decision, None
    targets = directory.resolve(address)
    if targets is None:
        return Decision(
            Action.REJECT,
            Reason.UNKNOWN_USER,
            smtp.NO_SUCH_USER.with_text(f"<{address}>: Recipient address rejected: User unknown"),
        ), None
    return decision, targets
