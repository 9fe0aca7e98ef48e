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
class SendMessage:
    """A new message to send through the queue: a vacation reply, an enotify notification, a notice to the
    user that their script failed. Filtering builds the whole message; delivery only enqueues it."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    reason: str = ""


Action = Keep | FileInto | Redirect | Reject | Discard | SendMessage


@dataclass(frozen=True, slots=True)
class FilterResult:
    """The outcome of filtering one message for one recipient.

    `message` is the message to store (changed by editheader when a script used it); `errors` are the
    problems met while running scripts (each also logged), already turned into a notice in `actions`
    when the user should hear of them."""

    actions: list[Action]
    message: bytes
    errors: list[str] = field(default_factory=list)
