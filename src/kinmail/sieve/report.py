"""vnd.dovecot.report: `report [:headers_only] FEEDBACK-TYPE MESSAGE ADDRESS` sends an abuse report in the
Abuse Reporting Format (RFC 5965) about the message being filtered, e.g. to a provider's abuse desk.

Called by the validator (feedback type), the interpreter (the action) and by whoever carries the result out
(`build_report`). Pure; nothing kept on disk.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import secrets

from kinmail.sieve.message import SieveMessage
from kinmail.sieve.result import Envelope

# RFC 5965 §7.3 registry, and what an extension-type looks like
FEEDBACK_TYPE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")


def build_report(
    message: SieveMessage,
    envelope: Envelope,
    feedback_type: str,
    text: str,
    sender: str,
    to: str,
    *,
    headers_only: bool,
    hostname: str,
    user: str = "",
    now: dt.datetime | None = None,
) -> bytes:
    """The ARF report (RFC 5965 §2): the user's text, the machine-readable part and the message (or its
    header only)."""
    now = now or dt.datetime.now(dt.UTC)
    boundary = "report-" + secrets.token_hex(8)
    original = message.to_bytes()
    if headers_only:
        end = original.find(b"\r\n\r\n")
        original = original if end < 0 else original[: end + 2]
        inner_type = "text/rfc822-headers"
    else:
        inner_type = "message/rfc822"
    text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    if not text.endswith("\r\n"):
        text += "\r\n"
    feedback = ["Version: 1", f"Feedback-Type: {feedback_type}", "User-Agent: kinmail"]
    if envelope.sender:
        feedback.append(f"Original-Mail-From: <{envelope.sender}>")
    if envelope.recipient:
        feedback.append(f"Original-Rcpt-To: <{envelope.recipient}>")
    if user:
        # the field the vnd.dovecot.report specification defines for the reporting user
        feedback.append(f"Dovecot-Reporting-User: <{user}>")
    head = (
        f"From: {sender}\r\nTo: <{to}>\r\n"
        f"Subject: Report: {(message.header('subject') or [''])[0]}\r\n"
        f"Date: {email.utils.format_datetime(now)}\r\n"
        f"Message-ID: {email.utils.make_msgid(domain=hostname)}\r\n"
        "Auto-Submitted: auto-generated (report)\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"\r\n\r\n'
        "This is an abuse report in the Abuse Reporting Format (RFC 5965).\r\n\r\n"
    )
    parts = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{text}"
        f"--{boundary}\r\nContent-Type: message/feedback-report\r\n\r\n" + "\r\n".join(feedback) + "\r\n"
        f"--{boundary}\r\nContent-Type: {inner_type}\r\n\r\n"
    )
    return (head + parts).encode("utf-8") + original + f"\r\n--{boundary}--\r\n".encode()
