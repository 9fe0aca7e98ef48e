"""The local delivery agent: one queued message to one local mailbox, through filtering into the store.

Called by the queue scheduler from a worker thread (everything here blocks). For a resolved local recipient it
prepends Return-Path and Delivered-To (RFC 5321 §4.4, as Postfix local(8) does), asks
`kinmail.delivery.filtering.decide` what to do (INBOX when that module is absent), and carries the actions out:
Keep/FileInto through `rt.store`, Redirect and SendMessage back into the queue, Reject as a bounce, Discard by
doing nothing. With `[delivery] mailbox_command` set, the command is the local transport instead
(`kinmail.delivery.command`).

Exactly once across `kill -9`: the spool records a recipient only after the store committed, so a crash in
between would deliver twice. After a restart, before delivering a message that was already queued, the agent
looks in the user's Maildir for a copy with the same queue id (our Received header) and Delivered-To address,
written since the message arrived (`DeliveryLedger`). Messages that several worker threads store into the
same folder at the same moment are written with one commit (`GroupCommit`, `UserMailboxes.deliver_many`); each
thread still returns only after its own message is committed. Keeps nothing on disk itself.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinmail.core.log import get_logger
from kinmail.delivery.actions import (
    Action,
    Discard,
    FileInto,
    FilterResult,
    Keep,
    Redirect,
    Reject,
    SendMessage,
)
from kinmail.delivery.filtering import decide

if TYPE_CHECKING:
    from kinmail.config.directory import Recipient
    from kinmail.runtime import Runtime

log = get_logger(__name__)

TEMPORARY, PERMANENT, DELIVERED = "temporary", "permanent", "delivered"
_RECEIVED_ID = re.compile(rb"\bid ([0-9A-Z]{16})\b")
_HEADER_SCAN = 16384


@dataclass(slots=True)
class Outcome:
    """The result for one local target. `followups` are messages to enqueue (redirects, replies, notices);
    `reject` is the reason of a Sieve reject (a bounce goes to the sender)."""

    status: str
    code: int = 250
    enhanced: str = "2.0.0"
    text: str = "delivered"
    followups: list[tuple[str, list[str], bytes, str]] = field(default_factory=list)
    reject: str = ""


def delivered_to(target: Recipient, delimiter: str = "+") -> str:
    """The Delivered-To address: the mailbox, with the `+tag` it was reached by."""
    if target.tag:
        local, _, domain = target.address.rpartition("@")
        return f"{local}{delimiter}{target.tag}@{domain}"
    return target.address


def trace_headers(sender: str, target_address: str) -> bytes:
    return f"Return-Path: <{sender}>\r\nDelivered-To: {target_address}\r\n".encode("utf-8", "surrogateescape")


def maildir_of(rt: Runtime, address: str) -> Path:
    local, _, domain = address.rpartition("@")
    return rt.data_dir / "mail" / domain.lower() / local.lower()


class DeliveryLedger:
    """Which (queue id, Delivered-To) pairs already sit in a user's Maildir, for messages found in the spool at
    start-up. Built once per user from files written since `since` (the oldest such message's arrival)."""

    def __init__(self, since: float) -> None:
        self.since = since - 120.0
        self._users: dict[str, set[tuple[str, str]]] = {}
        self._lock = threading.Lock()

    def contains(self, rt: Runtime, user: str, queue_id: str, delivered_to_address: str) -> bool:
        with self._lock:
            found = self._users.get(user)
            if found is None:
                found = self._scan(maildir_of(rt, user))
                self._users[user] = found
        return (queue_id, delivered_to_address.lower()) in found

    def _scan(self, root: Path) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        if not root.is_dir():
            return found
        folders = [root] + [p for p in root.iterdir() if p.name.startswith(".") and p.is_dir()]
        for folder in folders:
            for sub in ("new", "cur"):
                try:
                    entries = list(os.scandir(folder / sub))
                except OSError:
                    continue
                for entry in entries:
                    try:
                        if entry.stat().st_mtime < self.since:
                            continue
                        with open(entry.path, "rb") as handle:
                            head = handle.read(_HEADER_SCAN)
                    except OSError:
                        continue
                    key = _trace_key(head)
                    if key is not None:
                        found.add(key)
        return found


def _trace_key(head: bytes) -> tuple[str, str] | None:
    end = head.find(b"\r\n\r\n")
    if end < 0:
        end = head.find(b"\n\n")
    block = head if end < 0 else head[:end]
    target = ""
    for line in block.splitlines():
        if line[:13].lower() == b"delivered-to:":
            target = line[13:].strip().decode("utf-8", "replace").lower()
            break
    match = _RECEIVED_ID.search(block)
    if not target or match is None:
        return None
    return match.group(1).decode(), target


def is_auto_submitted(message: bytes) -> bool:
    """An Auto-Submitted header other than "no" in the message's header (RFC 3834 §5)."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[:end]
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"auto-submitted:":
            return line[15:].strip().split(b";")[0].strip().lower() != b"no"
    return False


def has_loop(message: bytes, address: str) -> bool:
    """A Delivered-To header for `address` already in the message: a mail loop (Postfix local(8))."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[:end]
    needle = f"delivered-to: {address}".lower().encode("utf-8", "surrogateescape")
    return any(line.strip().lower() == needle for line in head.split(b"\r\n"))


def deliver_local(
    rt: Runtime,
    *,
    queue_id: str,
    sender: str,
    target: Recipient,
    message: bytes,
    ledger: DeliveryLedger | None = None,
) -> Outcome:
    """Deliver `message` (as queued) to the local mailbox `target`. Blocking: call from a worker thread."""
    delimiter = rt.config.delivery.recipient_delimiter or "+"
    dt = delivered_to(target, delimiter)
    if has_loop(message, dt):
        return Outcome(PERMANENT, 554, "5.4.6", f"mail forwarding loop for {dt}")
    if ledger is not None and ledger.contains(rt, target.address, queue_id, dt):
        log.info("delivery.already_done", queue_id=queue_id, rcpt=dt)
        return Outcome(DELIVERED, text="already delivered before restart")
    data = trace_headers(sender, dt) + message
    if rt.config.delivery.mailbox_command:
        from kinmail.delivery.command import run_mailbox_command

        return run_mailbox_command(rt, sender=sender, target=target, message=data, delivered_to=dt)
    try:
        result = decide(rt, target, sender, data)
    except Exception:  # a bug in filtering must never lose mail: keep it in INBOX
        log.exception("delivery.filter_failed", queue_id=queue_id, rcpt=dt)
        result = FilterResult([Keep()], data)
    return _carry_out(rt, queue_id, sender, target, dt, result)


def _carry_out(
    rt: Runtime, queue_id: str, sender: str, target: Recipient, dt: str, result: FilterResult
) -> Outcome:
    outcome = Outcome(DELIVERED)
    stored = False
    actions: list[Action] = list(result.actions)
    for action in actions:
        if isinstance(action, Keep | FileInto):
            folder = action.folder if isinstance(action, FileInto) else "INBOX"
            create = action.create if isinstance(action, FileInto) else False
            failure = _store(rt, target.address, folder, result.message, action.flags, create)
            if failure is not None:
                return failure
            stored = True
        elif isinstance(action, Redirect):
            if has_loop(result.message, action.address):
                log.info("delivery.redirect_loop", queue_id=queue_id, rcpt=dt, to=action.address)
                continue
            outcome.followups.append((sender, [action.address], result.message, "redirect"))
        elif isinstance(action, SendMessage):
            if not sender or is_auto_submitted(result.message):
                # RFC 3834 §2: nothing automatic in answer to a bounce or an automatic message (no loops).
                log.info(
                    "delivery.notice_suppressed", queue_id=queue_id, rcpt=dt, reason=action.reason or None
                )
                continue
            outcome.followups.append((action.sender, list(action.recipients), action.data, "notify"))
        elif isinstance(action, Reject):
            outcome.reject = action.reason or "rejected by the recipient's filter"
        elif isinstance(action, Discard):
            pass
    log.info(
        "delivery.local",
        queue_id=queue_id,
        rcpt=dt,
        status="delivered" if stored else "filtered",
        actions=",".join(type(a).__name__ for a in actions) or "none",
    )
    return outcome


class _Slot:
    """One message waiting to be stored in a group commit."""

    __slots__ = ("alone", "data", "event", "lead")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.event = threading.Event()
        self.lead = False  # woken to write the next batch
        self.alone = False  # the batch failed: store this one by itself (its own error handling)


class GroupCommit:
    """Group commit of deliveries into one folder: while one worker thread writes a batch (one folder fsync,
    one uidlist append, one index transaction: `UserMailboxes.deliver_many`), the messages other workers bring
    for the same user, folder and flags wait and go into the next batch. Each caller returns only once its own
    message is committed, so the spool still records a recipient only after the store has it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, tuple[str, ...]], list[_Slot]] = {}
        self._busy: set[tuple[str, str, tuple[str, ...]]] = set()

    def deliver(self, mailboxes: Any, address: str, folder: str, data: bytes, flags: tuple[str, ...]) -> None:
        key = (address.lower(), folder, flags)
        slot = _Slot(data)
        with self._lock:
            self._pending.setdefault(key, []).append(slot)
            lead = key not in self._busy
            self._busy.add(key)
        if not lead:
            slot.event.wait()
            if slot.lead:
                slot.event.clear()
                lead = True
        if lead:
            self._write_batch(mailboxes, key)
            slot.event.wait()
        if slot.alone:
            mailboxes.deliver(folder, data, flags=flags)

    def _write_batch(self, mailboxes: Any, key: tuple[str, str, tuple[str, ...]]) -> None:
        with self._lock:
            batch = self._pending.pop(key, [])
        _address, folder, flags = key
        try:
            if len(batch) == 1:  # the leader's own message: its errors are the caller's
                mailboxes.deliver_many(folder, [batch[0].data], flags)
            elif batch:
                try:
                    mailboxes.deliver_many(folder, [slot.data for slot in batch], flags)
                    log.debug("delivery.group_commit", folder=folder, messages=len(batch))
                except Exception:
                    # e.g. the batch is over quota where each message alone is not: one by one, each with
                    # its own outcome
                    for slot in batch:
                        slot.alone = True
        finally:
            with self._lock:
                waiting = self._pending.get(key)
                if waiting:
                    waiting[0].lead = True
                    waiting[0].event.set()
                else:
                    self._busy.discard(key)
            for slot in batch:
                slot.event.set()


_GROUP = GroupCommit()


def _store(
    rt: Runtime, address: str, folder: str, data: bytes, flags: tuple[str, ...], create: bool
) -> Outcome | None:
    from kinmail.store import errors as store_errors

    try:
        mailboxes: Any = rt.store.mailboxes(address)
        try:
            _GROUP.deliver(mailboxes, f"{id(rt.store)} {address}", folder, data, tuple(flags))
        except store_errors.NoSuchFolder:
            if folder != "INBOX" and create:
                try:
                    mailboxes.create_folder(folder)
                except store_errors.FolderExists:
                    pass
                mailboxes.deliver(folder, data, flags=flags)
            elif folder != "INBOX":
                log.info("delivery.no_such_folder", rcpt=address, folder=folder)
                mailboxes.deliver("INBOX", data, flags=flags)
            else:
                raise
    except store_errors.QuotaExceeded:
        return Outcome(PERMANENT, 552, "5.2.2", "mailbox full")
    except store_errors.InvalidFolderName:
        mailboxes.deliver("INBOX", data, flags=flags)
    except (store_errors.StoreError, OSError) as exc:
        log.warning("delivery.store_failed", rcpt=address, folder=folder, reason=str(exc))
        return Outcome(TEMPORARY, 451, "4.3.0", f"cannot store the message: {exc}")
    return None
