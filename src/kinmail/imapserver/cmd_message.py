"""IMAP commands on messages of the selected mailbox: FETCH (with CHANGEDSINCE and VANISHED, RFC 7162),
STORE (UNCHANGEDSINCE), COPY and MOVE (RFC 6851) with COPYUID (UIDPLUS, RFC 4315), EXPUNGE and UID EXPUNGE,
CHECK, and IDLE (RFC 2177).

FETCH reads message files through the store in a worker thread and hands MIME rendering (ENVELOPE,
BODYSTRUCTURE, BODY[section], BINARY) to `render`, which wraps the message package. Keeps nothing on disk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from kinmail.imapserver import render
from kinmail.imapserver.cmd_mailbox import mailbox_name, open_mailbox
from kinmail.imapserver.selected import SelectedMailbox, compress_uids, flags_bytes, flags_text
from kinmail.imapserver.session import AUTH, SELECTED, Session, blocking, command, quick
from kinmail.proto.imap_args import (
    FetchAtt,
    as_atom,
    as_number,
    format_internaldate,
    parse_fetch_atts,
    parse_flags,
    parse_seqset,
)
from kinmail.proto.imap_parser import Command, ParseError
from kinmail.proto.imap_response import Code, ImapError, Status, literal
from kinmail.store.errors import MessageGone, NoSuchFolder, QuotaExceeded, StoreError

if TYPE_CHECKING:
    from kinmail.store.mailbox import FlagMode
    from kinmail.store.types import MessageInfo

READ_BATCH = 64
INLINE_MESSAGES = 16  # FETCH of up to this many messages of up to INLINE_BYTES runs in the event loop
INLINE_BYTES = 256 * 1024
IDLE_REFRESH = 2.0  # seconds between Maildir checks during IDLE


def selected(s: Session) -> SelectedMailbox:
    assert s.selected is not None
    return s.selected


# --- FETCH -----------------------------------------------------------------------------------------------


@command("FETCH", SELECTED)
@command("UID FETCH", SELECTED)
async def cmd_fetch(s: Session, cmd: Command) -> None:
    sel = selected(s)
    uid_cmd = cmd.name.startswith("UID")
    if len(cmd.args) not in (2, 3):
        raise ParseError("FETCH takes a sequence set and items")
    seqset = parse_seqset(cmd.args[0])
    atts = parse_fetch_atts(cmd.args[1])
    changedsince: int | None = None
    vanished = False
    if len(cmd.args) == 3:
        mods = cmd.args[2]
        if not isinstance(mods, list):
            raise ParseError("Invalid FETCH modifiers")
        i = 0
        while i < len(mods):
            name = as_atom(mods[i]).upper()
            if name == "CHANGEDSINCE" and i + 1 < len(mods):
                changedsince = as_number(mods[i + 1])
                i += 2
            elif name == "VANISHED" and uid_cmd:
                vanished = True
                i += 1
            else:
                raise ParseError("Unknown FETCH modifier")
        if vanished and (changedsince is None or "QRESYNC" not in s.enabled):
            raise ParseError("VANISHED needs CHANGEDSINCE and QRESYNC")
        if changedsince is not None:
            s.enable_condstore()
    if not uid_cmd and not seqset.saved:
        sel.check_seqset(seqset)
    names = [a.name for a in atts]
    if "MODSEQ" in names:
        s.enable_condstore()
    if uid_cmd and "UID" not in names:
        atts.insert(0, FetchAtt("UID"))
    if sel.condstore and "MODSEQ" not in names:  # RFC 7162 §3.1.4.1: every FETCH once CONDSTORE is on
        atts.append(FetchAtt("MODSEQ"))
    await s.sync(expunges=False)
    uids = sel.uids_for(seqset, uid=uid_cmd, saved=s.saved_search)
    if vanished and changedsince is not None:
        _changed, gone = await blocking(sel.mailbox.changes_since, changedsince)
        gone_in_set = [u for u in gone if seqset.contains(u, sel.uids[-1] if sel.uids else u)]
        if gone_in_set:
            s.untagged("VANISHED (EARLIER) " + compress_uids(gone_in_set))
    if changedsince is not None:
        uids = [u for u in uids if sel.msgs[u].modseq > changedsince]
    # Non-PEEK body fetches set \Seen (RFC 9051 §6.4.5).
    sets_seen = not sel.readonly and any(
        (a.section is not None and not a.peek) or a.name in ("RFC822", "RFC822.TEXT") for a in atts
    )
    seen_now: set[int] = set()
    if sets_seen:
        unseen = [u for u in uids if "\\Seen" not in sel.msgs[u].flags]
        if unseen:
            changed, _failed = await quick(
                sel.quick_for(unseen), sel.mailbox.store_flags, unseen, ["\\Seen"], "add"
            )
            sel.note_flags(changed)
            if changed:
                sel.note_own_commit()
            seen_now = {i.uid for i in changed}
    if seen_now and "FLAGS" not in names:
        atts.append(FetchAtt("FLAGS"))
    utf8 = "UTF8=ACCEPT" in s.enabled
    content_atts = [a for a in atts if a.name not in CHEAP or a.section is not None]
    failed = False
    for start in range(0, len(uids), READ_BATCH):
        batch, seqs = sel.msgs.many(uids[start : start + READ_BATCH])
        if content_atts and (len(batch) > INLINE_MESSAGES or sum(i.size for i in batch) > INLINE_BYTES):
            data, missing = await blocking(_render_batch, sel, batch, seqs, atts, utf8)
        else:  # a few small files: reading them here costs less than the hop to a worker thread and back
            data, missing = _render_batch(sel, batch, seqs, atts, utf8)
        failed = failed or missing
        await s.stream.send_big(data)
    await s.sync(expunges=uid_cmd)
    if failed:
        raise ImapError(Status.NO, "Some messages were expunged meanwhile", "EXPUNGEISSUED")
    s.ok(cmd)


CHEAP = frozenset(
    {"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ", "EMAILID", "THREADID", "SAVEDATE"}
)


def _render_batch(
    sel: SelectedMailbox, batch: list[MessageInfo], seqs: list[int], atts: list[FetchAtt], utf8: bool
) -> tuple[bytes, bool]:
    """The FETCH responses of a batch of messages (in a worker thread when files are read); and whether
    some message had gone meanwhile."""
    out: list[bytes] = []
    missing = False
    folder = render.folder_key(sel.user, sel.mailbox.name, sel.mailbox.uidvalidity)  # once a batch
    content = [a for a in atts if a.name not in CHEAP or a.section is not None]
    # ENVELOPE, BODY, BODYSTRUCTURE and the whole header are cached per message; any other item needs the file
    always_file = not all(
        (a.section is None and a.name in render.CACHEABLE) or render.is_whole_header(a) for a in content
    )
    plan = _plan(sel, folder, atts, utf8)
    for info, seq in zip(batch, seqs, strict=True):
        try:
            msg = render.Rendered(sel.mailbox.read(info.uid)) if always_file else None
            try:
                items = [item(info, msg) for item in plan]
            except render.NeedsFile:  # a rendering not cached (yet, or any more)
                msg = render.Rendered(sel.mailbox.read(info.uid))
                items = [item(info, msg) for item in plan]
        except (MessageGone, FileNotFoundError, NoSuchFolder):
            missing = True
            continue
        out += (b"* %d FETCH (" % seq, b" ".join(items), b")\r\n")  # joined once, below
    return b"".join(out), missing


Item = Callable[["MessageInfo", "render.Rendered | None"], bytes]


def _plan(sel: SelectedMailbox, folder: int, atts: list[FetchAtt], utf8: bool) -> list[Item]:
    """One function per FETCH item, chosen once per command rather than for every message: each renders its
    item of one message (`msg` is None while only cached renderings are asked for; `render.NeedsFile`)."""
    recent = sel.recent
    plan: list[Item] = []
    for att in atts:
        name = att.name
        if name == "UID":
            plan.append(lambda info, msg: b"UID %d" % info.uid)
        elif name == "FLAGS":
            plan.append(lambda info, msg: b"FLAGS " + flags_bytes(info.flags, info.uid in recent))
        elif name == "INTERNALDATE":
            plan.append(
                lambda info, msg: b'INTERNALDATE "%s"' % format_internaldate(info.internaldate).encode()
            )
        elif name == "RFC822.SIZE":
            plan.append(lambda info, msg: b"RFC822.SIZE %d" % info.size)
        elif name == "MODSEQ":
            plan.append(lambda info, msg: b"MODSEQ (%d)" % info.modseq)
        elif att.section is None and name in ("EMAILID", "THREADID", "SAVEDATE"):
            plan.append(_fixed(name.encode() + b" NIL"))
        elif name == "RFC822":
            plan.append(lambda info, msg: b"RFC822 " + literal(_whole(msg).raw))
        elif att.section is None:
            plan.append(_simple(folder, name, utf8))
        else:
            plan.append(_section(folder, att))
    return plan


def _fixed(data: bytes) -> Item:
    return lambda info, msg: data


def _simple(folder: int, name: str, utf8: bool) -> Item:
    head = name.encode() + b" "
    return lambda info, msg: head + render.simple((folder, info.uid), msg, name, utf8)


def _section(folder: int, att: FetchAtt) -> Item:
    head = att.response_name().encode() + b" "
    return lambda info, msg: head + render.section(msg, att, (folder, info.uid))


def _whole(msg: render.Rendered | None) -> render.Rendered:
    if msg is None:
        raise render.NeedsFile("RFC822")
    return msg


# --- STORE -----------------------------------------------------------------------------------------------


@command("STORE", SELECTED)
@command("UID STORE", SELECTED)
async def cmd_store(s: Session, cmd: Command) -> None:
    sel = selected(s)
    uid_cmd = cmd.name.startswith("UID")
    args = list(cmd.args)
    if len(args) < 3:
        raise ParseError("STORE takes a sequence set, an item and flags")
    seqset = parse_seqset(args[0])
    unchanged_since: int | None = None
    if isinstance(args[1], list):
        mods = args.pop(1)
        assert isinstance(mods, list)
        if len(mods) != 2 or as_atom(mods[0]).upper() != "UNCHANGEDSINCE":
            raise ParseError("Unknown STORE modifier")
        unchanged_since = as_number(mods[1])
        s.enable_condstore()
    if len(args) < 3:
        raise ParseError("STORE takes flags")
    item = as_atom(args[1], "store item").upper()
    mode_map: dict[str, FlagMode] = {"FLAGS": "set", "+FLAGS": "add", "-FLAGS": "remove"}
    silent = item.endswith(".SILENT")
    base = item.removesuffix(".SILENT")
    if base not in mode_map:
        raise ParseError("Invalid STORE item")
    flags = parse_flags(args[2] if len(args) == 3 else args[2:])
    if not uid_cmd and not seqset.saved:
        sel.check_seqset(seqset)
    if sel.readonly:
        raise ImapError(Status.NO, "Mailbox is read-only", Code.READ_ONLY)
    await s.sync(expunges=False)
    uids = [u for u in sel.uids_for(seqset, uid=uid_cmd, saved=s.saved_search) if u not in sel.expunged]
    try:
        changed, failed = await quick(
            sel.quick_for(uids),
            sel.mailbox.store_flags,
            uids,
            flags,
            mode_map[base],
            unchanged_since,
        )
    except StoreError as exc:
        raise ImapError(Status.NO, str(exc)) from exc
    sel.note_flags(changed)
    if changed:
        sel.note_own_commit()
    changed_uids = {i.uid for i in changed}
    report = list(changed) if silent else [sel.msgs[u] for u in uids if u in sel.msgs and u not in failed]
    for info in report:
        if silent and not (unchanged_since is not None and info.uid in changed_uids):
            continue
        parts = []
        if not silent:
            parts.append("FLAGS " + flags_text(info.flags, info.uid in sel.recent))
        if uid_cmd:
            parts.insert(0, f"UID {info.uid}")
        if sel.condstore:
            parts.append(f"MODSEQ ({info.modseq})")
        s.untagged(f"{sel.seq_of(info.uid)} FETCH ({' '.join(parts)})")
    await s.sync(expunges=uid_cmd)
    if failed:
        if uid_cmd:
            modified = compress_uids(failed)
        else:
            modified = compress_uids(sel.seq_of(u) for u in failed if sel.seq_of(u))
        s.ok(cmd, "Conditional store failed", f"MODIFIED {modified}")
        return
    s.ok(cmd)


# --- COPY / MOVE -----------------------------------------------------------------------------------------


async def _transfer(s: Session, cmd: Command, move: bool) -> None:
    sel = selected(s)
    uid_cmd = cmd.name.startswith("UID")
    if len(cmd.args) != 2:
        raise ParseError("Takes a sequence set and a mailbox")
    seqset = parse_seqset(cmd.args[0])
    if not uid_cmd and not seqset.saved:
        sel.check_seqset(seqset)
    name = mailbox_name(s, cmd.args[1])
    if move and sel.readonly:
        raise ImapError(Status.NO, "Mailbox is read-only", Code.READ_ONLY)
    try:
        dest = await open_mailbox(s, name, scan=False)
    except ImapError as exc:
        raise ImapError(Status.NO, "Destination mailbox does not exist", Code.TRYCREATE) from exc
    uids = [u for u in sel.uids_for(seqset, uid=uid_cmd, saved=s.saved_search) if u not in sel.expunged]
    if not uids:
        await s.sync(expunges=uid_cmd or move)
        s.ok(cmd, "No messages")
        return
    # A move into the same mailbox gives the messages new UIDs (RFC 6851 §3.3); the store does that too.
    method = sel.mailbox.move if move else sel.mailbox.copy
    try:
        pairs = await blocking(method, uids, dest)
    except QuotaExceeded as exc:
        raise ImapError(Status.NO, "Quota exceeded", Code.OVERQUOTA) from exc
    except StoreError as exc:
        raise ImapError(Status.NO, str(exc)) from exc
    code = None
    if pairs:
        code = f"COPYUID {dest.uidvalidity} {compress_uids_ordered([p[0] for p in pairs])} {compress_uids_ordered([p[1] for p in pairs])}"
    if move:
        if code:
            s.untagged(f"OK [{code}] Moved")
            code = None
        sel.note_expunged(p[0] for p in pairs)
    await s.sync(expunges=True)
    s.ok(cmd, "Move completed" if move else "Copy completed", code)


def compress_uids_ordered(uids: list[int]) -> str:
    """Like compress_uids, but keeps the order (COPYUID pairs source and destination UIDs by position)."""
    parts: list[str] = []
    i = 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        parts.append(f"{uids[i]}:{uids[j]}" if j > i else str(uids[i]))
        i = j + 1
    return ",".join(parts)


@command("COPY", SELECTED)
@command("UID COPY", SELECTED)
async def cmd_copy(s: Session, cmd: Command) -> None:
    await _transfer(s, cmd, move=False)


@command("MOVE", SELECTED)
@command("UID MOVE", SELECTED)
async def cmd_move(s: Session, cmd: Command) -> None:
    await _transfer(s, cmd, move=True)


# --- EXPUNGE / CHECK / IDLE ------------------------------------------------------------------------------


async def _expunge(s: Session, cmd: Command, uid_set: list[int] | None) -> None:
    sel = selected(s)
    if sel.readonly:
        raise ImapError(Status.NO, "Mailbox is read-only", Code.READ_ONLY)
    await s.sync(expunges=True)
    deleted = sel.msgs.with_flag("\\Deleted")
    if uid_set is not None:
        wanted = set(uid_set)
        deleted = [u for u in deleted if u in wanted]
    if deleted:
        gone = await quick(sel.quick_for(deleted), sel.mailbox.expunge, deleted)
        sel.note_expunged(gone)
        if gone:
            sel.note_own_commit()
    await s.sync(expunges=True)
    highest = sel.mailbox.highestmodseq
    s.ok(cmd, "Expunge completed", f"HIGHESTMODSEQ {highest}" if sel.condstore else None)


@command("EXPUNGE", SELECTED)
async def cmd_expunge(s: Session, cmd: Command) -> None:
    if cmd.args:
        raise ParseError("EXPUNGE takes no arguments")
    await _expunge(s, cmd, None)


@command("UID EXPUNGE", SELECTED)
async def cmd_uid_expunge(s: Session, cmd: Command) -> None:
    if len(cmd.args) != 1:
        raise ParseError("UID EXPUNGE takes a UID set")
    sel = selected(s)
    await _expunge(s, cmd, sel.uids_for(parse_seqset(cmd.args[0]), uid=True, saved=s.saved_search))


@command("CHECK", SELECTED)
async def cmd_check(s: Session, cmd: Command) -> None:
    await selected(s).refresh()
    await s.sync()
    s.ok(cmd)


@command("IDLE", AUTH)
async def cmd_idle(s: Session, cmd: Command) -> None:
    s.send(b"+ idling\r\n")
    line_task = asyncio.ensure_future(s.stream.read_line())
    deadline = time.monotonic() + s.rt.config.imap.idle_timeout
    try:
        while True:
            if time.monotonic() > deadline:  # RFC 2177: clients re-IDLE at least every 29 minutes
                s.untagged("BYE Idle for too long")
                s.state = type(s.state).LOGOUT
                return
            if s.selected is not None:
                await s.sync()
            await s.stream.flush()
            # a plain future, not a task around Event.wait: a thousand idle sessions hold one each
            changed = s.idle_waiter = asyncio.get_running_loop().create_future()
            done, _pending = await asyncio.wait(
                {line_task, changed}, timeout=IDLE_REFRESH, return_when=asyncio.FIRST_COMPLETED
            )
            s.idle_waiter = None
            changed.cancel()
            if line_task in done:
                break
            if not done and s.selected is not None:
                await s.selected.refresh()
    finally:
        if not line_task.done():
            line_task.cancel()
    line = line_task.result()
    if line is None:
        s.state = type(s.state).LOGOUT
        return
    if line.strip().upper() != b"DONE":
        raise ImapError(Status.BAD, "Expected DONE")
    s.ok(cmd, "Idle completed")
