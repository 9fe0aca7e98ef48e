"""What the SMTP server adds to and removes from a message before it is queued.

- `received_header`: the trace field of RFC 5321 §4.4 with the protocol keyword of RFC 3848 (ESMTPS, ESMTPSA...)
  and, under TLS, the protocol and cipher; for authenticated submissions with `[smtpd] hide_client_in_received`
  it names neither the client's IP nor its HELO.
- `prepare_submission`: for mail from our own authenticated users: the From: addresses must be the user's
  (`reject_sender_login_mismatch`), headers that leak the client (X-Originating-IP and the like) are removed,
  Message-ID and Date are added when missing (RFC 5322 §3.6, RFC 6409 §8).
- `UserRateLimit`: per-user messages per hour (kept in memory; a restart forgets it).
Called by `kinmail.smtpserver.session`. Keeps nothing on disk.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from email.utils import make_msgid

from kinmail.core.maildate import now_rfc5322
from kinmail.message.address import parse_addresses
from kinmail.message.headers import parse_fields

# Header fields that carry the submitting client's address or software; removed from submissions.
PRIVATE_HEADERS = frozenset(
    {
        "x-originating-ip",
        "x-forwarded-for",
        "x-real-ip",
        "x-client-ip",
        "x-remote-ip",
        "x-remote-addr",
        "x-sender-ip",
        "x-source-ip",
        "x-originating-host",
        "x-php-originating-script",
    }
)


@dataclass(frozen=True, slots=True)
class TlsInfo:
    version: str
    cipher: str
    bits: int

    def describe(self) -> str:
        return f"using {self.version} with cipher {self.cipher} ({self.bits}/{self.bits} bits)"


def protocol_keyword(esmtp: bool, tls: bool, auth: bool) -> str:
    """RFC 3848 §2: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA."""
    if not esmtp:
        return "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if auth else "")


def received_header(
    *,
    hostname: str,
    queue_id: str,
    helo: str,
    client_ip: str,
    protocol: str,
    tls: TlsInfo | None,
    recipients: list[str],
    hide_client: bool,
) -> bytes:
    """The Received field we prepend (RFC 5321 §4.4), folded over lines of at most ~78 characters."""
    lines = []
    if not hide_client:
        lines.append(f"from {helo or 'unknown'} ([{client_ip}])")
    lines.append(f"by {hostname} (kinmail) with {protocol}")
    if tls is not None:
        lines.append(f"({tls.describe()})")
    lines.append(f"id {queue_id}")
    date = now_rfc5322()
    if len(recipients) == 1:
        lines.append(f"for <{recipients[0]}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(date)
    return ("Received: " + "\r\n\t".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


class SubmissionRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def split_message(data: bytes) -> tuple[bytes, bytes]:
    """(header block including its final CRLF, rest including the blank line)."""
    if data.startswith(b"\r\n"):
        return b"", data
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data if data.endswith(b"\r\n") else data + b"\r\n", b""
    return data[: end + 2], data[end + 2 :]


def from_addresses(header: bytes) -> list[str]:
    """The addr-specs of the From: field(s), lower-cased."""
    out: list[str] = []
    for field in parse_fields(header):
        if field.name.lower() == "from":
            out.extend(a.addr_spec.lower() for a in parse_addresses(field.value) if a.host)
    return out


def prepare_submission(
    data: bytes, *, hostname: str, allowed_senders: set[str] | None
) -> tuple[bytes, str | None]:
    """Check and clean a submitted message; returns (message, domain of the first From: address).

    `allowed_senders` None skips the From: ownership check. Raises SubmissionRefused."""
    header, body = split_message(data)
    fields = parse_fields(header)
    senders = from_addresses(header)
    if allowed_senders is not None:
        if not senders:
            raise SubmissionRefused("message has no From: address")
        foreign = [s for s in senders if s not in allowed_senders]
        if foreign:
            raise SubmissionRefused(f"From: address {foreign[0]} not owned by user")
    names = {f.name.lower() for f in fields}
    kept = b"".join(
        f.raw if f.raw.endswith(b"\r\n") else f.raw + b"\r\n"
        for f in fields
        if f.name.lower() not in PRIVATE_HEADERS
    )
    added = b""
    if "date" not in names:
        added += f"Date: {now_rfc5322()}\r\n".encode()
    if "message-id" not in names:
        added += f"Message-ID: {make_msgid(domain=hostname)}\r\n".encode()
    if not body:
        body = b"\r\n"
    domain = senders[0].rpartition("@")[2] if senders else None
    return kept + added + body, domain


class UserRateLimit:
    """Messages per hour per user, a sliding window in memory."""

    def __init__(self) -> None:
        self._sent: dict[str, deque[float]] = {}

    def allowed(self, user: str, per_hour: int) -> bool:
        if per_hour <= 0:
            return True
        window = self._sent.get(user)
        if window is None:
            return True
        cutoff = time.monotonic() - 3600.0
        while window and window[0] < cutoff:
            window.popleft()
        return len(window) < per_hour

    def record(self, user: str) -> None:
        self._sent.setdefault(user, deque()).append(time.monotonic())
