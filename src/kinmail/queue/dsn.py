"""Delivery status notifications: bounces and delay warnings as RFC 3464 multipart/report messages.

Built by the scheduler (`kinmail.queue.scheduler`) when a recipient fails permanently, when a message expires
and when it has waited `delay_warning_time`. Never sent to the null sender (RFC 5321 §4.5.5) — a bounce is
itself sent from <>, so a bounce never bounces. RET=HDRS (RFC 3461 §4.3) returns only the headers. Keeps nothing
on disk.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from email.utils import format_datetime, make_msgid

from kinmail.proto.smtp import xtext_encode

MAX_RETURNED = 256 * 1024  # return at most this much of the original message


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    address: str
    action: str  # "failed" or "delayed" (RFC 3464 §2.3.3)
    status: str  # enhanced status code, e.g. "5.1.1"
    diagnostic: str  # "smtp; 550 5.1.1 ..." or a plain text
    remote_host: str = ""
    orcpt: str = ""


def _headers_of(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def build_dsn(
    *,
    hostname: str,
    sender: str,
    queue_id: str,
    arrival: float,
    recipients: list[FailedRecipient],
    original: bytes,
    ret_headers_only: bool = False,
    envid: str = "",
    delayed: bool = False,
) -> bytes:
    """A complete DSN message (RFC 3464 §2) from MAILER-DAEMON@hostname to `sender`."""
    boundary = f"{queue_id}.dsn/{hostname}"
    now = datetime.datetime.now(datetime.UTC)
    postmaster = f"MAILER-DAEMON@{hostname}"
    subject = "Delayed Mail (still being retried)" if delayed else "Undelivered Mail Returned to Sender"
    if delayed:
        human = (
            "This is the mail system at host {host}.\r\n\r\n"
            "Your message could not be delivered yet. It will be retried; you do not need to resend it.\r\n"
        )
    else:
        human = (
            "This is the mail system at host {host}.\r\n\r\n"
            "I'm sorry to have to inform you that your message could not\r\n"
            "be delivered to one or more recipients. It's attached below.\r\n"
        )
    lines = [human.format(host=hostname), "\r\n"]
    for rcpt in recipients:
        lines.append(f"<{rcpt.address}>: {rcpt.diagnostic}\r\n")
    human_text = "".join(lines)

    per_message = [
        f"Reporting-MTA: dns; {hostname}",
        f"X-Kinmail-Queue-ID: {queue_id}",
        f"Arrival-Date: {format_datetime(datetime.datetime.fromtimestamp(arrival, datetime.UTC))}",
    ]
    if envid:
        per_message.insert(1, f"Original-Envelope-Id: {xtext_encode(envid)}")
    status_blocks = ["\r\n".join(per_message)]
    for rcpt in recipients:
        block = []
        if rcpt.orcpt:
            block.append(f"Original-Recipient: {rcpt.orcpt}")
        block += [
            f"Final-Recipient: rfc822; {rcpt.address}",
            f"Action: {rcpt.action}",
            f"Status: {rcpt.status}",
        ]
        if rcpt.remote_host:
            block.append(f"Remote-MTA: dns; {rcpt.remote_host}")
        diag_type = "smtp" if rcpt.diagnostic[:3].isdigit() else "x-kinmail"
        block.append(f"Diagnostic-Code: {diag_type}; {rcpt.diagnostic}")
        if delayed:
            block.append(f"Will-Retry-Until: {format_datetime(now + datetime.timedelta(days=1))}")
        status_blocks.append("\r\n".join(block))
    status_text = "\r\n\r\n".join(status_blocks) + "\r\n"

    returned = _headers_of(original) if ret_headers_only or delayed else original[:MAX_RETURNED]
    returned_type = "text/rfc822-headers" if ret_headers_only or delayed else "message/rfc822"
    head = "\r\n".join(
        [
            f"From: Mail Delivery System <{postmaster}>",
            f"To: <{sender}>",
            f"Subject: {subject}",
            f"Date: {format_datetime(now)}",
            f"Message-ID: {make_msgid(domain=hostname)}",
            "Auto-Submitted: auto-replied",
            "MIME-Version: 1.0",
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
            "Content-Transfer-Encoding: 8bit",
        ]
    )
    parts = [
        head.encode() + b"\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n",
        f"--{boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n".encode(),
        human_text.encode("utf-8", "replace"),
        f"\r\n--{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n".encode(),
        status_text.encode("utf-8", "replace"),
        f"\r\n--{boundary}\r\nContent-Description: Undelivered Message\r\nContent-Type: {returned_type}\r\n\r\n".encode(),
        returned if returned.endswith(b"\r\n") else returned + b"\r\n",
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)
