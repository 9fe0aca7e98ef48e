"""The local delivery agent: queued messages to local mailboxes, through filtering into the store.

Called by the queue scheduler from a worker thread (everything here blocks). For a resolved local recipient it
prepends Return-Path and Delivered-To (RFC 5321 §4.4, as Postfix local(8) does), asks
`kinmail.delivery.filtering.decide` what to do (INBOX when that module is absent), and carries the actions out:
Keep/FileInto through `rt.store`, Redirect and SendMessage back into the queue, Reject as a bounce, Discard by
doing nothing. With `[delivery] mailbox_command` set, the command is the local transport instead
(`kinmail.delivery.command`).

Exactly once across `kill -9`: the spool records a recipient only after the store committed, so a crash in
between would deliver twice. After a restart, before delivering a message that was already queued, the agent
looks in the user's Maildir for a copy with the same queue id (our Received header) and Delivered-To address,
written since the message arrived (`DeliveryLedger`). The scheduler hands over the deliveries of every message
ready at the same moment as one batch (`deliver_batch`): messages for the same folder are written with one
commit (`UserMailboxes.deliver_many`), and the batch returns only once all of them are committed. Keeps nothing on
disk itself.
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
from kinmail.store.groupappend import AppendJob, append_group, finish_deferred
from kinmail.store.names import INBOX

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


@dataclass(slots=True)
class Delivery:
    """One local target of one queued message, for `deliver_batch`."""

    queue_id: str
    sender: str
    target: Recipient
    message: bytes
    ledger: DeliveryLedger | None = None


@dataclass(slots=True)
class _Plan:
    """What filtering decided for one delivery: the store writes to make, and the outcome once they are made."""

    queue_id: str
    target: Recipient
    dt: str
    data: bytes
    stores: list[tuple[str, tuple[str, ...], bool]]  # (folder, flags, create), in the order of the actions
    outcome: Outcome
    actions: str


def deliver_batch(rt: Runtime, items: list[Delivery]) -> list[Outcome]:
    """Deliver several (message, local target) pairs; one `Outcome` each, in order. Blocking.

    Filtering runs for each in turn; then the messages that go to the same user, folder and flags with a single
    store write form one job, and all jobs are stored with one `store.groupappend.append_group` (one sync of
    every file and of every directory; per folder one uidlist append and one index transaction: group commit).
    A job that fails as a whole (over quota together, a folder missing) is stored one message at a time, each
    with its own outcome. Only when this returns is anything recorded as
    delivered, so the spool never counts a message the store does not have."""
    plans: list[_Plan | Outcome] = []
    for item in items:
        try:
            plans.append(_plan(rt, item))
        except Exception as exc:
            log.exception("delivery.failed", queue_id=item.queue_id, rcpt=item.target.address)
            plans.append(Outcome(TEMPORARY, 451, "4.3.0", f"local delivery failed: {type(exc).__name__}"))
    stored: set[int] = set()
    groups: dict[tuple[str, str, tuple[str, ...]], list[int]] = {}
    for n, plan in enumerate(plans):
        if isinstance(plan, _Plan) and len(plan.stores) == 1:
            folder, flags, _create = plan.stores[0]
            groups.setdefault((plan.target.address.lower(), folder, flags), []).append(n)
    jobs: list[tuple[list[int], AppendJob]] = []
    for (_address, folder, flags), members in groups.items():
        first = plans[members[0]]
        assert isinstance(first, _Plan)
        try:
            box = rt.store.mailboxes(first.target.address).open(folder or INBOX, scan=False)
        except Exception:  # a folder missing (Sieve's :create): one by one below
            continue
        datas = [plan.data for n in members if isinstance(plan := plans[n], _Plan)]
        jobs.append((members, AppendJob(box, [(data, flags, None) for data in datas])))
    # every user's and folder's group at once: one sync of all the files, one of all the directories (a message
    # to the whole family is one round of fsyncs, not one per member)
    append_group([job for _members, job in jobs])
    for members, job in jobs:
        if job.deferred:
            try:
                finish_deferred(job)
            except Exception as exc:
                job.error = exc
        if job.error is None:
            stored.update(members)
        else:  # not as a whole: one by one below, each with its own error handling
            log.debug(
                "delivery.batch_failed", rcpt=job.mailbox.user_state.address, messages=len(job.messages)
            )
    outcomes: list[Outcome] = []
    for n, plan in enumerate(plans):
        if isinstance(plan, Outcome):
            outcomes.append(plan)
            continue
        failure = None
        if n not in stored:
            for folder, flags, create in plan.stores:
                failure = _store(rt, plan.target.address, folder, plan.data, flags, create)
                if failure is not None:
                    break
        if failure is not None:
            outcomes.append(failure)
            continue
        log.info(
            "delivery.local",
            queue_id=plan.queue_id,
            rcpt=plan.dt,
            status="delivered" if plan.stores else "filtered",
            actions=plan.actions,
        )
        outcomes.append(plan.outcome)
    return outcomes


def _plan(rt: Runtime, item: Delivery) -> _Plan | Outcome:
    """Everything before the store writes: loop and ledger checks, trace headers, filtering (or the mailbox
    command, which delivers by itself)."""
    delimiter = rt.config.delivery.recipient_delimiter or "+"
    target, queue_id, sender = item.target, item.queue_id, item.sender
    dt = delivered_to(target, delimiter)
    if has_loop(item.message, dt):
        return Outcome(PERMANENT, 554, "5.4.6", f"mail forwarding loop for {dt}")
    if item.ledger is not None and item.ledger.contains(rt, target.address, queue_id, dt):
        log.info("delivery.already_done", queue_id=queue_id, rcpt=dt)
        return Outcome(DELIVERED, text="already delivered before restart")
    data = trace_headers(sender, dt) + item.message
    if rt.config.delivery.mailbox_command:
        from kinmail.delivery.command import run_mailbox_command

        return run_mailbox_command(rt, sender=sender, target=target, message=data, delivered_to=dt)
    try:
        result = decide(rt, target, sender, data)
    except Exception:  # a bug in filtering must never lose mail: keep it in INBOX
        log.exception("delivery.filter_failed", queue_id=queue_id, rcpt=dt)
        result = FilterResult([Keep()], data)
    return _plan_actions(queue_id, sender, target, dt, result)


def _plan_actions(queue_id: str, sender: str, target: Recipient, dt: str, result: FilterResult) -> _Plan:
    outcome = Outcome(DELIVERED)
    stores: list[tuple[str, tuple[str, ...], bool]] = []
    actions: list[Action] = list(result.actions)
    for action in actions:
        if isinstance(action, Keep | FileInto):
            folder = action.folder if isinstance(action, FileInto) else "INBOX"
            create = action.create if isinstance(action, FileInto) else False
            stores.append((folder, tuple(action.flags), create))
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
    names = ",".join(type(a).__name__ for a in actions) or "none"
    return _Plan(queue_id, target, dt, result.message, stores, outcome, names)


def _store(
    rt: Runtime, address: str, folder: str, data: bytes, flags: tuple[str, ...], create: bool
) -> Outcome | None:
    from kinmail.store import errors as store_errors

    try:
        mailboxes: Any = rt.store.mailboxes(address)
        try:
            mailboxes.deliver(folder, data, flags=flags)
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
