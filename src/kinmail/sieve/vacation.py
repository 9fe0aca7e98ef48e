"""Vacation replies (RFC 5230) under the rules for automatic responses (RFC 3834): whether to answer a message,
and the reply itself.

Pure functions, used by delivery (`kinmail.delivery.vacation`, which adds the once-per-period state) and by the
test suite. Nothing kept on disk.
"""

from __future__ import annotations

import datetime as dt
import email.header
import email.utils
import re
from dataclasses import dataclass

from kinmail.sieve.message import SieveMessage, decode_header_value, parse_addresses, split_address, unfold
from kinmail.sieve.result import Envelope, VacationAction
from kinmail.sieve.strings import limit_subject

LIST_HEADERS = (
    "list-id",
    "list-help",
    "list-subscribe",
    "list-unsubscribe",
    "list-post",
    "list-owner",
    "list-archive",
)
RECIPIENT_HEADERS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")
_SYSTEM_SENDER = re.compile(
    r"^(mailer-daemon|listserv|majordomo|owner-.*|.*-request|.*-owner)$", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class VacationPolicy:
    """Local choices around vacation replies.

    `check_recipient`: reply only when one of the user's addresses is in To/Cc/Bcc (RFC 5230 §4.5);
    `subject_template`: the reply's Subject when the script gives none (`%{subject}` is the original one),
    `default_subject` when the original has none; `to_header_ignore_envelope`: address the reply to the
    Sender/From of the message rather than to the envelope sender."""

    check_recipient: bool = True
    subject_template: str = "Auto: %{subject}"
    default_subject: str = "Automated reply"
    to_header_ignore_envelope: bool = False


def skip_reason(
    message: SieveMessage,
    envelope: Envelope,
    action: VacationAction,
    my_addresses: list[str],
    policy: VacationPolicy = VacationPolicy(),
) -> str:
    """Why no reply may be sent (RFC 5230 §4.5-4.6, RFC 3834 §2), or "" when one may."""
    sender = envelope.sender.strip("<>")
    if not sender:
        return "null sender"
    local = split_address(sender).local
    if _SYSTEM_SENDER.match(local):
        return "sender is a system or list address"
    auto = message.header("auto-submitted")
    if any(v.split(";")[0].strip().lower() != "no" for v in auto):
        return "message was auto-submitted"
    for name in LIST_HEADERS:
        if message.has_header(name):
            return "message came from a mailing list"
    if any(v.strip().lower() in ("bulk", "list", "junk") for v in message.header("precedence")):
        return "message has bulk, list or junk precedence"
    suppress = " ".join(message.header("x-auto-response-suppress")).lower()
    if "all" in suppress or "oof" in suppress:
        return "sender asked not to get automatic replies"
    mine = _mine(action, my_addresses)
    if sender.lower() in mine:
        return "sender is the recipient"
    if policy.check_recipient and _addressed_as(message, mine) is None:
        return "recipient is not in To or Cc"
    return ""


def _mine(action: VacationAction, my_addresses: list[str]) -> list[str]:
    mine = [a.lower() for a in my_addresses if a]
    mine.extend(_bare(a).lower() for a in action.addresses)
    if action.from_:
        mine.append(_bare(action.from_).lower())
    return mine


def _addressed_as(message: SieveMessage, mine: list[str]) -> str | None:
    """The first of `mine` that the message's recipient headers name."""
    listed = [
        a.all.lower()
        for name in RECIPIENT_HEADERS
        for v in message.raw_values(name)
        for a in parse_addresses(v)
    ]
    for address in listed:
        if address in mine:
            return address
    return None


def _bare(address: str) -> str:
    _name, addr = email.utils.parseaddr(address)
    return addr or address


_SENDER_HEADERS = ("sender", "resent-from", "from")


def _reply_to(message: SieveMessage, envelope: Envelope, policy: VacationPolicy) -> tuple[str, str]:
    """Where the reply goes (the envelope sender) and its To field: the header that names that address,
    with its display name, when there is one."""
    sender = envelope.sender.strip("<>")
    for name in _SENDER_HEADERS:
        for value in message.raw_values(name):
            for a in parse_addresses(value):
                if policy.to_header_ignore_envelope or a.all.lower() == sender.lower():
                    return (a.all if policy.to_header_ignore_envelope else sender), unfold(value).strip()
    return sender, f"<{sender}>"


def _encode_header(value: str) -> str:
    if value.isascii():
        return value
    return email.header.Header(value, "utf-8").encode()


def _format_address(address: str) -> str:
    name, addr = email.utils.parseaddr(address)
    if not addr:
        return address
    if "=?" in name:
        name = decode_header_value(name)
    if name and not name.isascii():
        return f"{email.header.Header(name, 'utf-8').encode()} <{addr}>"
    return email.utils.formataddr((name, addr))


def build_reply(
    message: SieveMessage,
    envelope: Envelope,
    action: VacationAction,
    my_address: str,
    *,
    hostname: str,
    now: dt.datetime | None = None,
    policy: VacationPolicy = VacationPolicy(),
    my_addresses: list[str] | None = None,
) -> tuple[str, bytes]:
    """The reply as `(recipient, message bytes)`: sent with a null reverse-path (RFC 5230 §4.3) to the envelope
    sender, with Auto-Submitted: auto-replied (RFC 3834 §5) and In-Reply-To/References."""
    now = now or dt.datetime.now(dt.UTC)
    to, to_header = _reply_to(message, envelope, policy)
    if action.subject is not None:
        subject = action.subject
    else:
        original = message.header("subject")
        if original and original[0]:
            subject = (policy.subject_template or "%{subject}").replace("%{subject}", original[0])
        else:
            subject = policy.default_subject or "Automated reply"
    subject = limit_subject(subject)
    frm = action.from_ or _addressed_as(message, _mine(action, my_addresses or [my_address])) or my_address
    lines = [
        ("From", _format_address(frm)),
        ("To", to_header),
        ("Subject", _encode_header(subject)),
        ("Date", email.utils.format_datetime(now)),
        ("Message-ID", email.utils.make_msgid(domain=hostname)),
        ("Auto-Submitted", "auto-replied"),
        ("Precedence", "bulk"),
    ]
    msgid = message.header("message-id")
    if msgid:
        lines.append(("In-Reply-To", msgid[0]))
        refs = " ".join(message.header("references")).split()
        refs.append(msgid[0])
        lines.append(("References", " ".join(refs)))
    lines.append(("MIME-Version", "1.0"))
    head = "".join(f"{k}: {v}\r\n" for k, v in lines)
    reason = action.reason.replace("\r\n", "\n").replace("\n", "\r\n")
    if action.mime:
        # RFC 5230 §5.8: the reason is a MIME entity (its own headers and body)
        data = head + reason
    else:
        body = reason if reason.endswith("\r\n") else reason + "\r\n"
        encoding = "7bit" if body.isascii() else "8bit"
        data = (
            head
            + f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
            + body
        )
    return to, data.encode("utf-8")
