"""What filtering decides for one recipient of one message, as values the local delivery agent carries out.

The Sieve interpreter produces these (it does no I/O); `kinmail.delivery.local` executes them: FileInto and
Keep through the store, Redirect and Vacation through the queue, Reject as a bounce or an SMTP refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Keep:
    """Deliver to INBOX (the implicit or explicit keep)."""

    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FileInto:
    """Deliver to `folder` (IMAP name, "/" as delimiter); `create` makes it when missing (RFC 5490 :create)."""

    folder: str
    flags: tuple[str, ...] = ()
    create: bool = False


@dataclass(frozen=True, slots=True)
class Redirect:
    """Send the message on, unchanged, to `address` (through the queue)."""

    address: str
    copy: bool = False


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the message with `reason` (RFC 5429); `ereject` asks for an SMTP-level refusal when possible."""

    reason: str
    ereject: bool = False


@dataclass(frozen=True, slots=True)
class Discard:
    """Drop the message silently."""


@dataclass(frozen=True, slots=True)
class Vacation:
    """An auto-reply (RFC 5230): sent through the queue unless one went to `to` within `seconds`."""

    to: str
    subject: str
    body: str
    from_addr: str = ""
    handle: str = ""
    seconds: int = 7 * 86400
    mime: bool = False
    addresses: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Notify:
    """An enotify mailto notification (RFC 5435/5436), sent through the queue."""

    method: str
    message: str
    from_addr: str = ""
    importance: str = "2"


@dataclass(frozen=True, slots=True)
class AddHeader:
    """editheader (RFC 5293) changes, applied before the message is stored."""

    name: str
    value: str
    last: bool = False


Action = Keep | FileInto | Redirect | Reject | Discard | Vacation | Notify
