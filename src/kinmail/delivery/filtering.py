"""Filtering for local delivery: runs the group's policy script (`[sieve] global_script`), the user's active
script and the optional `[sieve] after_script` over one message for one recipient, and turns the outcome into
delivery actions (`kinmail.delivery.actions`).

Called by the local delivery agent (`kinmail.delivery.local`) from a worker thread: `decide(rt, recipient,
sender, message)`. Rules kept here (RFC 5228 §2.10.2 implicit keep, §2.10.6 errors): a script that does not
compile or fails while running is skipped as if it did nothing — the message is kept in INBOX — and the user
gets a notice saying why; a `stop` in the global script ends filtering. Redirect loops are cut (a Delivered-To
naming the recipient turns redirects into a keep) and their number is capped (`[sieve] max_redirects`).
Vacation replies obey RFC 3834 and go out once per period per sender (`kinmail.delivery.vacation` keeps that
state, and the duplicate test's, in `data_dir/state/sieve.sqlite`).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import email.utils
import hashlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from kinmail.config.directory import Recipient
from kinmail.config.load import LoadedConfig
from kinmail.core.errors import ConfigError, Problem
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
from kinmail.delivery.vacation import SieveState, state_for
from kinmail.sieve import Script, SieveError, compile_script
from kinmail.sieve.errors import SieveRuntimeError
from kinmail.sieve.interp import Interpreter
from kinmail.sieve.message import SieveMessage, parse_addresses
from kinmail.sieve.notify import build_notification
from kinmail.sieve.report import build_report
from kinmail.sieve.result import (
    DiscardAction,
    Envelope,
    FileIntoAction,
    Host,
    KeepAction,
    NotifyAction,
    RedirectAction,
    RejectAction,
    ReportAction,
    SieveResult,
    VacationAction,
)
from kinmail.sieve.spamtest import ScoreConfig
from kinmail.sieve.storage import ScriptStore, ScriptStoreError
from kinmail.sieve.vacation import build_reply, skip_reason

if TYPE_CHECKING:
    from kinmail.runtime import Runtime

log = get_logger(__name__)

_CACHE: dict[str, Script] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 256


def _compile(text: str, name: str) -> Script:
    """Compile with a small cache keyed by the script text (scripts change rarely, mail comes often)."""
    key = name + "\0" + text
    with _CACHE_LOCK:
        script = _CACHE.get(key)
    if script is None:
        script = compile_script(text, name=name)
        with _CACHE_LOCK:
            if len(_CACHE) >= _CACHE_MAX:
                _CACHE.clear()
            _CACHE[key] = script
    return script


class DeliveryHost(Host):
    """What scripts may learn of the server while delivering to `user`."""

    def __init__(self, rt: Runtime, user: str, state: SieveState) -> None:
        self.rt = rt
        self.user = user
        self.state = state
        cfg = rt.config.sieve
        self.max_redirects = cfg.max_redirects
        self.max_actions = cfg.max_actions
        self.username = user
        self.delimiter = rt.config.delivery.recipient_delimiter or "+"
        self.spam_config = ScoreConfig(cfg.spamtest_header, "score", cfg.spamtest_max)
        self.virus_config = ScoreConfig(cfg.virustest_header, "text", text_values={1: "clean", 5: "infected"})
        self._folders: dict[str, set[str]] | None = None

    def include(self, name: str, personal: bool) -> str | None:
        try:
            store = ScriptStore(self.rt.data_dir, self.user)
        except ScriptStoreError:
            return None
        return store.include_loader(self.rt.loaded.resolve("sieve"))(name, personal)

    def _load_folders(self) -> dict[str, set[str]]:
        if self._folders is None:
            folders: dict[str, set[str]] = {}
            try:
                for info in self.rt.store.mailboxes(self.user).folders():
                    folders[info.name] = {info.special_use.lower()} if info.special_use else set()
            except Exception as exc:  # mailbox tests then answer "no such folder"; the message is not lost
                log.warning("sieve.folders_unavailable", rcpt=self.user, reason=str(exc))
            self._folders = folders
        return self._folders

    def mailbox_exists(self, name: str) -> bool:
        folders = self._load_folders()
        return name in folders or (name.upper() == "INBOX" and "INBOX" in folders)

    def special_use_exists(self, mailbox: str | None, flags: list[str]) -> bool:
        folders = self._load_folders()
        wanted = {f.lower() for f in flags}
        if mailbox is None:
            have: set[str] = set().union(*folders.values()) if folders else set()
            return wanted <= have
        return mailbox in folders and wanted <= folders[mailbox]

    def _list_spec(self, name: str) -> str | None:
        from kinmail.sieve.checks import list_name

        wanted = list_name(name)
        for key, spec in self.rt.config.sieve.lists.items():
            if list_name(key) == wanted:
                return spec
        return None

    def list_valid(self, name: str) -> bool:
        return self._list_spec(name) is not None

    def list_contains(self, name: str, value: str) -> bool:
        from kinmail.config.maps import lookup_address

        spec = self._list_spec(name)
        if spec is None or not value:
            return False
        try:
            table = self.rt.directory.map(spec)
        except ConfigError as exc:  # `kinmail check` names the problem; until fixed, the list is empty
            log.warning("sieve.list_unavailable", list=name, reason=str(exc))
            return False
        value = value.strip().lower()
        if "@" in value:
            return lookup_address(table, value, self.rt.config.delivery.recipient_delimiter) is not None
        return table.lookup(value) is not None

    def duplicate(self, key: str, seconds: int, last: bool) -> bool:
        return self.state.duplicate_seen(self.user, key)

    def environment(self) -> dict[str, str]:
        hostname = self.rt.config.hostname
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version("kinmail")
        except PackageNotFoundError:
            ver = "0"
        return {
            "domain": hostname.partition(".")[2] or hostname,
            "host": hostname,
            "location": "MDA",
            "name": "kinmail",
            "phase": "during",
            "version": ver,
        }


def _scripts(rt: Runtime, user: str) -> list[tuple[str, str, str]]:
    """(kind, name, text) of the scripts to run, in order: global, user, after."""
    out: list[tuple[str, str, str]] = []
    cfg = rt.config.sieve
    for kind, setting in (("global", cfg.global_script), ("user", ""), ("after", cfg.after_script)):
        if kind == "user":
            try:
                active = ScriptStore(rt.data_dir, user).active()
            except ScriptStoreError:
                active = None
            if active is not None:
                out.append(("user", active[0], active[1]))
            continue
        if not setting:
            continue
        path = rt.loaded.resolve(setting)
        try:
            out.append((kind, Path(setting).name, path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.error("sieve.script_unreadable", script=str(path), reason=str(exc))
    return out


def _notice(rt: Runtime, user: str, script: str, problem: str, sender: str, subject: str) -> SendMessage:
    """A message telling `user` that their filter failed and the message was kept in INBOX."""
    now = dt.datetime.now(dt.UTC)
    body = (
        f'Your mail filter (Sieve script "{script}") could not be used for a message, so the message was\r\n'
        f"delivered to your INBOX instead. Nothing was lost.\r\n\r\n"
        f"  message from: {sender or '(none)'}\r\n"
        f"  subject:      {subject or '(none)'}\r\n"
        f"  problem:      {problem}\r\n\r\n"
        "You can correct the script from your mail program's filter settings.\r\n"
    )
    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{rt.config.hostname}>\r\n"
        f"To: <{user}>\r\n"
        f"Subject: Your mail filter failed: {script}\r\n"
        f"Date: {email.utils.format_datetime(now)}\r\n"
        f"Message-ID: {email.utils.make_msgid(domain=rt.config.hostname)}\r\n"
        "Auto-Submitted: auto-generated\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return SendMessage("", (user,), (head + body).encode("utf-8"), reason="sieve-error")


NOTICE_PERIOD = 86400


def _notice_due(state: SieveState, user: str, script: str) -> bool:
    """At most one failure notice a day for the same script text, however much mail it fails on."""
    handle = "notice:" + hashlib.sha256(script.encode("utf-8")).hexdigest()[:32]
    return state.vacation_due(user, "", handle, NOTICE_PERIOD)


def _snapshot(result: SieveResult) -> tuple[object, ...]:
    return (
        copy.deepcopy(result.actions),
        result.implicit_keep,
        result.keep_flags,
        list(result.duplicates),
        result.redirects,
        list(result.message.headers),
        result.message.edited,
    )


def _restore(result: SieveResult, snap: tuple[object, ...]) -> None:
    actions, keep, flags, dups, redirects, headers, edited = snap
    result.actions = actions  # type: ignore[assignment]
    result.implicit_keep = keep  # type: ignore[assignment]
    result.keep_flags = flags  # type: ignore[assignment]
    result.duplicates = dups  # type: ignore[assignment]
    result.redirects = redirects  # type: ignore[assignment]
    result.message.replace_headers(headers)  # type: ignore[arg-type]
    result.message.edited = bool(edited)


def decide(rt: Runtime, recipient: Recipient, sender: str, message: bytes) -> FilterResult:
    """Run the scripts that apply to `recipient` and return what to do with `message` (never an empty list
    unless a script discarded or rejected it)."""
    user = recipient.address
    scripts = _scripts(rt, user)
    if not scripts:
        return FilterResult([Keep()], message)
    state = state_for(rt.data_dir)
    host = DeliveryHost(rt, user, state)
    msg = SieveMessage(message)
    to = recipient.original or user
    envelope = Envelope(sender=sender, recipient=to, orig_recipient=to)
    interp = Interpreter(msg, envelope, host)
    errors: list[str] = []
    notices: list[SendMessage] = []
    subject = (msg.header("subject") or [""])[0]
    for kind, name, text in scripts:
        try:
            script = _compile(text, name)
        except SieveError as exc:
            problem = f"the script does not compile: {exc}"
            errors.append(f"{kind} script {name}: {problem}")
            log.warning("sieve.compile_failed", rcpt=user, script=name, kind=kind, reason=str(exc))
            if kind == "user" and _notice_due(state, user, text):
                notices.append(_notice(rt, user, name, problem, sender, subject))
            continue
        snap = _snapshot(interp.result)
        flags = list(interp.internal_flags)
        try:
            interp.run(script)
        except SieveRuntimeError as exc:
            _restore(interp.result, snap)
            interp.internal_flags = flags
            problem = f"the script failed while running: {exc}"
            errors.append(f"{kind} script {name}: {problem}")
            log.warning("sieve.runtime_error", rcpt=user, script=name, kind=kind, reason=str(exc))
            if kind == "user" and _notice_due(state, user, text):
                notices.append(_notice(rt, user, name, problem, sender, subject))
        except Exception:  # a bug met by an unusual message must not cost the message
            log.exception("sieve.internal_error", rcpt=user, script=name, kind=kind)
            _restore(interp.result, snap)
            interp.internal_flags = flags
            problem = "the filter could not handle this message (an internal error, logged for the admin)"
            errors.append(f"{kind} script {name}: {problem}")
            if kind == "user" and _notice_due(state, user, text):
                notices.append(_notice(rt, user, name, problem, sender, subject))
        if interp.stopped:
            break
    actions = _to_actions(rt, interp.result, msg, envelope, user, recipient, state, host)
    for key, seconds in interp.result.duplicates:
        state.duplicate_remember(user, key, seconds)
    actions.extend(notices)
    log.info(
        "sieve.done",
        rcpt=user,
        actions=" ".join(type(a).__name__.lower() for a in actions),
        errors=len(errors) or None,
    )
    return FilterResult(actions, msg.to_bytes() if msg.edited else message, errors)


def _looping(msg: SieveMessage, user: str, recipient: Recipient) -> bool:
    """A redirect loop: the message already passed through this mailbox before the current delivery (a
    second Delivered-To for it — the local agent adds the first — or an X-Sieve-Redirected-From for it)."""
    mine = {user.lower(), (recipient.original or user).lower()}

    def naming_us(name: str) -> int:
        return sum(1 for v in msg.raw_values(name) for a in parse_addresses(v) if a.all.lower() in mine)

    return naming_us("delivered-to") >= 2 or naming_us("x-sieve-redirected-from") >= 1


def _to_actions(
    rt: Runtime,
    result: SieveResult,
    msg: SieveMessage,
    envelope: Envelope,
    user: str,
    recipient: Recipient,
    state: SieveState,
    host: DeliveryHost,
) -> list[Action]:
    out: list[Action] = []
    loop = _looping(msg, user, recipient)
    need_keep = False
    for action in result.final_actions():
        if isinstance(action, KeepAction):
            out.append(Keep(action.flags))
        elif isinstance(action, FileIntoAction):
            out.append(FileInto(action.folder, action.flags, action.create))
        elif isinstance(action, RedirectAction):
            if loop:
                log.warning("sieve.redirect_loop", rcpt=user, to=action.address)
                need_keep = True
                continue
            out.append(Redirect(action.address, action.copy))
        elif isinstance(action, DiscardAction):
            out.append(Discard())
        elif isinstance(action, RejectAction):
            out.append(Reject(action.reason, action.ereject))
        elif isinstance(action, VacationAction):
            reply = _vacation(rt, msg, envelope, action, user, recipient, state)
            if reply is not None:
                out.append(reply)
        elif isinstance(action, NotifyAction):
            if action.from_ and _bare(action.from_) not in _own_addresses(rt, user, recipient):
                action = dataclasses.replace(action, from_=None)
            note = build_notification(msg, envelope, action, user, hostname=rt.config.hostname)
            if note is not None:
                out.append(SendMessage("", tuple(note[0]), note[1], reason="notify"))
        elif isinstance(action, ReportAction):
            data = build_report(
                msg,
                envelope,
                action.feedback_type,
                action.message,
                f"<postmaster@{rt.config.hostname}>",
                action.address,
                headers_only=action.headers_only,
                hostname=rt.config.hostname,
                user=user,
            )
            out.append(SendMessage("", (action.address,), data, reason="report"))
    if need_keep and not any(isinstance(a, Keep) for a in out):
        out.insert(0, Keep(result.keep_flags))
    return out


def _bare(address: str) -> str:
    return email.utils.parseaddr(address)[1].lower() or address.lower()


def _own_addresses(rt: Runtime, user: str, recipient: Recipient) -> set[str]:
    mine = {user.lower(), (recipient.original or user).lower()}
    mine.update(a.lower() for a in rt.directory.sender_addresses(user))
    return mine


def _vacation(
    rt: Runtime,
    msg: SieveMessage,
    envelope: Envelope,
    action: VacationAction,
    user: str,
    recipient: Recipient,
    state: SieveState,
) -> SendMessage | None:
    mine = sorted(_own_addresses(rt, user, recipient))
    if action.from_ and _bare(action.from_) not in {a.lower() for a in mine}:
        # a reply may only claim one of the user's own addresses (RFC 5230 §4.4 lets us restrict :from)
        log.info("sieve.vacation_from_ignored", rcpt=user, requested=action.from_)
        action = dataclasses.replace(action, from_=None)
    why = skip_reason(msg, envelope, action, mine)
    if why:
        log.info("sieve.vacation_skipped", rcpt=user, reason=why)
        return None
    cfg = rt.config.sieve
    period = min(max(action.seconds, cfg.vacation_min_period), cfg.vacation_max_period)
    sender = envelope.sender.strip("<>")
    if not state.vacation_due(user, sender, action.handle, period):
        log.info("sieve.vacation_skipped", rcpt=user, reason="already replied in this period")
        return None
    to, data = build_reply(msg, envelope, action, recipient.original or user, hostname=rt.config.hostname)
    log.info("sieve.vacation_reply", rcpt=user, to=to)
    return SendMessage("", (to,), data, reason="vacation")


def check_scripts(loaded: LoadedConfig) -> list[Problem]:
    """Problems with the group's scripts (`[sieve] global_script`, `after_script`), each located as
    `FILE:LINE`, for `kinmail check` and reloads. A missing global script is not a problem (there is none)."""
    problems: list[Problem] = []
    cfg = loaded.config.sieve
    for key, setting in (("global_script", cfg.global_script), ("after_script", cfg.after_script)):
        if not setting:
            continue
        path = loaded.resolve(setting)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if key == "after_script":
                problems.append(Problem(f"kinmail.toml:sieve.{key}", f"{path} does not exist"))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(setting), f"cannot read the script: {exc}"))
            continue
        try:
            compile_script(text, name=Path(setting).stem)
        except SieveError as exc:
            for line, column, message in sorted(exc.errors, key=lambda e: (e[0], e[1])):
                problems.append(Problem(f"{setting}:{line}", f"column {column}: {message}"))
    return problems
