"""IMAP mailbox commands: SELECT/EXAMINE (with CONDSTORE and QRESYNC, RFC 7162), CLOSE, UNSELECT (RFC 3691),
CREATE (with USE, RFC 6154), DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST (LIST-EXTENDED RFC 5258,
LIST-STATUS RFC 5819, SPECIAL-USE), LSUB, STATUS (STATUS=SIZE RFC 8438), GETQUOTA/GETQUOTAROOT (RFC 9208).

Folder names arrive in modified UTF-7 (or UTF-8 after ENABLE UTF8=ACCEPT) and are decoded and checked by the
store, which refuses anything that could leave the user's Maildir; such names get NO with the store's reason.
Keeps nothing on disk (the store does).
"""

from __future__ import annotations

import bisect
import re
from typing import TYPE_CHECKING

from kinmail.imapserver.selected import SelectedMailbox, compress_uids, flags_text, recent_mark
from kinmail.imapserver.session import (
    AUTH,
    QUICK_MESSAGES,
    SELECTED,
    Session,
    State,
    blocking,
    command,
    quick,
)
from kinmail.proto.imap_args import as_astring, as_atom, as_number, parse_seqset
from kinmail.proto.imap_parser import Atom, Command, ParseError, Token
from kinmail.proto.imap_response import Code, ImapError, Status, astring, quoted, string
from kinmail.store.errors import FolderExists, InvalidFolderName, NoSuchFolder, StoreError
from kinmail.store.names import INBOX, decode_mutf7, encode_mutf7, normalize

if TYPE_CHECKING:
    from collections.abc import Callable

    from kinmail.store.mailbox import Mailbox
    from kinmail.store.store import UserMailboxes
    from kinmail.store.types import FolderInfo, MessageInfo

SPECIAL_USES = {"\\ALL", "\\ARCHIVE", "\\DRAFTS", "\\FLAGGED", "\\JUNK", "\\SENT", "\\TRASH", "\\IMPORTANT"}
STATUS_ITEMS = {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT", "HIGHESTMODSEQ"}
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def user_mailboxes(s: Session) -> UserMailboxes:
    assert s.mailboxes is not None
    return s.mailboxes


def mailbox_name(s: Session, token: Token) -> str:
    """The folder name a client sent, as the store's UTF-8 name; bad modified UTF-7 gets NO."""
    raw = as_astring(token, "mailbox name")
    if "UTF8=ACCEPT" in s.enabled:
        return normalize(raw)
    try:
        return normalize(decode_mutf7(raw))
    except InvalidFolderName as exc:
        raise ImapError(Status.NO, f"Invalid folder name: {exc}", Code.CANNOT) from exc


def wire_name(s: Session, name: str) -> bytes:
    if "UTF8=ACCEPT" in s.enabled:
        return string(name) if name.isascii() else quoted(name)
    return astring(encode_mutf7(name))


async def open_mailbox(s: Session, name: str, *, scan: bool = True) -> Mailbox:
    """Open a folder; `scan=False` for commands that only add messages to it (APPEND, COPY's target)."""
    mailbox, _at = await _open(s, name, with_messages=False, scan=scan)
    return mailbox


async def _open(
    s: Session, name: str, *, with_messages: bool, scan: bool = True
) -> tuple[Mailbox, tuple[int, list[MessageInfo]]]:
    """Open a folder, and load its message list with its MODSEQ too (SELECT) in the same trip to a worker
    thread."""
    mailboxes = user_mailboxes(s)

    def work() -> tuple[Mailbox, tuple[int, list[MessageInfo]]]:
        mailbox = mailboxes.open(name, scan=scan)
        return mailbox, mailbox.messages_at() if with_messages else (0, [])

    count = mailboxes.loaded_count(name)
    try:
        return await quick(mailboxes if count is not None and count <= QUICK_MESSAGES else None, work)
    except NoSuchFolder as exc:
        raise ImapError(Status.NO, "Mailbox does not exist", Code.NONEXISTENT) from exc
    except InvalidFolderName as exc:
        raise ImapError(Status.NO, f"Invalid folder name: {exc}", Code.CANNOT) from exc


def keywords_of(sel: SelectedMailbox) -> list[str]:
    """The keywords set on some message of the selected folder (FLAGS, RFC 9051 §7.3.5). Messages share a few
    distinct flag sets: those are gathered first (in C), then their keywords."""
    return sorted(f for f in frozenset().union(*sel.msgs.flag_sets()) if not f.startswith("\\"))


# --- SELECT / EXAMINE ------------------------------------------------------------------------------------


async def _select(s: Session, cmd: Command, readonly: bool) -> None:
    if not cmd.args:
        raise ParseError("Missing mailbox name")
    qresync_args: list[Token] | None = None
    for param in cmd.args[1:]:
        if not isinstance(param, list):
            raise ParseError("Invalid SELECT parameters")
        i = 0
        while i < len(param):
            name = as_atom(param[i], "select parameter").upper()
            if name == "CONDSTORE":
                s.enabled.add("CONDSTORE")
                i += 1
            elif name == "QRESYNC" and i + 1 < len(param) and isinstance(param[i + 1], list):
                if "QRESYNC" not in s.enabled:
                    raise ImapError(Status.BAD, "QRESYNC is not enabled")
                qresync_args = param[i + 1]  # type: ignore[assignment]
                i += 2
            else:
                raise ParseError("Unknown SELECT parameter")
    name = mailbox_name(s, cmd.args[0])
    had_selected = s.selected is not None
    s.selected = None
    if s.state is State.SELECTED:
        s.state = State.AUTHENTICATED
        if "QRESYNC" in s.enabled or "IMAP4REV2" in s.enabled:
            s.untagged("OK [CLOSED] Previous mailbox closed")
    mailbox, (modseq, infos) = await _open(s, name, with_messages=True)
    sel = SelectedMailbox(s, mailbox, readonly=readonly)
    sel.load(infos, modseq)
    kw = keywords_of(sel)
    flags = " ".join([*SYSTEM_FLAGS, *kw])
    s.untagged(f"FLAGS ({flags})")
    s.untagged(f"{sel.exists} EXISTS")
    rev2 = "IMAP4REV2" in s.enabled
    if not rev2:
        s.untagged(f"{len(sel.recent)} RECENT")
        first_unseen = next((i + 1 for i, m in enumerate(sel.msgs.values()) if "\\Seen" not in m.flags), 0)
        if first_unseen:
            s.untagged(f"OK [UNSEEN {first_unseen}] First unseen")
    s.untagged(f"OK [UIDVALIDITY {mailbox.uidvalidity}] UIDs valid")
    s.untagged(f"OK [UIDNEXT {mailbox.uidnext}] Predicted next UID")
    if readonly:
        s.untagged("OK [PERMANENTFLAGS ()] Read-only mailbox")
    else:
        s.untagged(f"OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted")
    s.untagged(f"OK [HIGHESTMODSEQ {max(1, sel.highestmodseq)}] Highest")
    if rev2:
        s.untagged(f'LIST () "/" {wire_name(s, mailbox.name).decode()}')
    if qresync_args is not None:
        await _qresync(s, sel, qresync_args)
    s.selected = sel
    s.state = State.SELECTED
    del had_selected
    s.ok(cmd, f"{'Examine' if readonly else 'Select'} completed", "READ-ONLY" if readonly else "READ-WRITE")


async def _qresync(s: Session, sel: SelectedMailbox, args: list[Token]) -> None:
    """RFC 7162 §3.2.5: report what changed since the client's last MODSEQ."""
    if len(args) < 2:
        raise ParseError("QRESYNC needs UIDVALIDITY and MODSEQ")
    uidvalidity = as_number(args[0])
    modseq = as_number(args[1])
    if uidvalidity != sel.mailbox.uidvalidity or modseq == 0:
        return
    known = parse_seqset(args[2]) if len(args) > 2 and isinstance(args[2], Atom) else None
    changed, vanished = await blocking(sel.mailbox.changes_since, modseq)
    if known is not None and sel.uids:
        largest = max(sel.uids[-1], max(vanished, default=0))
        vanished = [u for u in vanished if known.contains(u, largest)]
    if vanished:
        s.untagged("VANISHED (EARLIER) " + compress_uids(vanished))
    for info in changed:
        seq = sel.seq_of(info.uid)
        if seq:
            s.untagged(
                f"{seq} FETCH (UID {info.uid} FLAGS {flags_text(info.flags, info.uid in sel.recent)} MODSEQ ({info.modseq}))"
            )


@command("SELECT", AUTH)
async def cmd_select(s: Session, cmd: Command) -> None:
    await _select(s, cmd, readonly=False)


@command("EXAMINE", AUTH)
async def cmd_examine(s: Session, cmd: Command) -> None:
    await _select(s, cmd, readonly=True)


@command("CLOSE", SELECTED)
async def cmd_close(s: Session, cmd: Command) -> None:
    sel = s.selected
    assert sel is not None
    if not sel.readonly:
        deleted = sel.msgs.with_flag("\\Deleted")
        if deleted:
            await quick(sel.quick_for(deleted), sel.mailbox.expunge, deleted)
    s.selected = None
    s.state = State.AUTHENTICATED
    s.ok(cmd)


@command("UNSELECT", SELECTED)
async def cmd_unselect(s: Session, cmd: Command) -> None:
    s.selected = None
    s.state = State.AUTHENTICATED
    s.ok(cmd)


# --- folder management -----------------------------------------------------------------------------------


async def _change_folders(s: Session, change: Callable[..., object], *args: object) -> None:
    """Run a store call that changes the folder list off the loop; a refusal becomes the matching NO."""
    try:
        await blocking(change, *args)
    except StoreError as exc:
        raise _store_error(exc) from exc


def _store_error(exc: StoreError) -> ImapError:
    if isinstance(exc, FolderExists):
        return ImapError(Status.NO, "Mailbox already exists", Code.ALREADYEXISTS)
    if isinstance(exc, NoSuchFolder):
        return ImapError(Status.NO, "Mailbox does not exist", Code.NONEXISTENT)
    if isinstance(exc, InvalidFolderName):
        return ImapError(Status.NO, f"Invalid folder name: {exc}", Code.CANNOT)
    return ImapError(Status.NO, str(exc) or "Cannot do that")


@command("CREATE", AUTH)
async def cmd_create(s: Session, cmd: Command) -> None:
    if not cmd.args or len(cmd.args) > 2:
        raise ParseError("CREATE takes a mailbox name")
    name = mailbox_name(s, cmd.args[0]).rstrip("/")
    special: str | None = None
    if len(cmd.args) == 2:
        opts = cmd.args[1]
        if not isinstance(opts, list) or len(opts) != 2 or as_atom(opts[0]).upper() != "USE":
            raise ParseError("Invalid CREATE parameters")
        uses = opts[1] if isinstance(opts[1], list) else [opts[1]]
        for use in uses:
            text = as_atom(use, "special use")
            if text.upper() not in SPECIAL_USES:
                raise ImapError(Status.NO, "Unknown special use", "USEATTR")
            special = text[0] + text[1:].title()
    if name.upper() == INBOX:
        raise ImapError(Status.NO, "INBOX always exists", Code.ALREADYEXISTS)
    await _change_folders(s, user_mailboxes(s).create_folder, name, special)
    s.ok(cmd)


@command("DELETE", AUTH)
async def cmd_delete(s: Session, cmd: Command) -> None:
    if len(cmd.args) != 1:
        raise ParseError("DELETE takes a mailbox name")
    name = mailbox_name(s, cmd.args[0])
    if name == INBOX:
        raise ImapError(Status.NO, "INBOX cannot be deleted", Code.CANNOT)
    if s.selected is not None and s.selected.name == name:
        s.selected = None
        s.state = State.AUTHENTICATED
        s.untagged("OK [CLOSED] Mailbox deleted")
    # the store keeps the subscription (RFC 9051 §6.3.9)
    await _change_folders(s, user_mailboxes(s).delete_folder, name)
    s.ok(cmd)


@command("RENAME", AUTH)
async def cmd_rename(s: Session, cmd: Command) -> None:
    if len(cmd.args) != 2:
        raise ParseError("RENAME takes two mailbox names")
    old, new = mailbox_name(s, cmd.args[0]), mailbox_name(s, cmd.args[1]).rstrip("/")
    if new == INBOX:
        raise ImapError(Status.NO, "Cannot rename to INBOX", Code.ALREADYEXISTS)
    await _change_folders(s, user_mailboxes(s).rename_folder, old, new)
    if s.selected is not None and s.selected.name == old:
        s.selected.name = new
    s.ok(cmd)


async def _subscribe(s: Session, cmd: Command, on: bool) -> None:
    if len(cmd.args) != 1:
        raise ParseError("Takes a mailbox name")
    name = mailbox_name(s, cmd.args[0])
    if on and not await blocking(user_mailboxes(s).exists, name):
        # RFC 9051 §6.3.7 lets the server check; as Dovecot does, a typo gets an error rather than a ghost
        raise ImapError(Status.NO, "Mailbox does not exist", Code.NONEXISTENT)
    await _change_folders(s, user_mailboxes(s).set_subscribed, name, on)
    s.ok(cmd)


@command("SUBSCRIBE", AUTH)
async def cmd_subscribe(s: Session, cmd: Command) -> None:
    await _subscribe(s, cmd, True)


@command("UNSUBSCRIBE", AUTH)
async def cmd_unsubscribe(s: Session, cmd: Command) -> None:
    await _subscribe(s, cmd, False)


# --- LIST / LSUB -----------------------------------------------------------------------------------------


def pattern_regex(pattern: str) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    text = "".join(out)
    if pattern.upper().startswith("INBOX"):
        return re.compile("(?i:INBOX)" + "".join(out[5:]) + r"\Z", re.S)
    return re.compile(text + r"\Z", re.S)


def _decode_pattern(s: Session, token: Token) -> str:
    raw = as_astring(token, "pattern")
    if "UTF8=ACCEPT" in s.enabled:
        return raw
    try:
        return decode_mutf7(raw)
    except InvalidFolderName:
        return raw


async def _list(s: Session, cmd: Command, lsub: bool) -> None:
    args = list(cmd.args)
    select_opts: set[str] = set()
    return_opts: set[str] = set()
    status_items: list[str] = []
    if not lsub and args and isinstance(args[0], list):
        first = args.pop(0)
        assert isinstance(first, list)
        select_opts = {as_atom(t).upper() for t in first}
        if not select_opts <= {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}:
            raise ParseError("Unknown LIST selection option")
        if "RECURSIVEMATCH" in select_opts and not select_opts - {"RECURSIVEMATCH", "REMOTE"}:
            raise ParseError("RECURSIVEMATCH needs another option")
    if len(args) < 2:
        raise ParseError("LIST takes a reference and a pattern")
    ref = _decode_pattern(s, args[0])
    pat_token = args[1]
    patterns = (
        [_decode_pattern(s, p) for p in pat_token]
        if isinstance(pat_token, list)
        else [_decode_pattern(s, pat_token)]
    )
    if not lsub and len(args) >= 4 and isinstance(args[2], Atom) and args[2].upper == "RETURN":
        ret = args[3]
        if not isinstance(ret, list):
            raise ParseError("RETURN needs a list")
        i = 0
        while i < len(ret):
            opt = as_atom(ret[i]).upper()
            if opt == "STATUS" and i + 1 < len(ret) and isinstance(ret[i + 1], list):
                status_items = [as_atom(t).upper() for t in ret[i + 1]]  # type: ignore[union-attr]
                i += 2
                continue
            if opt not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "MYRIGHTS"):
                raise ParseError("Unknown LIST return option")
            return_opts.add(opt)
            i += 1
    elif len(args) != 2:
        raise ParseError("Invalid LIST arguments")
    if len(patterns) == 1 and patterns[0] == "" and not lsub:
        s.untagged('LIST (\\Noselect) "/" ""')
        s.ok(cmd)
        return
    if lsub and patterns == [""]:
        s.ok(cmd)
        return
    folders: list[FolderInfo] = await blocking(user_mailboxes(s).folders)
    by_name = {f.name: f for f in folders}
    subscribed = {f.name for f in folders if f.subscribed}
    subscribed |= await blocking(user_mailboxes(s).subscriptions)
    all_names = set(by_name)
    parents = _parents_of(all_names)
    regexes = [pattern_regex(_join(ref, p)) for p in patterns]

    def matches(name: str) -> bool:
        return any(r.match(name) for r in regexes)

    want_sub = lsub or "SUBSCRIBED" in select_opts
    childinfo: set[str] = set()
    if want_sub:
        candidates = set(subscribed)
        if lsub and any("%" in p for p in patterns):
            # RFC 3501 §6.3.9: "%" matching a parent of a subscribed child shows the parent \\Noselect
            candidates |= _parents_of(subscribed)
        if "RECURSIVEMATCH" in select_opts:  # RFC 5258 §3.5: CHILDINFO for unmatched subscribed descendants
            for name in subscribed:
                if matches(name):
                    continue
                for parent in _parents_of({name}):
                    if matches(parent):
                        childinfo.add(parent)
            candidates |= childinfo
    else:
        candidates = all_names | parents
    if "SPECIAL-USE" in select_opts:
        candidates = {n for n in candidates if n in by_name and by_name[n].special_use}
    results: list[tuple[str, list[str], bool]] = []
    for name in sorted(candidates, key=lambda n: (n != INBOX, n)):
        if not matches(name):
            continue
        attrs: list[str] = []
        if lsub:
            if name not in subscribed:
                attrs.append("\\Noselect")
            results.append((name, attrs, False))
            continue
        info = by_name.get(name)
        if info is None:
            attrs.append("\\NonExistent" if want_sub else "\\Noselect")
        if (want_sub or "SUBSCRIBED" in return_opts) and name in subscribed:
            attrs.append("\\Subscribed")
        if name in parents:
            attrs.append("\\HasChildren")
        elif info is not None:
            attrs.append("\\HasNoChildren")
        if info is not None and info.special_use:
            attrs.append(info.special_use)
        results.append((name, attrs, name in childinfo))
    verb = "LSUB" if lsub else "LIST"
    for name, attrs, child_subscribed in results:
        line = f'{verb} ({" ".join(attrs)}) "/" '.encode() + wire_name(s, name)
        if child_subscribed:
            line += b' ("CHILDINFO" ("SUBSCRIBED"))'
        s.untagged(line)
        if status_items and name in by_name:
            try:
                s.untagged(await _status_line(s, name, status_items))
            except ImapError:
                pass
    s.ok(cmd)


def _parents_of(names: set[str]) -> set[str]:
    out = set()
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            out.add("/".join(parts[:i]))
    return out


def _join(ref: str, pattern: str) -> str:
    """RFC 3501 §6.3.8: the pattern is taken in the context of the reference; as Dovecot does, the two are
    simply joined (`LIST "Work/" %`, `LIST "Work" *` both work)."""
    joined = ref + pattern
    return normalize(joined) if joined.upper().startswith("INBOX") else joined


@command("LIST", AUTH)
async def cmd_list(s: Session, cmd: Command) -> None:
    await _list(s, cmd, lsub=False)


@command("LSUB", AUTH)
async def cmd_lsub(s: Session, cmd: Command) -> None:
    await _list(s, cmd, lsub=True)


# --- STATUS ----------------------------------------------------------------------------------------------


async def _status_line(s: Session, name: str, items: list[str]) -> bytes:
    for item in items:
        if item not in STATUS_ITEMS:
            raise ParseError(f"Unknown STATUS item {item}")
    mailbox = await open_mailbox(s, name)
    if s.selected is not None and s.selected.name == mailbox.name:
        await s.sync(expunges=False)
    status = await quick(mailbox, mailbox.status)  # counters from the index, no message list
    values = {
        "MESSAGES": status.messages,
        "UIDNEXT": status.uidnext,
        "UIDVALIDITY": status.uidvalidity,
        "UNSEEN": status.unseen,
        "DELETED": status.deleted,
        "SIZE": status.size,
        "HIGHESTMODSEQ": max(1, status.highestmodseq),
    }
    if "RECENT" in items:
        mark = recent_mark(s.user or "", mailbox)
        uids = await blocking(mailbox.uids)
        values["RECENT"] = len(uids) - bisect.bisect_right(uids, mark)
    body = " ".join(f"{i} {values[i]}" for i in items)
    return b"STATUS " + wire_name(s, mailbox.name) + f" ({body})".encode()


@command("STATUS", AUTH)
async def cmd_status(s: Session, cmd: Command) -> None:
    if len(cmd.args) != 2 or not isinstance(cmd.args[1], list):
        raise ParseError("STATUS takes a mailbox and a list of items")
    items = [as_atom(t).upper() for t in cmd.args[1]]
    s.untagged(await _status_line(s, mailbox_name(s, cmd.args[0]), items))
    s.ok(cmd)


# --- QUOTA (RFC 9208) ------------------------------------------------------------------------------------


async def _quota_lines(s: Session) -> list[bytes]:
    user = s.rt.directory.users.get(s.user or "")
    limit = user.quota if user is not None else None
    if not limit:
        return []
    used, _count = await blocking(user_mailboxes(s).quota_usage)
    return [f'QUOTA "" (STORAGE {used // 1024} {limit // 1024})'.encode()]


@command("GETQUOTAROOT", AUTH)
async def cmd_getquotaroot(s: Session, cmd: Command) -> None:
    if len(cmd.args) != 1:
        raise ParseError("GETQUOTAROOT takes a mailbox name")
    name = mailbox_name(s, cmd.args[0])
    await open_mailbox(s, name)
    lines = await _quota_lines(s)
    s.untagged(b"QUOTAROOT " + wire_name(s, name) + (b' ""' if lines else b""))
    for line in lines:
        s.untagged(line)
    s.ok(cmd)


@command("GETQUOTA", AUTH)
async def cmd_getquota(s: Session, cmd: Command) -> None:
    if len(cmd.args) != 1:
        raise ParseError("GETQUOTA takes a quota root")
    lines = await _quota_lines(s)
    if as_astring(cmd.args[0]) != "" or not lines:
        raise ImapError(Status.NO, "No such quota root", Code.NONEXISTENT)
    for line in lines:
        s.untagged(line)
    s.ok(cmd)


@command("SETQUOTA", AUTH)
async def cmd_setquota(s: Session, cmd: Command) -> None:
    raise ImapError(Status.NO, "Quotas are set by the administrator", Code.NOPERM)
