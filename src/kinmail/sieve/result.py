"""What a Sieve run produces: actions as values (keep, fileinto, redirect, reject, vacation, notify...), the
implicit keep (RFC 5228 §2.10.2) and the (possibly edited) message, plus the `Host` through which the
interpreter asks questions of its surroundings (mailboxes, lists, duplicates, included scripts).

The interpreter fills a `SieveResult`; delivery (`kinmail.delivery.filtering`) or the test suite carry it
out. Nothing here does I/O; keeps nothing on disk.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from kinmail.sieve.errors import SieveRuntimeError
from kinmail.sieve.message import SieveMessage
from kinmail.sieve.spamtest import ScoreConfig


@dataclass(slots=True)
class KeepAction:
    flags: tuple[str, ...] = ()
    line: int = 0
    snapshot: bytes | None = None  # the message as edited when the action was taken (RFC 5293 §5)


@dataclass(slots=True)
class FileIntoAction:
    folder: str
    flags: tuple[str, ...] = ()
    copy: bool = False
    create: bool = False
    specialuse: str = ""
    line: int = 0
    snapshot: bytes | None = None


@dataclass(slots=True)
class RedirectAction:
    address: str
    copy: bool = False
    line: int = 0
    snapshot: bytes | None = None


@dataclass(slots=True)
class DiscardAction:
    line: int = 0


@dataclass(slots=True)
class RejectAction:
    reason: str
    ereject: bool = False
    line: int = 0


@dataclass(slots=True)
class VacationAction:
    reason: str
    subject: str | None = None
    from_: str | None = None
    addresses: tuple[str, ...] = ()
    mime: bool = False
    handle: str = ""
    seconds: int = 7 * 86400
    line: int = 0


@dataclass(slots=True)
class NotifyAction:
    method: str
    from_: str | None = None
    importance: str = "2"
    options: tuple[str, ...] = ()
    message: str | None = None
    line: int = 0


@dataclass(slots=True)
class ReportAction:
    """vnd.dovecot.report: an abuse report (RFC 5965) about the message to `address`."""

    feedback_type: str
    message: str
    address: str
    headers_only: bool = False
    line: int = 0


SieveAction = (
    KeepAction
    | FileIntoAction
    | RedirectAction
    | DiscardAction
    | RejectAction
    | VacationAction
    | NotifyAction
    | ReportAction
)


def action_name(action: SieveAction) -> str:
    return {
        KeepAction: "keep",
        FileIntoAction: "fileinto",
        RedirectAction: "redirect",
        DiscardAction: "discard",
        RejectAction: "reject",
        VacationAction: "vacation",
        NotifyAction: "notify",
        ReportAction: "report",
    }[type(action)]


@dataclass(slots=True)
class Envelope:
    """The SMTP envelope of the message under filtering (RFC 5228 §5.4)."""

    sender: str = ""
    recipient: str = ""
    orig_recipient: str = ""
    auth: str = ""


class Host:
    """What the interpreter may ask of its surroundings; delivery and the test suite override these.

    Defaults describe a world with no mailboxes, lists, metadata nor history."""

    max_redirects: int = 4
    max_actions: int = 32
    delimiter: str = "+"
    max_notifications: int = 10
    max_variable_size: int = 4096
    spam_config = ScoreConfig("X-Spam-Score", "score", 10.0)
    virus_config = ScoreConfig("X-Virus-Status", "text", text_values={1: "clean", 5: "infected"})

    def include(self, name: str, personal: bool) -> str | None:
        """The text of the script `name` (personal or global), or None when there is none."""
        return None

    def mailbox_exists(self, name: str) -> bool:
        return False

    def special_use_exists(self, mailbox: str | None, flags: list[str]) -> bool:
        return False

    def metadata(self, mailbox: str | None, name: str) -> str | None:
        return None

    def list_valid(self, name: str) -> bool:
        return False

    def list_contains(self, name: str, value: str) -> bool:
        return False

    def duplicate(self, key: str, seconds: int, last: bool) -> bool:
        """Whether `key` was seen within `seconds`; remembering it happens in `duplicate_commit`."""
        return False

    def duplicate_commit(self, key: str, seconds: int) -> None:
        pass

    def environment(self) -> dict[str, str]:
        return {}

    def now(self) -> dt.datetime:
        return dt.datetime.now().astimezone()

    def debug_log(self, message: str) -> None:
        pass

    editheader_max_size: int = 2048
    username: str = ""

    def editheader_allowed(self, name: str, operation: str) -> bool:
        """Whether scripts may add (`operation` "add") or delete ("delete") field `name` (RFC 5293 §7:
        Received and Auto-Submitted fields are never removed; adding them is allowed)."""
        return operation == "add" or name.lower() not in ("received", "auto-submitted")

    def namespace_value(self, parts: tuple[str, ...]) -> str | None:
        """A variable of a namespace the host provides (`${tst.path}` in the test suite)."""
        return None

    def list_members(self, name: str) -> list[str]:
        """The addresses of list `name` for `redirect :list` (RFC 6134 §2.5)."""
        raise SieveRuntimeError(f"redirect :list: the members of list '{name}' cannot be listed")

    def warning(self, message: str) -> None:
        """A runtime problem that does not stop the script (an invalid regular expression from a variable)."""


@dataclass(slots=True)
class SieveResult:
    """Actions collected over one or more scripts, in order; `implicit_keep` applies when no action
    cancelled it (RFC 5228 §2.10.2) and keeps with `keep_flags`."""

    message: SieveMessage
    actions: list[SieveAction] = field(default_factory=list)
    implicit_keep: bool = True
    keep_flags: tuple[str, ...] = ()
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    redirects: int = 0
    executed: int = 0

    def add(self, action: SieveAction, host: Host) -> None:
        """Add `action`, merging duplicates and refusing conflicts (RFC 5228 §4, RFC 5429 §2.1)."""
        line = action.line
        for index, old in enumerate(self.actions):
            if index < self.executed:
                # already carried out (an earlier script of a multiscript run): conflicts are resolved
                # gracefully, a second reject is dropped
                if isinstance(old, RejectAction) and isinstance(action, RejectAction):
                    return
                continue
            if isinstance(old, RejectAction) and isinstance(action, RejectAction):
                raise SieveRuntimeError("duplicate reject/ereject action not allowed", line)
            if isinstance(old, RejectAction) and isinstance(
                action, (KeepAction, FileIntoAction, RedirectAction)
            ):
                raise SieveRuntimeError(
                    f"reject action conflicts with earlier {action_name(action)} action", line
                )
            if isinstance(action, RejectAction) and isinstance(
                old, (KeepAction, FileIntoAction, RedirectAction)
            ):
                raise SieveRuntimeError(
                    f"reject action conflicts with earlier {action_name(old)} action", line
                )
            if isinstance(old, VacationAction) and isinstance(action, VacationAction):
                raise SieveRuntimeError("duplicate vacation action not allowed", line)
            if isinstance(old, (VacationAction, RejectAction)) and isinstance(
                action, (VacationAction, RejectAction)
            ):
                raise SieveRuntimeError("vacation action conflicts with reject action", line)
        if isinstance(action, KeepAction):
            for i, old in enumerate(self.actions):
                if isinstance(old, KeepAction) or (isinstance(old, FileIntoAction) and _is_inbox(old.folder)):
                    # RFC 5232 §3: with duplicate keeps, the last flag list wins
                    self.actions[i] = KeepAction(action.flags, old.line)
                    self.implicit_keep = False
                    return
        elif isinstance(action, FileIntoAction):
            for i, old in enumerate(self.actions):
                same = isinstance(old, FileIntoAction) and same_folder(old.folder, action.folder)
                inbox = isinstance(old, KeepAction) and _is_inbox(action.folder)
                if same or inbox:
                    if isinstance(old, FileIntoAction):
                        old.flags = action.flags
                        old.copy = old.copy and action.copy
                        old.create = old.create or action.create
                    elif isinstance(old, KeepAction):
                        self.actions[i] = KeepAction(action.flags, old.line)
                    if not action.copy:
                        self.implicit_keep = False
                    return
        elif isinstance(action, RedirectAction):
            for old in self.actions:
                if isinstance(old, RedirectAction) and old.address.lower() == action.address.lower():
                    if not action.copy:
                        old.copy = False
                        self.implicit_keep = False
                    return
            if self.redirects >= host.max_redirects:
                raise SieveRuntimeError(
                    f"number of redirect actions exceeds policy limit ({host.max_redirects})", line
                )
            self.redirects += 1
        elif isinstance(action, DiscardAction):
            if any(isinstance(old, DiscardAction) for old in self.actions):
                return
        elif isinstance(action, NotifyAction):
            for old in self.actions:
                if isinstance(old, NotifyAction) and old.method == action.method:
                    return
        if len(self.actions) >= host.max_actions:
            raise SieveRuntimeError(
                f"total number of actions exceeds policy limit ({host.max_actions})", line
            )
        self.actions.append(action)
        if isinstance(action, (KeepAction, DiscardAction, RejectAction)) or (
            isinstance(action, (FileIntoAction, RedirectAction)) and not action.copy
        ):
            self.implicit_keep = False

    def final_actions(self) -> list[SieveAction]:
        """The actions to carry out, with the implicit keep added when it still applies."""
        out = list(self.actions)
        if self.implicit_keep and not any(isinstance(a, KeepAction) for a in out):
            out.append(KeepAction(self.keep_flags))
        return out


def _is_inbox(folder: str) -> bool:
    return folder.upper() == "INBOX"


def canonical_folder(folder: str) -> str:
    """`INBOX` is case-insensitive, also as the first level of a hierarchy (RFC 3501 §5.1)."""
    head = folder[:5]
    if head.upper() == "INBOX" and (len(folder) == 5 or folder[5] in "./"):
        return "INBOX" + folder[5:]
    return folder


def same_folder(a: str, b: str) -> bool:
    return canonical_folder(a) == canonical_folder(b)


def _merge(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    seen = {f.lower() for f in a}
    return a + tuple(f for f in b if f.lower() not in seen)
